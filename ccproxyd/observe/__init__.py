"""What the daemon says about each request: `access` (the Record, its one log line, the metrics,
the sinks such as the ledger), `otel` (OpenTelemetry, off unless configured), `logformat`
(`--log-format json`), `redact` (no provider secret leaves: every key read is scrubbed from
every text).

May import translate, money, config and errors.  `redact` imports nothing of ccproxyd, so every
package may use it (errors and config do)."""

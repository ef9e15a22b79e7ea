"""The routing table and the daemon's settings: `table` (routes.yaml -> jsonschema -> frozen
dataclasses), `located` (YAML with positions), `yamlerrors` (a YAML slip in plain words),
`routing` (a model name -> a Decision; the window check), `reload` (live reload), `settings`,
`credentials` (where keys come from).

May import errors and observe.redact; and, as the table loads, money.rates and money.catalog
(its models' prices) and upstream.resilience (each provider's retry and breaker policy).
Every other package imports it."""

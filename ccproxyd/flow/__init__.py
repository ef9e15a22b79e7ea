"""One request's life between the handler and the upstream: `flights` (the shared path: key,
lookup, lead, follow, orphan), `fleet` (the same across daemons, in team mode), `outcome` (who
pays, and the one access line), `proxy` (targets in order, retries, relay, collect, the cut-call
charge), `cache` (the key and the Flight), `threads` (message threads: a continue rebuilt),
`stopping` (the drain at stop).

May import state, upstream, observe, translate, money, config and errors; server imports it."""

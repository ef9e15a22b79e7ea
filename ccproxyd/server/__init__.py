"""The Sanic application: `app` (create_app, the listeners that open and close what `context.Context`
holds), `handlers` (HTTP in and out only: parse, call the flow, write), `spend`, `status` (`/health`,
`/metrics`), `ui` and `dashboard`, `connections` (the open-connection cap), `notify` (systemd),
`team` (attaching team mode's Redis-backed parts).

May import flow, state, upstream, observe, translate, money, config and errors; only cli imports it."""

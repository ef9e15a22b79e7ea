"""Money: what a request cost upstream, what the Claude model it asked for would have cost, and
the difference.

- `rates`: the price dataclasses (a rate set, long-context tiers, time-of-day windows, dated rows)
  and their parsing from plain dicts; imports nothing of ccproxyd, so `config` builds the
  routing table's `prices:` and `claude_prices:` with it.
- `catalog`: the effective-dated price catalog shipped in the package (`data/prices.yaml`), one
  section per provider, plus an optional override file (`ccproxyd prices --refresh`).
- `charge`: pure arithmetic: a usage, its prices and the request's time -> dollars and the rate
  that applied; the Claude reference price by exact model id; savings (negative when the route is
  dearer, None when either side has no price: never a guess).
- `refresh`: OpenRouter's public models list -> the override file.

- `compare`, `listing`: the Claude side of each route, for `check`, `route` and `prices`.
- `clock`: the wall clock money and days read (`CCPROXYD_NOW` in tests).

Protocol code: no sockets, no event loop; the only I/O is reading the catalog files.
May import config, errors and observe.redact.  (config imports `rates` and `catalog` back, which
import nothing of config but its settings.)
"""

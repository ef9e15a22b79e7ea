"""Claude's side of the comparison: the list price of the exact model id a client asked for, and
what `check`, `route` and `prices` say of each route against the Claude models it answers."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..config.table import RouteTable
from ..errors import NotFound
from ..config.routing import ALIAS_ROUTE, resolve
from .rates import Priced, Rates, tier_rates

# Anthropic's web search tool: $10 per 1,000 searches
# (https://platform.claude.com/docs/en/agents-and-tools/tool-use/web-search-tool, "Usage and pricing")
CLAUDE_WEB_SEARCH_PER_1K = 10.0
_GLOB = set("*?")


def claude_price(table: RouteTable, requested: str) -> Priced | None:
    """routes.yaml's `claude_prices` (an exact id, then the globs in order), else the catalog's
    price of that exact id.  A model id nobody prices has none: never a guess from a family word."""
    name = requested.lower()
    exact = table.claude_prices.get(name)
    if exact is not None:
        return exact
    for pattern, priced in table.claude_prices.items():
        if _GLOB & set(pattern) and fnmatchcase(name, pattern):
            return priced
    return table.catalog.claude(name)


@dataclass(frozen=True)
class Comparison:
    route: str               # "routes[0] (*haiku*)" or "alias fast"
    claude_id: str
    claude: Rates | None
    model: str               # the routed model's name in the table
    upstream: Rates | None

    @property
    def dearer(self) -> list[str]:
        """Which per-token rates of the route exceed Claude's: [], ["input"], ["output"] or both."""
        if self.claude is None or self.upstream is None:
            return []
        return [k for k in ("input", "output") if getattr(self.upstream, k) > getattr(self.claude, k)]

    @property
    def verdict(self) -> str:
        """"unknown", "DEARER per … token", "same price" or "cheaper" (per input and output token)."""
        if self.claude is None or self.upstream is None:
            return "unknown"
        if self.dearer:
            return "DEARER per " + " and ".join(self.dearer) + " token"
        same = all(getattr(self.upstream, k) == getattr(self.claude, k) for k in ("input", "output"))
        return "same price per token" if same else "cheaper"


def claude_ids(table: RouteTable) -> list[str]:
    """The Claude ids the catalog and claude_prices know (primary ids, not their aliases)."""
    section = table.catalog.sections.get("anthropic")
    ids = sorted({p.model for p in section.models.values()}) if section is not None else []
    return ids + sorted(k for k in table.claude_prices
                        if k.startswith("claude") and not (_GLOB & set(k)) and k not in ids)


def comparisons(table: RouteTable, at: float) -> list[Comparison]:
    """Each known Claude id against the model the table answers it with (its route's primary)."""
    out = []
    for claude_id in claude_ids(table):
        try:
            decision = resolve(table, claude_id)
        except NotFound:
            continue
        where = (f"alias {decision.route.match}" if decision.route_index == ALIAS_ROUTE
                 else f"routes[{decision.route_index}] ({decision.route.match})")
        model = decision.primary.model
        out.append(Comparison(where, claude_id, rates_at(claude_price(table, claude_id), at), model.name,
                              rates_at(model.prices, at)))
    return out


def rates_at(priced: Priced | None, at: float, prompt: int = 0) -> Rates | None:
    """The rates a prompt of `prompt` tokens would pay at `at` (None: unknown)."""
    if priced is None:
        return None
    row = priced.row_at(at)
    return tier_rates(row, at, prompt) if row is not None else None


def warnings(table: RouteTable, at: float) -> list[str]:
    """What `ccproxyd check` and `route` warn about: a routed model with no price, and a route
    dearer per token than a Claude model it answers, at this hour's rates, with both prices: one
    line per route, naming the newest such Claude id and how many older ones."""
    out = []
    routed = dict.fromkeys(m for r in table.routes for m in (r.model, *r.fallbacks))
    for name in routed:
        if rates_at(table.models[name].prices, at) is None:
            out.append(f"model {name} ({table.models[name].upstream}) has no price: its cost and savings "
                       "show as unknown (add `prices:` or a catalog row)")
    dearer: dict[str, list[Comparison]] = {}
    for c in comparisons(table, at):
        if c.dearer:
            dearer.setdefault(c.route, []).append(c)
    for route, found in dearer.items():
        found.sort(key=lambda c: _first_since(table, c.claude_id), reverse=True)
        c = found[0]
        more = f" (and {len(found) - 1} older Claude id{'s' * (len(found) > 2)})" if len(found) > 1 else ""
        out.append(f"{route}: {c.model} costs more per {' and '.join(c.dearer)} token than {c.claude_id}{more} "
                   f"at this hour's rates ({money_rates(c.upstream)} against {money_rates(c.claude)} per Mtok)")
    return out


def _first_since(table: RouteTable, claude_id: str) -> float:
    """When a Claude id was first priced: newer models first in a warning."""
    priced = claude_price(table, claude_id)
    return priced.rows[0].since if priced is not None and priced.rows else 0.0


def money_rates(rates: Rates | None) -> str:
    if rates is None:
        return "no price"
    text = f"${rates.input:g} in / ${rates.output:g} out"
    if rates.cached_input is not None:
        text += f" / ${rates.cached_input:g} cached"
    return text

"""Plain-text lines for `ccproxyd prices` and `ccproxyd route`: a model's prices with their dates
and sources, and each route against the Claude models it answers.  Pure: returns strings."""

from __future__ import annotations

from ..config.table import RouteTable
from .compare import claude_price, comparisons, money_rates
from .rates import Priced, Rates, Tier


def describe(priced: Priced | None, at: float, indent: str = "  ") -> list[str]:
    """Every row of `priced` (the one in force at `at` marked), each tier and window."""
    if priced is None:
        return [f"{indent}no price (cost and savings show as unknown)"]
    current = priced.row_at(at)
    lines = []
    for row in priced.rows:
        mark = "in force" if row is current else ("from " + row.since_text if row.since > at else "superseded")
        lines.append(f"{indent}since {row.since_text} ({mark}), {priced.origin}: {row.source}")
        lines.extend(_tiers(row.tiers, indent + "  "))
        for window in row.windows:
            lines.append(f"{indent}  inside {window.label}:")
            lines.extend(_tiers(window.tiers, indent + "    "))
        if row.note:
            lines.append(f"{indent}  note: {row.note}")
    if current is None:
        lines.append(f"{indent}no row is in force yet: cost and savings show as unknown")
    return lines


def _tiers(tiers: tuple[Tier, ...], indent: str) -> list[str]:
    out = []
    for i, tier in enumerate(tiers):
        if len(tiers) == 1:
            scope = ""
        elif tier.up_to is not None:
            scope = f"prompts up to {tier.up_to} tokens: "
        else:
            scope = f"prompts over {tiers[i - 1].up_to} tokens: "
        out.append(f"{indent}{scope}{rates_text(tier.rates)}")
    return out


def rates_text(r: Rates) -> str:
    parts = [f"${r.input:g} in", f"${r.output:g} out"]
    if r.cached_input is not None:
        parts.append(f"${r.cached_input:g} cache read")
    if r.cache_write is not None:
        parts.append(f"${r.cache_write:g} cache write")
    if r.cache_write_1h is not None:
        parts.append(f"${r.cache_write_1h:g} 1-hour cache write")
    text = " / ".join(parts) + " per Mtok"
    if r.web_search_per_1k is not None:
        text += f", ${r.web_search_per_1k:g} per 1,000 searches"
    return text


def models_lines(table: RouteTable, names: list[str], at: float) -> list[str]:
    """`prices MODEL…`: each name as a Claude id (its reference price) and as a model of the table."""
    lines = []
    for name in names:
        found = False
        priced = claude_price(table, name)
        if priced is not None:
            found = True
            lines.append(f"{name} (Claude list price):")
            lines.extend(describe(priced, at))
        for model in table.models.values():
            if name.lower() in (model.name.lower(), model.upstream.lower()):
                found = True
                lines.append(f"{model.name} = {model.provider}:{model.upstream}:")
                lines.extend(describe(model.prices, at))
        if not found:
            lines.append(f"{name}: no price known (neither a Claude id of the catalog nor a model of the table)")
    return lines


def table_lines(table: RouteTable, at: float) -> list[str]:
    """`prices` with no model: every model the table routes, then each route against Claude."""
    lines = ["models (USD per 1M tokens):"]
    for model in table.models.values():
        lines.append(f"  {model.name} = {model.provider}:{model.upstream}")
        lines.extend(describe(model.prices, at, "    "))
    lines.append("routes against the Claude models they answer (per Mtok, at this hour's rates):")
    rows = comparisons(table, at)
    if not rows:
        lines.append("  (no Claude id of the catalog matches a route)")
    for c in rows:
        lines.append(f"  {c.route} {c.claude_id}: {c.model} {money_rates(c.upstream)} against "
                     f"{money_rates(c.claude)}: {c.verdict}")
    return lines


def source_lines(table: RouteTable) -> list[str]:
    return [f"catalog: {', '.join(table.catalog.origins) or '(none)'}"]


"""Pure: price tiers -> the cost of one request, and what Claude would have charged."""

from __future__ import annotations

from .config import PriceTier, RouteTable

PER_TOKEN = 1_000_000


def tier_for(tiers: tuple[PriceTier, ...], prompt_tokens: int) -> PriceTier | None:
    """The first tier whose `up_to` covers the whole prompt (cached input included)."""
    for tier in tiers:
        if tier.up_to is None or prompt_tokens <= tier.up_to:
            return tier
    return tiers[-1] if tiers else None


PER_SEARCHES = 1_000
CLAUDE_WEB_SEARCH_PER_1K = 10.0      # Anthropic's price of web search, for the savings figure


def searches(usage: dict) -> int:
    """The web searches an Anthropic-shaped usage counts (`server_tool_use.web_search_requests`)."""
    server = usage.get("server_tool_use")
    count = server.get("web_search_requests") if isinstance(server, dict) else 0
    return count if isinstance(count, int) and count > 0 else 0


def cost(tiers: tuple[PriceTier, ...], usage: dict, search_default: float = 0.0) -> float | None:
    """USD for an Anthropic-shaped usage; None when the model has no prices.  Searches are priced
    at the tier's `web_search_per_1k`, else at `search_default` per 1,000."""
    fresh = usage.get("input_tokens", 0) + usage.get("cache_creation_input_tokens", 0)
    cached = usage.get("cache_read_input_tokens", 0)
    tier = tier_for(tiers, fresh + cached)
    if tier is None:
        return None
    cached_rate = tier.cached_input if tier.cached_input is not None else tier.input
    per_search = (tier.web_search_per_1k if tier.web_search_per_1k is not None else search_default) / PER_SEARCHES
    return ((fresh * tier.input + cached * cached_rate + usage.get("output_tokens", 0) * tier.output) / PER_TOKEN
            + searches(usage) * per_search)


def claude_reference(table: RouteTable, requested_model: str) -> tuple[PriceTier, ...]:
    """List price of the Claude family named in the client's model (opus, sonnet, haiku…)."""
    name = requested_model.lower()
    for family, tiers in table.claude_prices.items():
        if family in name:
            return tiers
    return ()

"""Money, pure: prices by exact id and date, cache reads and writes at their rates, long-context
tiers, time-of-day windows, savings that can be negative or unknown.  Every expected figure is
worked out here by hand from the rates written in the test."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from ccproxyd.config import table as config
from ccproxyd.money import catalog, charge, compare
from ccproxyd.money import clock as money_clock
from ccproxyd.money.rates import parse_prices

ROOT = Path(__file__).resolve().parent.parent


def at(text: str) -> float:
    """A UTC time as epoch seconds: '2026-12-07 03:30' (the clock is always injected)."""
    day, clock = text.split()
    y, m, d = map(int, day.split("-"))
    hh, mm = map(int, clock.split(":"))
    return float(calendar.timegm((y, m, d, hh, mm, 0)))


CATALOG = catalog.parse("""
anthropic:
  hosts: [api.anthropic.com]
  models:
    claude-opus-5-5:
      ids: ["claude-opus-5-5[1m]"]
      rows:
        - {since: 2026-09-22, source: https://example.test/opus, input: 4, output: 20, cached_input: 0.20,
           cache_write: 5, cache_write_1h: 8}
    claude-sonnet-5-5:
      rows:
        - {since: 2026-09-22, source: https://example.test/s1, input: 2, output: 10, cached_input: 0.20}
        - {since: 2026-10-07, source: https://example.test/s2, input: 2, output: 10, cached_input: 0.10}
    claude-haiku-5-5:
      rows:
        - since: 2026-09-22
          source: https://example.test/haiku
          tiers: [{up_to: 100000, input: 0.10, output: 0.50}, {input: 0.50, output: 2.50}]
deepseek:
  hosts: [api.deepseek.com]
  models:
    deepseek-flash:
      rows:
        - since: "2026-08-16T16:00:00Z"
          source: https://example.test/deepseek
          input: 0.15
          output: 0.60
          cached_input: 0.003
          windows:
            - {days: [mon, tue, wed, thu, fri], hours: ["01:00-04:00", "06:00-10:00"],
               input: 0.30, output: 1.20, cached_input: 0.006}
openai:
  hosts: [api.openai.com]
  models:
    gpt-6-sol:
      rows:
        - since: 2026-09-22
          source: https://example.test/openai
          tiers:
            - {up_to: 272000, input: 2, output: 16, cached_input: 0.2, cache_write: 2.5}
            - {input: 4, output: 24, cached_input: 0.4, cache_write: 5}
""", "test-catalog")

OPUS = CATALOG.claude("claude-opus-5-5")
FLASH = CATALOG.sections["deepseek"].models["deepseek-flash"]
SOL = CATALOG.sections["openai"].models["gpt-6-sol"]
DEC = at("2026-12-07 12:00")           # a Monday, off-peak for DeepSeek


def usd(priced, usage, when=DEC, **kw):
    result = charge.charge(priced, usage, when, **kw)
    return None if result is None else result.usd


@pytest.mark.parametrize("usage, ttl, expected", [
    ({"input_tokens": 1000, "output_tokens": 100}, "5m", (1000 * 4 + 100 * 20) / 1e6),
    ({"input_tokens": 10, "cache_read_input_tokens": 9000, "output_tokens": 0}, "5m", (10 * 4 + 9000 * 0.20) / 1e6),
    ({"input_tokens": 0, "cache_creation_input_tokens": 2000, "output_tokens": 0}, "5m", 2000 * 5 / 1e6),
    ({"input_tokens": 0, "cache_creation_input_tokens": 2000, "output_tokens": 0}, "1h", 2000 * 8 / 1e6),
    ({"input_tokens": 1, "output_tokens": 1, "server_tool_use": {"web_search_requests": 3}}, "5m",
     (4 + 20) / 1e6 + 3 * 10 / 1000),
])
def test_claude_rates_for_reads_writes_and_searches(usage, ttl, expected):
    assert usd(OPUS, usage, write_ttl=ttl, search_default=compare.CLAUDE_WEB_SEARCH_PER_1K) == pytest.approx(expected)


def test_a_price_takes_effect_on_its_date_and_nothing_before_the_first_row():
    sonnet = CATALOG.claude("claude-sonnet-5-5")
    usage = {"input_tokens": 0, "cache_read_input_tokens": 1_000_000, "output_tokens": 0}
    assert usd(sonnet, usage, at("2026-10-06 23:59")) == pytest.approx(0.20)
    assert usd(sonnet, usage, at("2026-10-07 00:00")) == pytest.approx(0.10)
    assert charge.charge(sonnet, usage, at("2026-09-21 12:00")) is None       # unknown, never $0


@pytest.mark.parametrize("when, expected_rates", [
    ("2026-12-07 01:00", (0.30, 1.20, 0.006)),    # Monday, peak starts
    ("2026-12-07 03:59", (0.30, 1.20, 0.006)),
    ("2026-12-07 04:00", (0.15, 0.60, 0.003)),    # between the two peak spans
    ("2026-12-07 06:30", (0.30, 1.20, 0.006)),
    ("2026-12-07 10:00", (0.15, 0.60, 0.003)),    # the end of a span is not in it
    ("2026-12-05 02:00", (0.15, 0.60, 0.003)),    # Saturday: off-peak all day
])
def test_time_of_day_prices(when, expected_rates):
    fresh, output, cached = expected_rates
    usage = {"input_tokens": 100_000, "cache_read_input_tokens": 900_000, "output_tokens": 50_000}
    assert usd(FLASH, usage, at(when)) == pytest.approx((100_000 * fresh + 900_000 * cached + 50_000 * output) / 1e6)


def test_the_same_usage_at_peak_costs_twice_off_peak_and_says_which_rate():
    usage = {"input_tokens": 20_000, "output_tokens": 1_000}
    peak, off = charge.charge(FLASH, usage, at("2026-12-08 07:00")), charge.charge(FLASH, usage, at("2026-12-08 12:00"))
    assert peak.usd == pytest.approx((20_000 * 0.30 + 1_000 * 1.20) / 1e6)
    assert off.usd == pytest.approx((20_000 * 0.15 + 1_000 * 0.60) / 1e6)
    assert "01:00-04:00,06:00-10:00" in peak.rate and "outside" in off.rate


@pytest.mark.parametrize("usage, expected", [
    # the whole prompt (fresh + written + read) picks the tier, which prices every token
    ({"input_tokens": 272_000, "output_tokens": 1000}, (272_000 * 2 + 1000 * 16) / 1e6),
    ({"input_tokens": 272_001, "output_tokens": 1000}, (272_001 * 4 + 1000 * 24) / 1e6),
    ({"input_tokens": 1, "cache_read_input_tokens": 200_000, "cache_creation_input_tokens": 72_000, "output_tokens": 0},
     (1 * 4 + 200_000 * 0.4 + 72_000 * 5) / 1e6),
])
def test_long_context_tiers(usage, expected):
    assert usd(SOL, usage) == pytest.approx(expected)


def test_haiku_bills_every_token_at_the_long_rate_past_its_threshold():
    haiku = CATALOG.claude("claude-haiku-5-5")
    assert usd(haiku, {"input_tokens": 100_000, "output_tokens": 1000}) == pytest.approx((100_000 * 0.10 + 1000 * 0.50) / 1e6)
    assert usd(haiku, {"input_tokens": 100_001, "output_tokens": 1000}) == pytest.approx((100_001 * 0.50 + 1000 * 2.50) / 1e6)


def test_savings_negative_when_dearer_and_unknown_when_a_side_has_no_price():
    haiku = CATALOG.claude("claude-haiku-5-5")
    usage = {"input_tokens": 10_000, "output_tokens": 1_000}
    route = charge.charge(SOL, usage, DEC)
    claude = charge.charge(haiku, usage, DEC)
    assert charge.savings(claude, route) == pytest.approx((10_000 * 0.10 + 1_000 * 0.50 - 10_000 * 2 - 1_000 * 16) / 1e6)
    assert charge.savings(claude, route) < 0
    assert charge.savings(None, route) is None and charge.savings(claude, None) is None


TABLE_TEXT = """
providers:
  openai: {base_url: "https://api.openai.com/v1"}
  mirror: {base_url: "http://127.0.0.1:9/v1", prices_from: deepseek}
  local: {base_url: "http://127.0.0.1:8/v1"}
models:
  gpt-6-sol: {provider: openai, context_window: 1000000, max_output_tokens: 128000}
  flash: {provider: mirror, upstream: deepseek-flash, context_window: 1000000, max_output_tokens: 8192}
  tiny: {provider: local, context_window: 8192, max_output_tokens: 1024}
  own: {provider: local, context_window: 8192, max_output_tokens: 1024,
        prices: {input: 1, output: 2, cache_write: 1.25, source: "my contract"}}
routes:
  - {match: "*haiku*", model: gpt-6-sol}
  - {match: "*sonnet*", model: tiny}
  - {match: "*", model: flash}
claude_prices:
  "claude-sonnet-*": [{input: 3, output: 15}]
"""


def test_models_are_priced_from_the_catalog_by_host_or_prices_from_and_the_table_overrides():
    table = config.load(TABLE_TEXT, env={}, catalog=CATALOG)
    assert table.models["gpt-6-sol"].prices is SOL                  # api.openai.com's section
    assert table.models["flash"].prices is FLASH                    # prices_from: deepseek
    assert table.models["tiny"].prices is None                      # loopback, no prices: unknown
    own = table.models["own"].prices
    assert own.origin == "routes.yaml" and own.rows[0].source == "my contract"
    assert usd(own, {"input_tokens": 1000, "cache_creation_input_tokens": 1000, "output_tokens": 1000}) == \
        pytest.approx((1000 * 1 + 1000 * 1.25 + 1000 * 2) / 1e6)


@pytest.mark.parametrize("requested, expected", [
    ("claude-opus-5-5", "claude-opus-5-5"),
    ("CLAUDE-OPUS-5-5[1M]", "claude-opus-5-5"),          # an id is matched whole, case-insensitive
    ("claude-sonnet-5-5", "claude-sonnet-*"),              # the table's glob overrides the catalog
    ("claude-opus-5-5-experimental", None),                # no family-word guess
    ("opus", None),
    ("gpt-4", None),
])
def test_claude_price_by_exact_id(requested, expected):
    table = config.load(TABLE_TEXT, env={}, catalog=CATALOG)
    priced = compare.claude_price(table, requested)
    assert (priced.model if priced is not None else None) == expected


def test_check_warns_of_dearer_routes_and_unpriced_models_with_both_prices():
    table = config.load(TABLE_TEXT, env={}, catalog=CATALOG)
    warnings = compare.warnings(table, DEC)
    assert any("model tiny" in w and "no price" in w for w in warnings)
    dearer = [w for w in warnings if "costs more" in w]
    # gpt-6-sol ($2 / $16) answers *haiku*: dearer than claude-haiku-5-5 ($0.10 / $0.50)
    assert dearer == ["routes[0] (*haiku*): gpt-6-sol costs more per input and output token than claude-haiku-5-5 "
                      "at this hour's rates ($2 in / $16 out / $0.2 cached against $0.1 in / $0.5 out per Mtok)"]


@pytest.mark.parametrize("text, fragment", [
    ("a:\n  hosts: [x]\n  models:\n    m:\n      rows: [{input: 1, output: 2, since: 2026-01-01}]", "needs `source`"),
    ("a:\n  hosts: [x]\n  models:\n    m:\n      rows: [{input: 1, output: 2, source: s}]", "needs `since`"),
    ("a:\n  hosts: [x]\n  models:\n    m:\n      rows: [{since: 2026-02-01, source: s, input: 1, output: 2},"
     " {since: 2026-01-01, source: s, input: 1, output: 2}]", "ascending order"),
    ("a:\n  hosts: [x]\n  models:\n    m:\n      ids: [n]\n      rows: [{since: 2026-01-01, source: s, input: 1, output: 2}]\n"
     "    n:\n      rows: [{since: 2026-01-01, source: s, input: 1, output: 2}]", "listed twice"),
    ("a:\n  hosts: [x]\n  models:\n    m:\n      rows: [{since: 2026-01-01, source: s, input: -1, output: 2}]", "at least 0"),
    ("a:\n  hosts: [x]\n  models:\n    m:\n      rows: [{since: 2026-01-01, source: s, input: 1, output: 2,"
     " windows: [{hours: ['10:00-09:00'], input: 2, output: 4}]}]", "UTC spans"),
    ("a: [", "not YAML"),
])
def test_a_broken_catalog_says_where(text, fragment):
    with pytest.raises(catalog.CatalogError) as caught:
        catalog.parse(text, "x.yaml")
    assert fragment in str(caught.value)


def test_an_override_adds_rows_on_top_and_keeps_the_packaged_history():
    override = catalog.parse("""
anthropic:
  hosts: []
  models:
    claude-sonnet-5-5:
      rows: [{since: 2026-11-01, source: override, input: 1, output: 5}]
""", "override.yaml")
    merged = CATALOG.merged(override).claude("claude-sonnet-5-5")
    assert [r.source for r in merged.rows] == ["https://example.test/s1", "https://example.test/s2", "override"]


def test_routes_yaml_prices_problems_are_located():
    with pytest.raises(config.ConfigError) as caught:
        config.load(TABLE_TEXT.replace("cache_write: 1.25", "cache_write: -1"), "t.yaml", env={}, catalog=CATALOG)
    assert "t.yaml:11:52: models.own.prices.cache_write: -1 is less than the minimum of 0" in str(caught.value)
    with pytest.raises(config.ConfigError) as caught:
        config.load(TABLE_TEXT.replace("input: 1, output: 2, cache_write", "output: 2, cache_write"), "t.yaml",
                    env={}, catalog=CATALOG)
    assert "t.yaml:11:17: models.own.prices: needs input (USD per 1M tokens)" in str(caught.value)
    with pytest.raises(config.ConfigError) as caught:
        config.load(TABLE_TEXT.replace("cache_write: 1.25", "cache_writes: 1.25"), "t.yaml", env={}, catalog=CATALOG)
    assert "models.own.prices: unknown key 'cache_writes'" in str(caught.value)
    _, problems = parse_prices([{"up_to": 10, "input": 1, "output": 1}, {"up_to": 5, "input": 1, "output": 1}],
                               model="m", origin="t", source="t")
    assert problems and "ascending" in problems[0][1]


@pytest.mark.parametrize("body, ttl", [
    ({"system": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}, "1h"),
    ({"system": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]}, "5m"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x",
                                                  "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]}, "1h"),
    ({"system": "plain", "messages": [{"role": "user", "content": "x"}]}, "5m"),
])
def test_the_claude_cache_write_lifetime_a_request_asks_for(body, ttl):
    assert charge.write_ttl(body) == ttl


# The packaged catalog's prices for the ids Claude Code 2.1.332 sends, from Anthropic's pages:
# Opus 5.5 $4 / $20, 5m write $5, 1h write $8, read $0.20
# (https://platform.claude.com/docs/en/about-claude/models/whats-new-opus-5, "Claude Opus 5.5");
# Haiku 4.5 $1 / $5, read $0.10, writes 1.25x and 2x input.
@pytest.mark.parametrize("model_id, rates", [
    ("claude-opus-5-5", (4.0, 20.0, 0.20, 5.0, 8.0)),
    ("claude-haiku-4-5-20251001", (1.0, 5.0, 0.10, 1.25, 2.0)),
])
def test_packaged_prices_of_the_ids_claude_code_sends(model_id, rates):
    priced = catalog.packaged().claude(model_id)
    r = compare.rates_at(priced, DEC)
    assert (r.input, r.output, r.cached_input, r.cache_write, r.cache_write_1h) == rates


@pytest.mark.parametrize("usage, reasoning", [
    (None, 0),
    ({"prompt_tokens": 10, "completion_tokens": 50, "total_tokens": 60}, 0),
    ({"prompt_tokens": 10, "completion_tokens": 50, "completion_tokens_details": {"reasoning_tokens": 32}}, 32),
    ({"prompt_tokens": 10, "completion_tokens": 50, "completion_tokens_details": {"reasoning_tokens": 0},
      "total_tokens": 90}, 0),                                             # reported: the report wins
    ({"prompt_tokens": 10, "completion_tokens": 50, "total_tokens": 90}, 30),   # xAI: beyond completion_tokens
    ({"prompt_tokens": 10, "completion_tokens": 50, "completion_tokens_details": None}, 0),
])
def test_reasoning_tokens_of_an_openai_usage(usage, reasoning):
    from ccproxyd.translate.stream import reasoning_tokens

    assert reasoning_tokens(usage) == reasoning


def test_responses_usage_keeps_its_reasoning_count():
    from ccproxyd.translate.responses import _chat_usage
    from ccproxyd.translate.stream import reasoning_tokens

    usage = {"input_tokens": 100, "output_tokens": 80, "input_tokens_details": {"cached_tokens": 20},
             "output_tokens_details": {"reasoning_tokens": 64}}
    assert reasoning_tokens(_chat_usage(usage)) == 64


@pytest.mark.parametrize("usage, expected", [
    # (fresh, written, read): every provider's names for the cache's reads and writes
    ({"prompt_tokens": 1000, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 600}}, (400, 0, 600)),
    ({"prompt_tokens": 1000, "completion_tokens": 5, "prompt_cache_hit_tokens": 600}, (400, 0, 600)),      # DeepSeek
    ({"prompt_tokens": 1000, "completion_tokens": 5, "cached_tokens": 600}, (400, 0, 600)),                # Moonshot
    ({"prompt_tokens": 1000, "completion_tokens": 5,
      "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300}}, (100, 300, 600)),     # OpenRouter
    ({"prompt_tokens": 1000, "completion_tokens": 5,
      "prompt_tokens_details": {"cached_tokens": 0, "cache_creation_input_tokens": 700}}, (300, 700, 0)),  # Alibaba
])
def test_cache_reads_and_writes_by_each_providers_names(usage, expected):
    from ccproxyd.translate.stream import map_usage

    mapped = map_usage(usage)
    assert (mapped["input_tokens"], mapped["cache_creation_input_tokens"], mapped["cache_read_input_tokens"]) == expected


def test_an_override_reaches_every_id_of_the_model_it_prices():
    """claude-opus-5-5 and claude-opus-5-5[1m] are one model: an override of the first prices both."""
    override = catalog.parse("""
anthropic:
  hosts: []
  models:
    claude-opus-5-5:
      rows: [{since: 2026-11-01, source: override, input: 3, output: 15}]
""", "override.yaml")
    merged = CATALOG.merged(override)
    for model_id in ("claude-opus-5-5", "claude-opus-5-5[1m]"):
        assert compare.rates_at(merged.claude(model_id), DEC).input == 3.0, model_id
    assert compare.rates_at(merged.claude("claude-opus-5-5[1m]"), at("2026-10-01 00:00")).input == 4.0   # history kept


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_a_rate_that_is_not_a_finite_number_of_dollars_is_refused(value):
    _, problems = parse_prices({"input": value, "output": 1}, model="m", origin="t", source="t")
    assert problems and "at least 0" in problems[0][1]


@pytest.mark.parametrize("at, expected", [
    (0.0, "1970-01-01"), (86399.999, "1970-01-01"), (86400.0, "1970-01-02"), (-0.5, "1969-12-31"),
    (1796687999.9, "2026-12-07"), (1796688000.0, "2026-12-08"), (951782400.0, "2000-02-29")])
def test_the_utc_day_of_a_moment(at, expected):
    assert money_clock.day(at) == expected
    assert money_clock.day(at) == expected        # a second reading of the same day

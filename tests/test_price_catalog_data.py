"""Checks on the DATA of ccproxyd/data/prices.yaml (not on the price engine that reads it).

The structural checks walk every section, model and row; the spot checks pin a few prices
verified by hand against the provider's page named in each test's docstring.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml

CATALOG = Path(__file__).resolve().parent.parent / "ccproxyd" / "data" / "prices.yaml"

RATE_KEYS = {"input", "output", "cached_input", "cache_write", "cache_write_1h", "web_search_per_1k"}
ROW_KEYS = RATE_KEYS | {"since", "source", "note", "tiers", "windows"}
TIER_KEYS = RATE_KEYS | {"up_to"}
WINDOW_KEYS = RATE_KEYS | {"days", "hours", "tiers"}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def load() -> dict:
    return yaml.safe_load(CATALOG.read_text(encoding="utf-8"))


def rows():
    """(section, model, index, row) for every row of the catalog."""
    for section, body in load().items():
        for model, entry in body["models"].items():
            for index, row in enumerate(entry["rows"]):
                yield section, model, index, row


def row_ids():
    return [f"{s}/{m}#{i}" for s, m, i, _ in rows()]


def since_of(row: dict) -> dt.datetime:
    """A row's `since` as an aware UTC datetime: a bare date is midnight UTC."""
    since = row["since"]
    if isinstance(since, dt.datetime):
        return since if since.tzinfo else since.replace(tzinfo=dt.timezone.utc)
    if isinstance(since, dt.date):
        return dt.datetime(since.year, since.month, since.day, tzinfo=dt.timezone.utc)
    assert isinstance(since, str) and TIME.match(since), f"since {since!r} is neither a date nor a UTC time"
    return dt.datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def rate_sets(row: dict):
    """Every dict of rates a row can bill with: itself, each tier, each window (and its tiers)."""
    plain = {k: v for k, v in row.items() if k in RATE_KEYS}
    if "tiers" in row:
        yield from ({**plain, **tier} for tier in row["tiers"])
    else:
        yield plain
    for window in row.get("windows", ()):
        if "tiers" in window:
            yield from window["tiers"]
        else:
            yield {k: v for k, v in window.items() if k in RATE_KEYS}


def current(section: str, model: str, on: dt.datetime) -> dict:
    """The row of a model in force at `on` (rows ascend, each holds until the next one)."""
    found = None
    for row in load()[section]["models"][model]["rows"]:
        if since_of(row) <= on:
            found = row
    assert found is not None, f"{section}/{model} has no price on {on}"
    return found


def test_sections_have_hosts_and_models():
    catalog = load()
    assert catalog, "empty catalog"
    for section, body in catalog.items():
        assert set(body) == {"hosts", "models"}, section
        assert body["hosts"] and all(isinstance(h, str) and "/" not in h and "." in h for h in body["hosts"]), section
        assert body["models"], section
        for model, entry in body["models"].items():
            assert set(entry) <= {"ids", "rows"} and entry.get("rows"), f"{section}/{model}"


@pytest.mark.parametrize("section,model,index,row", list(rows()), ids=row_ids())
def test_row_is_well_formed(section, model, index, row):
    assert set(row) <= ROW_KEYS, f"unknown keys {set(row) - ROW_KEYS}"
    since_of(row)
    assert isinstance(row.get("source"), str) and row["source"].startswith("https://"), "source must be an https URL"
    assert not ("tiers" in row and ({"input", "output"} & set(row))), "tiers replace the plain rate keys"
    for rates in rate_sets(row):
        assert "input" in rates and "output" in rates, f"rates without input/output: {rates}"
        for key, value in rates.items():
            if key == "up_to":
                continue
            assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{key}={value!r}"
            assert value >= 0, f"{key}={value} is negative"
        if "cached_input" in rates:
            assert rates["cached_input"] < rates["input"], f"cache read {rates['cached_input']} >= input {rates['input']}"


@pytest.mark.parametrize("section,model,index,row", [r for r in rows() if "tiers" in r[3]],
                         ids=[i for i, r in zip(row_ids(), rows()) if "tiers" in r[3]])
def test_tiers_ascend_and_end_open(section, model, index, row):
    tiers = row["tiers"]
    assert len(tiers) >= 2
    for tier in tiers:
        assert set(tier) <= TIER_KEYS
    bounds = [tier["up_to"] for tier in tiers[:-1]]
    assert all(isinstance(b, int) and b > 0 for b in bounds)
    assert bounds == sorted(set(bounds)), "up_to must strictly ascend"
    assert "up_to" not in tiers[-1], "the last tier covers every longer prompt"


@pytest.mark.parametrize("section,model,index,row", [r for r in rows() if "windows" in r[3]],
                         ids=[i for i, r in zip(row_ids(), rows()) if "windows" in r[3]])
def test_windows_are_well_formed(section, model, index, row):
    for window in row["windows"]:
        assert set(window) <= WINDOW_KEYS
        assert window["days"] and set(window["days"]) <= set(DAYS) and len(set(window["days"])) == len(window["days"])
        spans = []
        for hours in window["hours"]:
            match = HOURS.match(hours)
            assert match, f"hours {hours!r} is not HH:MM-HH:MM"
            h1, m1, h2, m2 = map(int, match.groups())
            start, end = h1 * 60 + m1, h2 * 60 + m2
            assert start < end <= 24 * 60, f"hours {hours!r} is empty or past midnight"
            spans.append((start, end))
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "hours overlap"


def test_rows_ascend_by_since():
    for section, body in load().items():
        for model, entry in body["models"].items():
            times = [since_of(row) for row in entry["rows"]]
            assert times == sorted(times) and len(set(times)) == len(times), f"{section}/{model}: {times}"


def test_no_id_listed_twice_in_a_section():
    for section, body in load().items():
        seen: dict[str, str] = {}
        for model, entry in body["models"].items():
            for name in [model, *entry.get("ids", [])]:
                assert name not in seen, f"{section}: {name} under {model} and {seen.get(name)}"
                seen[name] = model


def test_claude_opus_5_5_is_4_20_020_5_8():
    """Claude Code 2.1.332's main model.  https://platform.claude.com/docs/en/models/opus-5-5/overview:
    Input $4, Output $20, 5m cache write $5, 1h cache write $8, Cache read $0.20 per MTok."""
    row = current("anthropic", "claude-opus-5-5", dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc))
    assert (row["input"], row["output"], row["cached_input"], row["cache_write"], row["cache_write_1h"]) \
        == (4.00, 20.00, 0.20, 5.00, 8.00)


def test_claude_haiku_4_5_snapshot_is_1_5_010():
    """Claude Code 2.1.332's small model id.  https://platform.claude.com/docs/en/about-claude/pricing:
    Claude Haiku 4.5 $1 / $1.25 / $2 / $0.10 / $5 per MTok; model id claude-haiku-4-5-20251001
    (https://platform.claude.com/docs/zh-CN/models/haiku-4-5/overview.md)."""
    entry = load()["anthropic"]["models"]["claude-haiku-4-5"]
    assert "claude-haiku-4-5-20251001" in entry["ids"]
    row = entry["rows"][-1]
    assert (row["input"], row["output"], row["cached_input"], row["cache_write"], row["cache_write_1h"]) \
        == (1.00, 5.00, 0.10, 1.25, 2.00)


def test_sonnet_5_5_cache_read_was_cut_on_2026_10_07():
    """https://platform.claude.com/docs/en/release-notes/overview, October 7, 2026: prompt cache reads
    on Claude Sonnet 5.5 lowered from $0.20 to $0.10 per million tokens."""
    before = current("anthropic", "claude-sonnet-5-5", dt.datetime(2026, 10, 6, 23, 59, tzinfo=dt.timezone.utc))
    after = current("anthropic", "claude-sonnet-5-5", dt.datetime(2026, 10, 7, tzinfo=dt.timezone.utc))
    assert (before["cached_input"], after["cached_input"]) == (0.20, 0.10)
    assert (before["input"], before["output"]) == (after["input"], after["output"]) == (2.00, 10.00)


def test_haiku_5_5_is_five_times_dearer_above_100k():
    """https://platform.claude.com/docs/en/models/haiku-5-5/overview: $0.10 input / $0.50 output for
    prompts up to 100,000 tokens, $0.50 / $2.50 for prompts over 100,000 tokens."""
    (short, long) = current("anthropic", "claude-haiku-5-5", dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc))["tiers"]
    assert short["up_to"] == 100_000
    assert (short["input"], short["output"], short["cached_input"]) == (0.10, 0.50, 0.01)
    assert (long["input"], long["output"], long["cached_input"]) == (0.50, 2.50, 0.05)


def test_deepseek_flash_peak_is_double_off_peak_on_weekdays_only():
    """https://api-docs.deepseek.com/quick_start/pricing?check=20261115: deepseek-flash off-peak
    $0.003 / $0.15 / $0.60 (cache hit / miss / output), peak $0.006 / $0.30 / $1.20; peak hours
    01:00-04:00 and 06:00-10:00 UTC Monday to Friday.  The legacy name deepseek-v4-flash bills as Flash."""
    catalog = load()["deepseek"]["models"]
    assert "deepseek-v4-flash" in catalog["deepseek-flash"]["ids"]
    row = current("deepseek", "deepseek-flash", dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc))
    (window,) = row["windows"]
    assert (row["cached_input"], row["input"], row["output"]) == (0.003, 0.15, 0.60)
    assert (window["cached_input"], window["input"], window["output"]) == (0.006, 0.30, 1.20)
    assert window["days"] == ["mon", "tue", "wed", "thu", "fri"]
    assert window["hours"] == ["01:00-04:00", "06:00-10:00"]
    # before 16:00 UTC on 2026-08-16 there was no time-of-day billing
    flat = current("deepseek", "deepseek-flash", dt.datetime(2026, 8, 16, 15, 59, tzinfo=dt.timezone.utc))
    assert "windows" not in flat and (flat["input"], flat["output"]) == (0.14, 0.28)


FIXTURE = Path(__file__).resolve().parent / "data" / "openrouter_models.json"
PRICING_KEYS = {"prompt", "completion", "request", "image", "image_output", "image_token", "audio",
                "audio_output", "input_audio_cache", "web_search", "internal_reasoning",
                "input_cache_read", "input_cache_write", "input_cache_write_1h", "discount"}


def test_openrouter_fixture_has_the_documented_shape():
    """https://openrouter.ai/docs/models: {"data": [Model]}, each Model with id, pricing,
    context_length, architecture and top_provider; https://openrouter.ai/docs/client-sdks/python/components/pricing:
    every price a decimal string of USD per unit, prompt and completion required."""
    import json
    from decimal import Decimal

    models = json.loads(FIXTURE.read_text())["data"]
    assert 15 <= len(models) <= 25
    assert len({m["id"] for m in models}) == len(models)
    for model in models:
        assert {"id", "name", "created", "context_length", "architecture", "pricing", "top_provider",
                "per_request_limits", "supported_parameters"} <= set(model), model["id"]
        pricing = model["pricing"]
        assert {"prompt", "completion"} <= set(pricing) <= PRICING_KEYS, model["id"]
        assert all(isinstance(v, str) for k, v in pricing.items() if k != "discount"), model["id"]
        for value in pricing.values():
            Decimal(value)          # every price parses as a decimal number
    by_id = {m["id"]: m["pricing"] for m in models}
    # the cases a refresh must handle: free, router "-1", per request, per search, cache read/write
    assert by_id["openrouter/free"]["prompt"] == "0"
    assert by_id["openrouter/auto"]["prompt"] == "-1"
    assert by_id["perplexity/sonar"]["request"] == "0.005"           # $5 per 1,000 requests
    assert by_id["openai/gpt-5-mini"]["web_search"] == "0.01"        # $10 per 1,000 searches
    # $4 / $20 / $0.20 / $5 / $8 per 1M tokens, written per token
    opus = by_id["anthropic/claude-opus-5.5"]
    assert (opus["prompt"], opus["completion"], opus["input_cache_read"], opus["input_cache_write"],
            opus["input_cache_write_1h"]) == ("0.000004", "0.00002", "0.0000002", "0.000005", "0.000008")

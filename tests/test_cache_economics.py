"""Cache economics: Claude Code's attribution line consumed, the prompt_cache_key chosen from the
shared prefix and kept under OpenAI's per-key rate, cc_version and the cost of cache misses in
the ledger, and the real-Claude-Code scenario of `make bench` (tests/bench_cache.py) held to the
issue's acceptance figures."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from ccproxyd.state import ledger as ledger_module
from ccproxyd.observe import access as observe
from ccproxyd.cli import statusline
from ccproxyd.config.table import Model
from ccproxyd.money.charge import miss_cost
from ccproxyd.money.rates import parse_prices
from ccproxyd.translate import attribution, prompt_cache
from ccproxyd.translate.request import to_openai

from .bench_cache import SESSIONS, SPAWN, SUB_PROMPT, PrefixCacheUpstream, first_difference, openai_rule, deepseek_rule, scenario

LINE = "x-anthropic-billing-header: cc_version=2.1.332.45d; cc_entrypoint=sdk-cli;"
MODEL = Model(name="m", provider="p", upstream="up", context_window=100000, max_output_tokens=1000,
              prompt_cache_key=True)


@pytest.mark.parametrize("line, version, entrypoint", [
    (LINE, "2.1.332", "sdk-cli"),
    ("x-anthropic-billing-header: cc_version=2.1.119.af2; cc_entrypoint=cli; cch=97bd6;", "2.1.119", "cli"),
    ("x-anthropic-billing-header: cc_entrypoint=claude-vscode;", None, "claude-vscode"),
    ("x-anthropic-billing-header: cc_version=3.0.0;", "3.0.0", None),          # no hash: kept whole
])
def test_attribution_lines_are_read(line, version, entrypoint):
    found = attribution.parse(line)
    assert (found.cc_version, found.cc_entrypoint) == (version, entrypoint)


@pytest.mark.parametrize("line", [
    "x-anthropic-billing-header: cc_version=2.1.332.45d; and then prose",
    "x-anthropic-billing-header:",
    "X-Anthropic-Billing-Header: cc_version=2.1.332.45d;",
    "You are Claude Code. x-anthropic-billing-header: cc_version=2.1.332.45d;",
])
def test_lines_that_are_not_attribution_are_left_alone(line):
    body = {"system": [{"type": "text", "text": line}], "messages": []}
    assert attribution.parse(line) is None and attribution.strip(body) is body and attribution.read(body) is None


def test_sessions_with_other_first_messages_send_the_same_prefix_and_key():
    """Two sessions (other attribution hashes, other session ids, other first messages) and a
    cch that changes per request: the same system message, tools and prompt_cache_key upstream."""
    def body(hash_, cch, session, first):
        return {"model": "c", "max_tokens": 10,
                "system": [{"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.1.332.{hash_}; "
                                                    f"cc_entrypoint=cli; cch={cch};"},
                           {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
                "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
                "metadata": {"user_id": json.dumps({"device_id": "d", "session_id": session})},
                "messages": [{"role": "user", "content": first}]}
    one, _ = to_openai(body("45d", "97bd6", "s-1", "fix the bug"), MODEL)
    two, _ = to_openai(body("fff", "24c2d", "s-2", "write the docs"), MODEL)
    assert one["messages"][0] == two["messages"][0] == {"role": "system", "content": "You are Claude Code."}
    assert one["tools"] == two["tools"]
    assert one["prompt_cache_key"] == two["prompt_cache_key"]
    assert one["user"] == two["user"]                 # one developer: one `user`, which OpenAI buckets by
    three, _ = to_openai({**body("45d", "97bd6", "s-3", "fix the bug"),
                          "metadata": {"user_id": json.dumps({"device_id": "other", "session_id": "s-3"})}}, MODEL)
    assert three["user"] != one["user"]               # another developer: another


@pytest.mark.parametrize("user_id, identity", [
    ('{"device_id":"5fc8","account_uuid":"","session_id":"e23e"}', '{"account_uuid":"","device_id":"5fc8"}'),
    ("user_ab12_account_77c1_session_9f0e-41aa", "user_ab12_account_77c1"),
    ("someone@example.com", "someone@example.com"),
    ('{"device_id":"5fc8"}', '{"device_id":"5fc8"}'),
])
def test_the_user_sent_upstream_leaves_the_session_out(user_id, identity):
    from ccproxyd.translate.request import identity_of
    assert identity_of(user_id) == identity


def test_a_hot_key_is_spread_over_buckets_by_session():
    """OpenAI: about 15 requests a minute per prefix + key.  Up to 15 in a minute: one key; the
    16th to 30th: two buckets, by a hash of the session; a minute later the key cools again."""
    now = [1000.0]
    heat = prompt_cache.KeyHeat(lambda: now[0])
    keys = [heat.spread({"prompt_cache_key": "ccpx-k"}, f"session-{i}")["prompt_cache_key"] for i in range(15)]
    assert set(keys) == {"ccpx-k"}
    hot = {heat.spread({"prompt_cache_key": "ccpx-k"}, f"session-{i}")["prompt_cache_key"] for i in range(15, 30)}
    assert hot == {"ccpx-k", "ccpx-k-1"}
    same = {heat.spread({"prompt_cache_key": "ccpx-k"}, "session-3")["prompt_cache_key"] for _ in range(3)}
    assert len(same) == 1                             # one session stays on one bucket
    now[0] += 61
    assert heat.spread({"prompt_cache_key": "ccpx-k"}, "session-20")["prompt_cache_key"] == "ccpx-k"
    assert heat.spread({"model": "m"}, "s") == {"model": "m"}          # no key, nothing to spread


def test_miss_cost_is_the_uncached_input_alone():
    """1,000 uncached and 9,000 cached input tokens at $2 input, $0.20 cached, $8 output per 1M:
    the misses cost 1,000 x $2 / 1M = $0.002, whatever the cached tokens and the output cost."""
    priced = parse_prices({"input": 2.0, "output": 8.0, "cached_input": 0.2, "cache_write": 2.5},
                          model="m", origin="t", source="t")[0]
    usage = {"input_tokens": 1000, "cache_read_input_tokens": 9000, "output_tokens": 500}
    assert miss_cost(priced, usage, 0.0) == pytest.approx(0.002)
    assert miss_cost(None, usage, 0.0) is None
    written = dict(usage, cache_creation_input_tokens=400)       # cache writes missed too, at their rate
    assert miss_cost(priced, written, 0.0) == pytest.approx(0.002 + 400 * 2.5 / 1e6)


def test_the_metrics_count_what_misses_cost_by_route():
    metrics = observe.Metrics()
    for cost in (0.25, 0.5):
        metrics.record(observe.Record("r", 0.0, route=2, miss_cost_usd=cost), 0.1)
    assert 'ccproxyd_miss_cost_usd_total{route="2"} 0.75' in metrics.render()


def test_an_older_ledger_gains_the_new_columns(tmp_path):
    """A ledger written before cc_version and miss_cost existed opens, keeps its rows (NULL in the
    new columns) and records new rows with both."""
    old = sqlite3.connect(tmp_path / ledger_module.FILENAME)
    old.executescript("""CREATE TABLE spend (ts REAL NOT NULL, day TEXT NOT NULL, session TEXT, client TEXT,
        route TEXT, provider TEXT, model TEXT, requested TEXT, cache TEXT, cost REAL, savings REAL,
        claude_price REAL, input INTEGER NOT NULL, cached_input INTEGER NOT NULL, output INTEGER NOT NULL,
        reasoning INTEGER NOT NULL);""")
    old.execute("INSERT INTO spend VALUES (?, '2026-12-01', 's', NULL, '*', 'p', 'm', 'c', 'miss', 0.5, 0, 0, "
                "100, 0, 10, 0)", (time.time(),))
    old.commit()
    old.close()
    ledger = ledger_module.Ledger(str(tmp_path), days=0)
    try:
        record = observe.Record("r", 0.0, session_id="s", upstream_model="m", provider="p", route_match="*",
                                client_model="c", input_tokens=300, cached_tokens=700, output_tokens=5,
                                cost_usd=0.25, cc_version="2.1.332", miss_cost_usd=0.125)
        ledger.record(record)
        answer = ledger.spend("session", "2026-01-01")
        versions = ledger.spend("version", "2026-01-01")
    finally:
        ledger.close()
    row = answer["rows"][0]
    assert (row["requests"], row["input_tokens"], row["cached_input_tokens"]) == (2, 400, 700)
    assert row["miss_cost_usd"] == pytest.approx(0.125)                  # the old row's is unknown
    assert row["cached_share"] == pytest.approx(700 / 1100, abs=5e-5)            # four decimals
    assert {r["key"]: r["requests"] for r in versions["rows"]} == {None: 1, "2.1.332": 1}


def test_the_status_line_says_what_misses_cost():
    spend = {"rows": [{"models": [{"model": "gpt-5", "provider": "openai", "requested": "c", "last_at": "x"}],
                       "cost_usd": 0.01, "claude_price_usd": 0, "savings_usd": 0, "input_tokens": 250,
                       "cached_input_tokens": 750, "miss_cost_usd": 0.002}]}
    assert statusline.line({"model": {"id": "c"}}, spend) == \
        "ccproxyd · gpt-5 (openai) · $0.0100 · saved $0.0000 vs Claude · 75% cached (misses $0.0020)"


@pytest.mark.parametrize("shared, openai, deepseek", [(1023, 0, 960), (1024, 1024, 1024), (1151, 1024, 1088),
                                                      (1152, 1152, 1152), (63, 0, 0)])
def test_the_simulated_cache_rules(shared, openai, deepseek):
    """OpenAI: nothing under 1,024 tokens, then steps of 128; DeepSeek: units of 64."""
    assert (openai_rule(shared), deepseek_rule(shared)) == (openai, deepseek)


def _client_system(body: dict) -> str:
    """What Claude Code sent as its system prompt, without its attribution block: the system
    blocks and the system-role messages before the first assistant turn, joined by a blank line
    (docs/PROTOCOL.md §5.1)."""
    texts = [b["text"] for b in body.get("system") or () if not b["text"].startswith("x-anthropic-billing-header")]
    for message in body["messages"]:
        if message["role"] == "assistant":
            break
        if message["role"] == "system":
            texts += [b["text"] for b in message["content"]]
    return "\n\n".join(t for t in texts if t)


def test_real_claude_code_sessions_share_one_prompt_cache(tmp_path):
    """The bench scenario (tests/bench_cache.py) with the newest Claude Code: sessions A (two
    turns), B and C, and a subagent of C's, against the simulated OpenAI prefix cache."""
    from .support import NEWEST

    fake = PrefixCacheUpstream().start()
    try:
        result = scenario(fake, "strip", tmp_path)
    finally:
        fake.stop()
    shares = result["first_request_share_of_a_head"]
    assert shares["B"] >= 0.90 and shares["C"] >= 0.90, shares         # later sessions reuse A's prefix
    assert result["main_agents"]["cached_share_openai"] >= 0.70, result["main_agents"]
    assert not result["attribution_upstream"]
    assert result["ledger_versions"] == {NEWEST: result["requests"]}
    assert set(result["access"]) == {(NEWEST, "sdk-cli")} and len(result["access"]) == result["requests"]
    # a second session: the same upstream body as A's first up to B's own first message
    a, b = (result["first_upstream"][f"{label} main"] for label in ("A", "B"))
    a_text, b_text = json.dumps(a), json.dumps(b)
    own = a_text.index(json.dumps(SESSIONS[0][1])[1:-1])               # where A's first message begins
    assert own <= first_difference(a_text, b_text) < own + len(SESSIONS[0][1])
    assert a["prompt_cache_key"] == b["prompt_cache_key"] and a["tools"] == b["tools"]
    # the subagent's first request: the same upstream prefix as the main agent's, up to the first
    # character where Claude Code's own prompts for the two differ
    main = next(b for b in result["bodies"] if SPAWN in json.dumps(b["messages"]))
    sub = next(b for b in result["bodies"] if SUB_PROMPT in json.dumps(b["messages"]) and SPAWN not in json.dumps(b["messages"]))
    assert result["subagent_first_difference"] == first_difference(_client_system(main), _client_system(sub)) > 0


def test_costs_by_session_shows_the_cached_share_and_what_misses_cost():
    from ccproxyd.cli import report

    row = {"key": "s-1", "requests": 3, "cache_hits": 0, "cost_usd": 0.01, "savings_usd": 0.05,
           "claude_price_usd": 0.06, "input_tokens": 250, "cached_input_tokens": 750, "output_tokens": 9,
           "reasoning_tokens": 0, "cached_share": 0.75, "miss_cost_usd": 0.002, "models": []}
    total = {k: v for k, v in row.items() if k not in ("key", "models")}
    header, line, _ = report.as_table([row], total, "session", "2026-12-01").splitlines()[1:]
    def cell(title: str) -> str:                      # right-aligned under its title
        end = header.index(title) + len(title)
        return line[:end].split()[-1]
    assert (cell("cached %"), cell("misses $")) == ("75.0", "0.0020")


def test_a_captured_claude_code_request_gets_openrouters_breakpoints():
    """Claude Code 2.1.332 marks two system blocks and its last message's last block
    (tests/fixtures/claude_code/v2332_toolsearch_turn3.json); with `cache_control: true` the
    upstream request carries two breakpoints in OpenRouter's documented shape (a `text` content
    part with `cache_control`, https://openrouter.ai/docs/features/prompt-caching): the system
    message, whose one part holds the whole system text, and the last user message.  Anthropic
    takes at most four."""
    from pathlib import Path

    body = json.loads((Path(__file__).parent / "fixtures/claude_code/v2332_toolsearch_turn3.json").read_text())["body"]
    plain, _ = to_openai(body, MODEL)
    marked, _ = to_openai(body, Model(**{**MODEL.__dict__, "cache_control": True}))
    parts = [(i, part) for i, m in enumerate(marked["messages"]) if isinstance(m.get("content"), list)
             for part in m["content"] if "cache_control" in part]
    assert [i for i, _ in parts] == [0, max(i for i, m in enumerate(marked["messages"]) if m["role"] == "user")]
    assert all(part["type"] == "text" and part["cache_control"] == {"type": "ephemeral"} for _, part in parts)
    assert marked["messages"][0]["content"] == [{"type": "text", "text": plain["messages"][0]["content"],
                                                  "cache_control": {"type": "ephemeral"}}]
    assert len(parts) <= 4 and "x-anthropic-billing-header" not in json.dumps(marked)
    assert marked["tools"] == plain["tools"]


def test_a_session_keeps_its_prefix_when_tool_search_loads_a_tool():
    """Claude Code 2.1.332's turns 1-3 with an MCP tool behind ToolSearch (captured): the same
    system message upstream, and each turn's tools are the earlier turn's followed by the loaded
    one, so a turn's whole system + tools prefix is the next turn's too."""
    from pathlib import Path

    turns = [to_openai(json.loads((Path(__file__).parent / f"fixtures/claude_code/v2332_toolsearch_turn{n}.json")
                                  .read_text())["body"], MODEL)[0] for n in (1, 2, 3)]
    assert turns[0]["messages"][0] == turns[1]["messages"][0] == turns[2]["messages"][0]
    for earlier, later in zip(turns, turns[1:]):
        assert later["tools"][:len(earlier["tools"])] == earlier["tools"]
    assert [t["function"]["name"] for t in turns[1]["tools"][len(turns[0]["tools"]):]] == ["mcp__demo__lookup"]
    assert len({t["prompt_cache_key"] for t in turns}) == 1      # the session stays on its cache


def test_breakpoints_stay_off_the_responses_api():
    """OpenRouter's breakpoint shape is Chat Completions'; a Responses model with the flag set
    gets its instructions as plain text."""
    from ccproxyd.translate.responses import to_responses

    body = {"model": "c", "max_tokens": 10, "system": [{"type": "text", "text": "Be brief.",
                                                        "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]}
    out, _ = to_responses(body, Model(**{**MODEL.__dict__, "api": "responses", "cache_control": True}))
    assert out["instructions"] == "Be brief." and "cache_control" not in json.dumps(out)

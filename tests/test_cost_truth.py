"""Cost truth through a real daemon: savings against the exact Claude id asked for (negative when
the route is dearer), unknown shown as unknown (never $0), time-of-day prices at the daemon's
injected clock, a broken call charged as estimated, and a real Claude Code session whose every
ledger row carries the list price of the exact id it sent.  Expected figures are worked out here
from the rates written in this file."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx2
import pytest

from ccproxyd.translate import tokens

from .conftest import Daemon
from .fake_upstream import Script, chunk, text_script, tool_script, usage
from .support import access_lines, ccproxyd, spend

NOW = "2026-12-07T07:00:00Z"          # a Monday, 07:00 UTC: inside the peak window below

ROUTES = """
providers:
  mock: {{base_url: "{url}", api_key_env: MOCK_KEY}}
models:
  fair-mock:
    provider: mock
    upstream: fair-up
    context_window: 200000
    max_output_tokens: 16384
    prices: {{input: 2.0, output: 8.0, cached_input: 0.5, cache_write: 2.5, cache_write_1h: 4.0, source: "test"}}
  dear-mock:
    provider: mock
    upstream: dear-up
    context_window: 200000
    max_output_tokens: 16384
    prices: [{{input: 5.0, output: 30.0}}]
  peak-mock:
    provider: mock
    upstream: peak-up
    context_window: 200000
    max_output_tokens: 16384
    prices:
      input: 0.15
      output: 0.60
      windows: [{{days: [mon, tue, wed, thu, fri], hours: ["01:00-04:00", "06:00-10:00"], input: 0.30, output: 1.20}}]
  free-mock: {{provider: mock, upstream: free-up, context_window: 200000, max_output_tokens: 16384}}
routes:
  - {{match: "claude-haiku-*", model: dear-mock, cache: false}}
  - {{match: "claude-opus-*", model: fair-mock, cache: false}}
  - {{match: "claude-peak-*", model: peak-mock, cache: false}}
  - {{match: "*", model: free-mock, cache: false}}
claude_prices:
  claude-peak-1: [{{input: 3.0, output: 15.0}}]
"""

# Anthropic's list prices of the ids Claude Code 2.1.332 sends (USD per 1M tokens: input, output,
# cache read, 5-minute write, 1-hour write): Opus 5.5 from
# https://platform.claude.com/docs/en/about-claude/models/whats-new-opus-5 ($4 / $20, $0.20, $5, $8);
# Haiku 4.5 $1 / $5, reads 0.1x, writes 1.25x and 2x input (Anthropic's pricing page).
CLAUDE_RATES = {"claude-opus-5-5": (4.0, 20.0, 0.20, 5.0, 8.0),
                "claude-haiku-4-5-20251001": (1.0, 5.0, 0.10, 1.25, 2.0),
                "claude-haiku-4-5": (1.0, 5.0, 0.10, 1.25, 2.0)}


@pytest.fixture(scope="module")
def money_daemon(upstream, tmp_path_factory):
    base = tmp_path_factory.mktemp("money")
    path = base / "routes.yaml"
    path.write_text(ROUTES.format(url=upstream.url))
    d = Daemon(path, extra_args=("--no-cache", "--ledger-dir", str(base / "ledger"), "--log-bodies"),
               env={"CCPROXYD_NOW": NOW})
    d.ledger_dir = base / "ledger"
    yield d
    d.stop()


def ask(daemon, model: str, session: str, stream: bool = False, text: str = "how much?") -> httpx2.Response:
    return httpx2.post(daemon.url + "/v1/messages", timeout=30, headers={"x-claude-code-session-id": session},
                       json={"model": model, "max_tokens": 50, "stream": stream,
                             "messages": [{"role": "user", "content": text}]})


def logged(daemon, request_id: str) -> dict:
    """The access line of a request: written when its handler returns, just after the client has
    read the end of the answer (so it is waited for, not timed)."""
    for _ in range(200):
        line = access_lines(daemon).get(request_id)
        if line is not None:
            return line
        time.sleep(0.05)
    raise AssertionError(f"no access line for {request_id}")


def session_row(daemon, session: str) -> dict:
    return spend(daemon, by="session", session=session, since="1970-01-01")["rows"][0]


def status(daemon, session: str) -> str:
    shown = ccproxyd("statusline", stdin=json.dumps({"session_id": session, "model": {"id": "x"}}),
                     CCPROXYD_PORT=str(daemon.port))
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.strip()


def test_a_dearer_route_shows_negative_savings_in_the_log_the_ledger_and_the_status_line(money_daemon, fake):
    fake.push(text_script("pricey", use=usage(1000, 200, 0)))
    answer = ask(money_daemon, "claude-haiku-4-5-20251001", "dear-session")
    assert answer.status_code == 200
    cost = (1000 * 5.0 + 200 * 30.0) / 1e6                  # dear-mock
    claude = (1000 * 1.0 + 200 * 5.0) / 1e6                 # Haiku 4.5's list price
    line = logged(money_daemon, answer.headers["request-id"])
    assert line["cost_usd"] == pytest.approx(cost) and line["claude_price_usd"] == pytest.approx(claude)
    assert line["savings_usd"] == pytest.approx(claude - cost) and line["savings_usd"] < 0
    row = session_row(money_daemon, "dear-session")
    assert row["savings_usd"] == pytest.approx(claude - cost) and row["savings_unknown"] == 0
    assert status(money_daemon, "dear-session") == \
        f"ccproxyd · dear-up (mock) · ${cost:.4f} · ${cost - claude:.4f} more than Claude · 0% cached" \
        f" (misses ${1000 * 5.0 / 1e6:.4f})"


def test_no_price_on_either_side_is_unknown_everywhere_never_zero(money_daemon, fake):
    fake.push(text_script("free?", use=usage(1000, 200, 0)))
    answer = ask(money_daemon, "claude-mystery-9", "unknown-session")
    assert answer.status_code == 200
    line = logged(money_daemon, answer.headers["request-id"])
    assert (line["cost_usd"], line["claude_price_usd"], line["savings_usd"]) == (None, None, None)
    assert line["input_tokens"] == 1000                       # the usage itself is still recorded
    row = session_row(money_daemon, "unknown-session")
    assert (row["cost_usd"], row["savings_usd"], row["claude_price_usd"]) == (None, None, None)
    assert row["cost_unknown"] == row["savings_unknown"] == row["requests"] == 1
    assert status(money_daemon, "unknown-session") == "ccproxyd · free-up (mock) · cost unknown · savings vs Claude unknown · 0% cached"
    table = ccproxyd("costs", "--by", "session", "--session", "unknown-session", "--since", "2026-12-01",
                     CCPROXYD_PORT=str(money_daemon.port))
    assert table.returncode == 0, table.stderr
    cells = table.stdout.splitlines()[2].split()
    assert cells[0] == "unknown-session" and cells[3:6] == ["unknown", "unknown", "unknown"]


def test_a_time_of_day_price_applies_at_the_daemons_hour(money_daemon, fake):
    """The daemon's clock says Monday 07:00 UTC: the peak rates, not the off-peak ones."""
    fake.push(text_script("peak", use=usage(10_000, 1_000, 0)))
    answer = ask(money_daemon, "claude-peak-1", "peak-session")
    line = logged(money_daemon, answer.headers["request-id"])
    assert line["cost_usd"] == pytest.approx((10_000 * 0.30 + 1_000 * 1.20) / 1e6)
    assert line["savings_usd"] == pytest.approx((10_000 * 3.0 + 1_000 * 15.0 - 10_000 * 0.30 - 1_000 * 1.20) / 1e6)
    assert "06:00-10:00" in line["rate"]


def test_a_call_that_breaks_mid_stream_is_charged_its_input_and_what_came_out(money_daemon, fake):
    produced = "the first half of an answer that never ends"
    fake.push(Script(events=[chunk({"role": "assistant", "content": ""}), chunk({"content": produced})], cut=True))
    body_text = "a question whose answer breaks"
    answer = ask(money_daemon, "claude-opus-5-5", "cut-session", stream=True, text=body_text)
    assert b"event: error" in answer.content and b"message_stop" not in answer.content
    line = logged(money_daemon, answer.headers["request-id"])
    request = {"model": "claude-opus-5-5", "max_tokens": 50, "stream": True,
               "messages": [{"role": "user", "content": body_text}]}
    fresh, out = tokens.count_request(request), tokens.count_text(produced)
    assert line["usage_estimated"] is True, line
    assert (line["input_tokens"], line["output_tokens"]) == (fresh, out)
    assert line["cost_usd"] == pytest.approx((fresh * 2.0 + out * 8.0) / 1e6)
    assert line["claude_price_usd"] == 0 and line["savings_usd"] == pytest.approx(-line["cost_usd"])
    row = session_row(money_daemon, "cut-session")
    assert row["estimated"] == 1 and row["cost_usd"] == pytest.approx(line["cost_usd"])


def _bodies(daemon) -> dict[str, dict]:
    out = {}
    for text in daemon.log_path.read_text().splitlines():
        if "ccproxyd.bodies: " in text:
            request_id, _, body = text.split("ccproxyd.bodies: ", 1)[1].partition(" ")
            out[request_id] = json.loads(body)
    return out


def _ttl(body: dict) -> str:
    blocks = list(body.get("system") or []) if isinstance(body.get("system"), list) else []
    blocks += [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
    blocks += body.get("tools") or []
    return "1h" if any((b.get("cache_control") or {}).get("ttl") == "1h" for b in blocks) else "5m"


def test_claude_code_session_every_ledger_row_at_the_exact_ids_list_price(money_daemon, fake, tmp_path):
    """Acceptance (issue 19): Claude Code through priced routes; every ledger row's Claude price is
    the list price of the exact id it sent, cache reads and writes at that id's rates."""
    from .support import NEWEST, claude_binary, run_claude

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    use = dict(usage(3000, 120, 1200), prompt_tokens_details={"cached_tokens": 1200, "cache_write_tokens": 700})

    def responder(body: dict) -> Script:
        if any(m["role"] == "tool" for m in body["messages"]) or "Write" not in str(body.get("tools")):
            return text_script("done", use=use)
        script = tool_script("Write", json.dumps({"file_path": str(work / "a.txt"), "content": "a\n"}))
        script.events[-1] = chunk(choices=False, usage=use)
        return script
    fake.responder = responder
    output = run_claude(claude_binary(NEWEST), money_daemon, work, home, prompt="Write a.txt", tools="Write")
    session = output["session_id"]
    bodies = _bodies(money_daemon)
    with sqlite3.connect(money_daemon.ledger_dir / "ledger.db") as db:
        rows = db.execute("SELECT request_id, requested, input, cached_input, cache_write, output, claude_price "
                          "FROM spend WHERE session = ?", (session,)).fetchall()
    assert rows and {r[1] for r in rows} <= set(CLAUDE_RATES) and "claude-opus-5-5" in {r[1] for r in rows}
    for request_id, requested, fresh, read, written, out, claude_price in rows:
        assert (fresh, read, written, out) == (3000 - 1200 - 700, 1200, 700, 120)
        price_in, price_out, price_read, write_5m, write_1h = CLAUDE_RATES[requested]
        write = write_1h if _ttl(bodies[request_id]) == "1h" else write_5m
        expected = (fresh * price_in + read * price_read + written * write + out * price_out) / 1e6
        assert claude_price == pytest.approx(expected), (requested, _ttl(bodies[request_id]))


@pytest.fixture(scope="module")
def cached_daemon(upstream, tmp_path_factory):
    base = tmp_path_factory.mktemp("money-cached")
    path = base / "routes.yaml"
    path.write_text(ROUTES.format(url=upstream.url).replace(
        '{match: "claude-opus-*", model: fair-mock, cache: false}', '{match: "claude-opus-*", model: fair-mock}'))
    d = Daemon(path, extra_args=("--cache-dir", str(base / "cache"), "--orphan-grace", "0.3",
                                 "--ledger-dir", str(base / "ledger")), env={"CCPROXYD_NOW": NOW})
    yield d
    d.stop()


def test_a_call_cancelled_because_every_client_left_is_charged_what_it_produced(cached_daemon, fake):
    """The provider bills the input and every token generated before ccproxyd cancelled the call."""
    events: list = [chunk({"role": "assistant", "content": ""})]
    for i in range(100):
        events += [chunk({"content": f"w{i} "}), 0.1]
    fake.push(Script(events=events + [chunk(finish="stop"), chunk(choices=False, usage=usage(10, 100))]))
    body = {"model": "claude-opus-5-5", "max_tokens": 500, "stream": True,
            "messages": [{"role": "user", "content": "an answer nobody waits for"}]}
    with httpx2.stream("POST", cached_daemon.url + "/v1/messages", json=body, timeout=30) as response:
        request_id = response.headers["request-id"]
        seen = b""
        for piece in response.iter_raw():
            seen += piece
            if b"w3 " in seen:
                break                                  # the client leaves; the call is cancelled after the grace
    line = logged(cached_daemon, request_id)           # written when the cancelled call ends
    assert line["usage_estimated"] is True and line["input_tokens"] == tokens.count_request(body)
    assert line["output_tokens"] >= tokens.count_text("w0 w1 w2 w3 ")
    assert line["cost_usd"] == pytest.approx((line["input_tokens"] * 2.0 + line["output_tokens"] * 8.0) / 1e6)
    assert line["cost_usd"] > 0 and line["savings_usd"] == pytest.approx(-line["cost_usd"])


def test_a_cut_call_is_charged_to_its_clients_budget_and_a_whole_one_is_written_with_its_error(upstream, fake,
                                                                                                tmp_path):
    """A client's budget counts what a broken call cost (its usage is counted after the handler has
    ended), and a non-streamed answer that breaks is written with the error the client saw."""
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.format(url=upstream.url) + "clients:\n  SPENDER_KEY: {budget_usd: {day: 100}}\n")
    daemon = Daemon(path, extra_args=("--no-cache", "--no-ledger"),
                    env={"CCPROXYD_NOW": NOW, "SPENDER_KEY": "sk-client-spender"})
    try:
        for stream in (True, False):
            fake.push(Script(events=[chunk({"role": "assistant", "content": ""}), chunk({"content": "half an answer"})],
                             cut=True))
            answer = httpx2.post(daemon.url + "/v1/messages", timeout=30, headers={"x-api-key": "sk-client-spender"},
                                 json={"model": "claude-opus-5-5", "max_tokens": 50, "stream": stream,
                                       "messages": [{"role": "user", "content": f"cut {stream}"}]})
            line = logged(daemon, answer.headers["request-id"])
            assert line["usage_estimated"] is True and line["cost_usd"] > 0
            if not stream:
                assert answer.status_code >= 500 and line["status"] == answer.status_code and line["error_type"]
        lines = access_lines(daemon)
        spent = sum(line["cost_usd"] for line in lines.values())
        for _ in range(100):                              # settled in a task once each line is written
            use = httpx2.get(daemon.url + "/health", timeout=10).json()["clients"]["SPENDER_KEY"]
            if use["spent_usd"]["day"] == pytest.approx(spent):
                break
            time.sleep(0.05)
        assert use["spent_usd"]["day"] == pytest.approx(spent) and spent > 0
    finally:
        daemon.stop()

"""A client that leaves before its answer is over: its request gets exactly one access line, with
the status it had then (200: no response, and no error, reached it afterwards; not the 500 Sanic
answers a cancelled handler with), and a call its provider bills is still charged to it (line,
ledger, the client's budget).  A real daemon (cache, ledger, a client with a budget) in front of
the fake upstream; each client hangs up a raw connection.  Expected figures are worked out here
from the table's prices."""

from __future__ import annotations

import socket
import time

import httpx2
import orjson
import pytest

from ccproxyd.translate import tokens

from .conftest import Daemon
from .fake_upstream import Script, chunk, usage
from .support import CLAUDE, COST, PRICED_ROUTES, access_lines, wait_for

# cheap-mock (the haiku route) made dear here, so that the few tokens a cut call used show in its cost
ROUTES = PRICED_ROUTES.replace("prices: [{{input: 0.1, output: 0.4}}]", "prices: [{{input: 100, output: 400}}]") + """clients:
  LEAVER_KEY: {{budget_usd: {{day: 100}}}}
"""
KEY = "sk-client-leaver"
NOW = "2026-12-07T11:30:00Z"                     # the daemon's clock: the budget's day does not depend on today


@pytest.fixture(scope="module")
def daemon(upstream, tmp_path_factory):
    base = tmp_path_factory.mktemp("left")
    path = base / "routes.yaml"
    path.write_text(ROUTES.format(url=upstream.url))
    # a grace longer than any call here: a call every client left runs to its end
    d = Daemon(path, extra_args=("--cache-dir", str(base / "cache"), "--ledger-dir", str(base / "ledger"),
                                 "--orphan-grace", "10"), env={"CCPROXYD_NOW": NOW, "LEAVER_KEY": KEY})
    yield d
    d.stop()


def body(model: str, stream: bool) -> dict:
    return {"model": model, "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": f"asked, then left {time.time_ns()}"}]}


def hang_up(daemon, request: dict, session: str, fake, after: float = 0.2) -> None:
    """Send `request` on a raw connection; once the provider has it, wait `after` seconds and
    close the connection without reading a byte."""
    content = orjson.dumps(request)
    with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"x-api-key: %s\r\nx-claude-code-session-id: %s\r\ncontent-length: %d\r\n\r\n"
                     % (KEY.encode(), session.encode(), len(content)) + content)
        wait_for(lambda: len(fake.requests) == 1)
        time.sleep(after)


def the_line(daemon, session: str) -> dict:
    """The one access line of a session's one request (none more, a moment later)."""
    def lines() -> list[dict]:
        return [line for line in access_lines(daemon).values() if line["session_id"] == session]
    wait_for(lines, timeout=10)
    time.sleep(0.3)
    (line,) = lines()
    return line


def spent(daemon) -> float:
    return httpx2.get(daemon.url + "/health", timeout=10).json()["clients"]["LEAVER_KEY"]["spent_usd"]["day"]


def ledger_rows(daemon, session: str) -> list[dict]:
    answer = httpx2.get(daemon.url + "/spend", params={"by": "session", "session": session}, timeout=10,
                        headers={"x-api-key": KEY})             # client keys guard /spend
    assert answer.status_code == 200, answer.text
    return answer.json()["rows"]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_leader_that_leaves_before_its_first_byte_pays_when_its_call_ends(daemon, fake, stream):
    """The shared call it started runs on (for the cache) and is paid by it: written then, status 200."""
    fake.push(Script(events=[chunk({"role": "assistant", "content": ""}), chunk({"content": "late answer"}),
                             chunk(finish="stop"), chunk(choices=False, usage=usage(1000, 200, 400))],
                     first_byte_delay=1.0))
    session, before = f"lead-left-{time.time_ns()}", spent(daemon)
    hang_up(daemon, body("claude-sonnet-4-5", stream), session, fake)
    line = the_line(daemon, session)
    assert (line["status"], line["error_type"], line["cache"], line["provider"], line["upstream_model"]) == (
        200, None, "miss", "mock", "gpt-mock")
    assert (line["input_tokens"], line["cached_tokens"], line["output_tokens"]) == (600, 400, 200)
    assert line["cost_usd"] == pytest.approx(COST) and line["savings_usd"] == pytest.approx(CLAUDE - COST)
    (row,) = ledger_rows(daemon, session)
    assert row["requests"] == 1 and row["cost_usd"] == pytest.approx(COST)
    wait_for(lambda: spent(daemon) == pytest.approx(before + COST))


def test_a_whole_answer_its_client_left_mid_answer_is_charged_what_it_used(daemon, fake):
    """A direct call (no cache) cut by the client leaving while the answer is read: the provider
    bills the input and what it produced, counted here; written with status 200."""
    produced = "half an answer"
    fake.push(Script(events=[chunk({"role": "assistant", "content": ""}), chunk({"content": produced}), 3.0,
                             chunk({"content": " and the rest"}), chunk(finish="stop"),
                             chunk(choices=False, usage=usage(1000, 200))]))
    request = body("claude-haiku-4-5", stream=False)
    session, before = f"whole-left-{time.time_ns()}", spent(daemon)
    hang_up(daemon, request, session, fake, after=0.5)
    line = the_line(daemon, session)
    assert (line["status"], line["error_type"], line["cache"], line["upstream_model"]) == (200, None, None, "cheap-up")
    assert line["usage_estimated"] is True and line["input_tokens"] == tokens.count_request(request)
    assert line["output_tokens"] == tokens.count_text(produced)
    cost = (line["input_tokens"] * 100 + line["output_tokens"] * 400) / 1e6
    assert line["cost_usd"] == pytest.approx(cost) and line["claude_price_usd"] == 0
    assert line["savings_usd"] == pytest.approx(-cost)
    (row,) = ledger_rows(daemon, session)
    assert row["cost_usd"] == pytest.approx(cost) and row["estimated"] == 1
    wait_for(lambda: spent(daemon) == pytest.approx(before + cost))


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_request_whose_client_left_before_the_provider_answered_is_written_once(daemon, fake, stream):
    """A direct call cancelled before its provider answered anything: one line, status 200, no
    answer and nothing charged (as for a shared call cancelled before its first byte)."""
    fake.push(Script(events=[chunk({"role": "assistant", "content": ""}), chunk({"content": "too late"}),
                             chunk(finish="stop"), chunk(choices=False, usage=usage(1000, 200))],
                     first_byte_delay=1.0))
    session, before = f"open-left-{time.time_ns()}", spent(daemon)
    hang_up(daemon, body("claude-haiku-4-5", stream), session, fake)
    line = the_line(daemon, session)
    assert (line["status"], line["error_type"], line["provider"], line["cache"]) == (200, None, None, None)
    assert (line["input_tokens"], line["output_tokens"], line["cost_usd"]) == (0, 0, None)
    time.sleep(1.0)                                     # the provider's answer came (to a closed connection)
    assert ledger_rows(daemon, session) == [] and spent(daemon) == before
    assert [line["request_id"] for line in access_lines(daemon).values() if line["session_id"] == session] == [
        line["request_id"]]

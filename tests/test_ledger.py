"""The spend ledger: what was paid, once, by session, client, route, model and day; GET /spend;
`ccproxyd costs --by`; `ccproxyd statusline`.  A real daemon (cache and ledger on) in front of
the fake upstream; expected prices are worked out here from the table's prices."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time

import httpx2
import pytest

from ccproxyd.money import clock
from ccproxyd.state.ledger import FILENAME, Ledger

from .conftest import Daemon
from .fake_upstream import Gate, Script, chunk, text_script, tool_script, usage
from .support import CLAUDE, COST, PRICED_ROUTES, access_lines, ccproxyd, spend

ROUTES = PRICED_ROUTES
MISSES = 600 * 2.0 / 1e6                                    # the uncached input alone, at gpt-mock's price
NOW = "2026-12-07T11:30:00Z"                     # the daemon's clock (CCPROXYD_NOW): no test depends on the wall clock
TODAY = NOW[:10]
_n = [0]


@pytest.fixture(scope="module")
def spender(upstream, tmp_path_factory):
    base = tmp_path_factory.mktemp("spender")
    path = base / "routes.yaml"
    path.write_text(ROUTES.format(url=upstream.url))
    d = Daemon(path, extra_args=("--cache-dir", str(base / "cache"), "--ledger-dir", str(base / "ledger")),
               env={"CCPROXYD_NOW": NOW})
    d.ledger_dir = base / "ledger"
    yield d
    d.stop()


def question(stream: bool, model: str = "claude-sonnet-4-5") -> dict:
    _n[0] += 1
    return {"model": model, "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": f"ledger question {_n[0]} {time.time()}"}]}


def priced_script(gate: Gate | None = None) -> Script:
    events = [chunk({"role": "assistant", "content": ""}), chunk({"content": "shared "})]
    events += [gate] if gate else []
    events += [chunk({"content": "answer"}), chunk(finish="stop"), chunk(choices=False, usage=usage(1000, 200, 400))]
    return Script(events=events)


def open_stream(daemon, body: dict, session: str):
    """A streamed request read until its first text arrived; (context, response, rest of the bytes)."""
    context = httpx2.stream("POST", daemon.url + "/v1/messages", json=body, timeout=30,
                            headers={"x-claude-code-session-id": session})
    response = context.__enter__()
    pieces = response.iter_raw()
    seen = b""
    while b"shared" not in seen:
        seen += next(pieces)
    return context, response, pieces


def test_the_leader_pays_followers_and_hits_save_the_claude_price(spender, fake):
    gate = Gate()
    fake.push(priced_script(gate))
    body = question(True)
    tag = f"t{time.time_ns()}"
    streams = [open_stream(spender, body, f"{tag}-lead")]
    streams += [open_stream(spender, body, f"{tag}-follow{i}") for i in (1, 2)]   # joined: they have its first text
    gate.open()
    for context, response, rest in streams:
        assert b"answer" in b"".join(rest)
        context.__exit__(None, None, None)
    hit = httpx2.post(spender.url + "/v1/messages", json=dict(body, stream=False), timeout=30,
                      headers={"x-claude-code-session-id": f"{tag}-hit"})
    assert [r.headers["x-ccproxyd-cache"] for _, r, _ in streams] == ["miss", "hit", "hit"]
    assert hit.headers["x-ccproxyd-cache"] == "hit" and len(fake.requests) == 1

    logged = access_lines(spender)
    ids = [r.headers["request-id"] for _, r, _ in streams] + [hit.headers["request-id"]]
    lead, *others = (logged[i] for i in ids)
    assert lead["cost_usd"] == pytest.approx(COST) and lead["savings_usd"] == pytest.approx(CLAUDE - COST)
    for line in others:
        assert line["cost_usd"] == 0 and line["savings_usd"] == pytest.approx(CLAUDE)
        assert line["claude_price_usd"] == pytest.approx(CLAUDE) and line["upstream_model"] == "gpt-mock"

    sessions = {row["key"]: row for row in spend(spender, by="session")["rows"] if row["key"].startswith(tag)}
    assert set(sessions) == {f"{tag}-lead", f"{tag}-follow1", f"{tag}-follow2", f"{tag}-hit"}
    assert sessions[f"{tag}-lead"]["cost_usd"] == pytest.approx(COST)
    assert sessions[f"{tag}-lead"]["cache_hits"] == 0
    for name in ("follow1", "follow2", "hit"):
        row = sessions[f"{tag}-{name}"]
        assert row["cost_usd"] == 0 and row["savings_usd"] == pytest.approx(CLAUDE) and row["cache_hits"] == 1
        assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (600, 400, 200)
    assert sum(r["cost_usd"] for r in sessions.values()) == pytest.approx(sum(logged[i]["cost_usd"] for i in ids))


def test_a_leader_that_leaves_still_pays_when_its_call_ends(spender, fake):
    gate = Gate()
    fake.push(priced_script(gate))
    body = question(True)
    tag = f"t{time.time_ns()}"
    lead = open_stream(spender, body, f"{tag}-gone")
    follower = open_stream(spender, body, f"{tag}-stays")
    lead[0].__exit__(None, None, None)                 # the leader's client hangs up mid-answer
    gate.open()
    assert b"answer" in b"".join(follower[2])
    follower[0].__exit__(None, None, None)
    rows = {row["key"]: row for row in spend(spender, by="session")["rows"]}
    assert rows[f"{tag}-gone"]["cost_usd"] == pytest.approx(COST)
    assert rows[f"{tag}-stays"]["cost_usd"] == 0
    assert access_lines(spender)[lead[1].headers["request-id"]]["cost_usd"] == pytest.approx(COST)


def test_spend_groups_by_each_key_and_filters_by_day(spender, fake):
    fake.push(text_script("cheap", use={"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110,
                                        "completion_tokens_details": {"reasoning_tokens": 6}}))
    tag = f"t{time.time_ns()}"
    answer = httpx2.post(spender.url + "/v1/messages", json=question(False, "claude-haiku-4-5"), timeout=30,
                         headers={"x-claude-code-session-id": tag})
    assert answer.status_code == 200
    by_model = {row["key"]: row for row in spend(spender, by="model", since=TODAY)["rows"]}
    assert by_model["cheap-up"]["models"][0]["requested"] == "claude-haiku-4-5"
    assert by_model["cheap-up"]["cost_usd"] >= (100 * 0.1 + 10 * 0.4) / 1e6
    by_route = {row["key"] for row in spend(spender, by="route")["rows"]}
    assert "claude-haiku*" in by_route
    days = spend(spender, by="day")
    assert days["rows"][-1]["key"] == TODAY
    assert days["total"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in days["rows"]))
    assert [row["key"] for row in spend(spender, by="client")["rows"]] == [None]     # no client keys
    one = spend(spender, by="session", session=tag)
    assert [r["key"] for r in one["rows"]] == [tag] and one["total"]["requests"] == 1
    assert one["rows"][0]["reasoning_tokens"] == 6 and one["rows"][0]["output_tokens"] == 10
    assert one["rows"][0]["cost_usd"] == pytest.approx((100 * 0.1 + 10 * 0.4) / 1e6)
    assert one["rows"][0]["savings_usd"] == pytest.approx((100 * 1.0 + 10 * 5.0 - 100 * 0.1 - 10 * 0.4) / 1e6)
    assert spend(spender, by="day", since="2999-01-01")["rows"] == []
    for bad in ({"by": "colour"}, {"by": "day", "since": "yesterday"}, {"by": "day", "since": "2026-02-30"}):
        response = httpx2.get(spender.url + "/spend", params=bad, timeout=10)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_costs_by_prints_a_table_json_and_csv(spender, fake):
    fake.push(text_script("x", use=usage(1000, 200, 400)))
    httpx2.post(spender.url + "/v1/messages", json=question(False), timeout=30)
    table = ccproxyd("costs", "--by", "model", "--since", TODAY, CCPROXYD_PORT=str(spender.port))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"spend since {TODAY} (UTC), by model" and lines[1].split()[0] == "model"
    assert any(line.startswith("gpt-mock ") and "mock:gpt-mock" in line for line in lines)
    assert lines[-1].startswith("total ")
    as_json = ccproxyd("costs", "--by", "day", "--json", "--url", spender.url)
    assert json.loads(as_json.stdout) == spend(spender, by="day")
    as_csv = ccproxyd("costs", "--by", "session", "--csv", "--url", spender.url + "/metrics")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    expected = spend(spender, by="session")["rows"]
    assert [r["session"] for r in rows] == [r["key"] or "" for r in expected]
    assert [float(r["cost_usd"]) for r in rows] == [r["cost_usd"] for r in expected]
    for by in ("route", "client"):
        assert ccproxyd("costs", "--by", by, "--url", spender.url).returncode == 0
    plain = ccproxyd("costs", "--url", spender.url)              # the /metrics summary is still there
    assert plain.returncode == 0 and plain.stdout.startswith("requests: ")


@pytest.mark.parametrize("url, says", [("http://127.0.0.1:1", "connection refused"),
                                       ("not a url", "not an http:// or https:// URL"),
                                       ("http://127.0.0.1:99999", "not a usable URL"),
                                       ("UPSTREAM", "did not answer as a ccproxyd does")])
def test_costs_by_says_what_is_wrong_in_one_line(url, says, upstream):
    result = ccproxyd("costs", "--by", "day", "--url", upstream.url if url == "UPSTREAM" else url)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr


def test_costs_by_asks_the_daemon_at_ccproxyd_port():
    by_port = ccproxyd("costs", "--by", "day", CCPROXYD_PORT="1")
    assert by_port.returncode == 1 and "http://127.0.0.1:1 (connection refused)" in by_port.stderr


def status_json(session: str, model: str = "claude-sonnet-4-5-20250929") -> str:
    """What Claude Code 2.1.332 writes on a statusLine command's stdin (the fields it always sends)."""
    return json.dumps({
        "session_id": session, "transcript_path": f"/tmp/{session}.jsonl", "cwd": "/tmp/work",
        "model": {"id": model, "display_name": "Sonnet 4.5"},
        "workspace": {"current_dir": "/tmp/work", "project_dir": "/tmp/work", "added_dirs": []},
        "version": "2.1.332", "output_style": {"name": "default"},
        "cost": {"total_cost_usd": 0.0123, "total_duration_ms": 1000, "total_api_duration_ms": 800,
                 "total_lines_added": 0, "total_lines_removed": 0},
        "exceeds_200k_tokens": False})


def test_statusline_shows_the_session_spend_or_one_line_when_the_daemon_is_down(spender, fake):
    fake.push(priced_script())
    tag = f"t{time.time_ns()}"
    httpx2.post(spender.url + "/v1/messages", json=question(False, "claude-sonnet-4-5-20250929"), timeout=30,
                headers={"x-claude-code-session-id": tag})
    up = ccproxyd("statusline", stdin=status_json(tag), CCPROXYD_PORT=str(spender.port))
    assert up.returncode == 0 and up.stdout.count("\n") == 1, up.stderr
    assert up.stdout.strip() == (f"ccproxyd · gpt-mock (mock) · ${COST:.4f} · saved ${CLAUDE - COST:.4f} vs Claude"
                                 f" · 40% cached (misses ${MISSES:.4f})")
    through_claude_env = ccproxyd("statusline", stdin=status_json(tag), ANTHROPIC_BASE_URL=spender.url)
    assert through_claude_env.stdout == up.stdout
    new = ccproxyd("statusline", stdin=status_json("never-seen"), CCPROXYD_PORT=str(spender.port))
    assert new.stdout == "ccproxyd · no answers yet in this session\n"
    down = ccproxyd("statusline", stdin=status_json(tag), CCPROXYD_PORT="1")
    assert down.returncode == 0 and down.stdout.count("\n") == 1 and down.stdout.startswith("ccproxyd: ")
    assert "connection refused" in down.stdout and down.stderr == ""
    garbage = ccproxyd("statusline", stdin="not json", CCPROXYD_PORT=str(spender.port))
    assert garbage.returncode == 0 and garbage.stdout.count("\n") == 1


def test_the_ledger_survives_a_restart_and_client_keys_guard_it(upstream, fake, tmp_path):
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    (ledger_dir / FILENAME).write_bytes(b"this is not a database" * 100)    # damaged before start
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(url=upstream.url) + "client_keys: [TEAM_A_KEY, TEAM_B_KEY]\n")
    keys = {"TEAM_A_KEY": "ka-secret-1", "TEAM_B_KEY": "kb-secret-2"}
    for attempt in range(2):
        daemon = Daemon(routes, env=keys, extra_args=("--no-cache", "--ledger-dir", str(ledger_dir)))
        try:
            fake.push(priced_script())
            answer = httpx2.post(daemon.url + "/v1/messages", json=question(False), timeout=30,
                                 headers={"x-api-key": keys["TEAM_B_KEY"], "x-claude-code-session-id": "s-keys"})
            assert answer.status_code == 200
            assert httpx2.get(daemon.url + "/spend", timeout=10).status_code == 401
            health = httpx2.get(daemon.url + "/health", timeout=10).json()
            assert health["ledger"] == {"state": "up", "path": str(ledger_dir / FILENAME)}
            rows = httpx2.get(daemon.url + "/spend?by=client", headers={"x-api-key": keys["TEAM_A_KEY"]},
                              timeout=10).json()["rows"]
            assert [(r["key"], r["requests"]) for r in rows] == [("TEAM_B_KEY", attempt + 1)]   # the name, never the key
            assert rows[0]["cost_usd"] == pytest.approx(COST * (attempt + 1))
            keyed = ccproxyd("costs", "--by", "client", "--url", daemon.url, CCPROXYD_CLIENT_KEY=keys["TEAM_A_KEY"])
            assert keyed.returncode == 0 and "TEAM_B_KEY" in keyed.stdout
            refused = ccproxyd("costs", "--by", "client", "--url", daemon.url)
            assert refused.returncode == 1 and "HTTP 401" in refused.stderr and "CCPROXYD_CLIENT_KEY" in refused.stderr
        finally:
            daemon.stop()
        log = daemon.log_path.read_text()
        assert log.count("is now") == (1 if attempt == 0 else 0)              # set aside once, at the first start
        assert "ka-secret-1" not in log and "kb-secret-2" not in log
    assert (ledger_dir / (FILENAME + ".damaged")).read_bytes().startswith(b"this is not a database")


def _row(day: str, session: str, cost: float) -> tuple:
    return (time.time(), day, session, None, "*", "mock", "gpt-mock", "claude-sonnet-4-5", "miss",
            cost, 0.0, cost, 10, 0, 5, 0, 0, 0, None, None, None, None, None)   # no cc_version, miss_cost unknown


def test_rows_past_the_retention_limit_are_removed(tmp_path):
    today = clock.today()                     # the clock the ledger prunes by
    ledger = Ledger(str(tmp_path), days=3)
    for age in (0, 2, 3, 4, 30):
        ledger.add(_row((today - dt.timedelta(days=age)).isoformat(), f"age{age}", 1.0))
    ledger.close()
    kept = Ledger(str(tmp_path), days=3)                                # prunes when it opens
    assert sorted(r["key"] for r in kept.spend("session", "1970-01-01")["rows"]) == ["age0", "age2", "age3"]
    kept.close()
    forever = Ledger(str(tmp_path), days=0)
    forever.add(_row("2001-01-01", "old", 1.0))
    forever.close()
    assert [r["key"] for r in Ledger(str(tmp_path), days=0).spend("day", "1970-01-01")["rows"]][0] == "2001-01-01"


def test_a_ledger_damaged_while_open_is_set_aside_once_and_a_new_one_records(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "ccproxyd.ledger")
    ledger = Ledger(str(tmp_path), days=0)
    ledger.add(_row(TODAY, "before", 1.0))
    assert ledger.spend("session", TODAY)["total"]["requests"] == 1
    for name in (FILENAME, FILENAME + "-wal"):                          # overwritten in place
        with open(tmp_path / name, "r+b") as f:
            f.write(b"garbage!" * 4096)
    with pytest.raises(sqlite3.DatabaseError):
        ledger.spend("session", TODAY)
    ledger.add(_row(TODAY, "after", 2.0))
    rows = ledger.spend("session", TODAY)["rows"]
    assert [(r["key"], r["cost_usd"]) for r in rows] == [("after", 2.0)]
    assert (tmp_path / (FILENAME + ".damaged")).exists()
    assert sum("is damaged" in r.getMessage() for r in caplog.records) == 1
    ledger.close()


def test_ccproxyd_claude_sets_the_status_line_by_settings_flag(spender, fake, tmp_path):
    """`ccproxyd claude` gives Claude Code `--settings` with `ccproxyd statusline` as its status line
    (the user's settings files untouched), unless the user passes --settings; the command it
    sets answers for the session, in the environment Claude Code gives it."""
    recorder = tmp_path / "claude"
    recorder.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        f"json.dump({{'argv': sys.argv[1:], 'token': os.environ.get('ANTHROPIC_AUTH_TOKEN')}}, "
                        f"open({str(tmp_path / 'seen.json')!r}, 'w'))\n")
    recorder.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    launched = ccproxyd("claude", "--claude", str(recorder), "-p", "hi", CCPROXYD_PORT=str(spender.port), HOME=str(home))
    assert launched.returncode == 0, launched.stderr
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["argv"][0] == "--settings" and seen["argv"][2:] == ["-p", "hi"]
    status_line = json.loads(seen["argv"][1])["statusLine"]
    assert status_line["type"] == "command" and list(home.iterdir()) == []
    fake.push(priced_script())
    tag = f"t{time.time_ns()}"
    httpx2.post(spender.url + "/v1/messages", json=question(False), timeout=30, headers={"x-claude-code-session-id": tag})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CCPROXYD_"))}
    shown = subprocess.run(status_line["command"], shell=True, input=status_json(tag), capture_output=True, text=True,
                           env=dict(env, ANTHROPIC_AUTH_TOKEN=seen["token"]), timeout=60)
    assert shown.stdout.startswith(f"ccproxyd · gpt-mock (mock) · ${COST:.4f}"), shown
    own = ccproxyd("claude", "--claude", str(recorder), "--settings", "{}", CCPROXYD_PORT=str(spender.port))
    assert own.returncode == 0 and json.loads((tmp_path / "seen.json").read_text())["argv"] == ["--settings", "{}"]


def test_claude_code_run_then_statusline_shows_what_the_log_lines_cost(spender, fake, tmp_path):
    """Acceptance: Claude Code through ccproxyd, then `ccproxyd statusline` with that run's session:
    a non-zero cost, equal to the sum of the run's access log lines."""
    from .support import NEWEST, claude_binary, run_claude

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()

    def responder(body: dict) -> Script:                # a tool turn: Write, then the final text
        if any(m["role"] == "tool" for m in body["messages"]) or "Write" not in str(body.get("tools")):
            return priced_script()
        script = tool_script("Write", json.dumps({"file_path": str(work / "a.txt"), "content": "a\n"}))
        script.events[-1] = chunk(choices=False, usage=usage(1000, 200, 400))
        return script
    fake.responder = responder
    output = run_claude(claude_binary(NEWEST), spender, work, home, prompt="Write a.txt", tools="Write")
    assert (work / "a.txt").read_text() == "a\n"
    session = output["session_id"]
    lines = [line for line in access_lines(spender).values() if line["session_id"] == session]
    assert len(lines) >= 2 and all(line["status"] == 200 for line in lines)
    logged = sum(line["cost_usd"] for line in lines)
    assert logged > 0
    ledger = spend(spender, by="session", session=session)["rows"][0]
    assert ledger["cost_usd"] == pytest.approx(logged, abs=1e-9) and ledger["requests"] == len(lines)
    shown = ccproxyd("statusline", stdin=status_json(session, output.get("model", "claude-sonnet-4-5")),
                     CCPROXYD_PORT=str(spender.port)).stdout
    assert shown.split(" · ")[2] == f"${logged:.4f}" and " vs Claude" in shown, shown


def test_two_writers_on_one_file_lose_no_row(tmp_path):
    """Several workers share the ledger: each has its own writer; WAL and the busy timeout make
    them take turns instead of dropping rows."""
    import threading

    ledgers = [Ledger(str(tmp_path), days=0) for _ in range(2)]

    def write(ledger: Ledger, name: str) -> None:
        for i in range(400):
            ledger.add(_row(TODAY, name, 0.001))
            if i % 50 == 0:
                ledger._writer.flush(5)                  # many small transactions, interleaved
    threads = [threading.Thread(target=write, args=(ledger, f"w{i}")) for i, ledger in enumerate(ledgers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledgers[1]._writer.flush(5)                            # a query waits only for its own worker's queue
    rows = {r["key"]: r["requests"] for r in ledgers[0].spend("session", TODAY)["rows"]}
    assert rows == {"w0": 400, "w1": 400}
    for ledger in ledgers:
        ledger.close()


def test_without_the_ledger_spend_says_so_and_serving_goes_on(upstream, fake, tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(url=upstream.url))
    daemon = Daemon(routes, extra_args=("--no-cache", "--no-ledger"))
    try:
        fake.push(priced_script())
        assert httpx2.post(daemon.url + "/v1/messages", json=question(False), timeout=30).status_code == 200
        off = httpx2.get(daemon.url + "/spend", timeout=10)
        assert off.status_code == 404 and "--no-ledger" in off.json()["error"]["message"]
        assert httpx2.get(daemon.url + "/health", timeout=10).json()["ledger"] == {"state": "off"}
        shown = ccproxyd("statusline", stdin=status_json("s"), CCPROXYD_PORT=str(daemon.port))
        assert shown.returncode == 0 and shown.stdout.count("\n") == 1 and "--no-ledger" in shown.stdout
    finally:
        daemon.stop()
    assert not list((tmp_path).rglob(FILENAME))


def test_a_ledger_of_an_older_ccproxyd_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    """A ledger.db written before cache writes, estimates, rates and request ids were recorded."""
    old = sqlite3.connect(tmp_path / FILENAME)
    old.executescript("""
CREATE TABLE spend (ts REAL NOT NULL, day TEXT NOT NULL, session TEXT, client TEXT, route TEXT, provider TEXT,
  model TEXT, requested TEXT, cache TEXT, cost REAL, savings REAL, claude_price REAL, input INTEGER NOT NULL,
  cached_input INTEGER NOT NULL, output INTEGER NOT NULL, reasoning INTEGER NOT NULL);
INSERT INTO spend VALUES (1796000000, '2026-11-30', 'old', NULL, '*', 'mock', 'gpt-mock', 'claude-sonnet-4-5',
  'miss', 0.5, 1.0, 1.5, 10, 0, 5, 0);
""")
    old.commit()
    old.close()
    ledger = Ledger(str(tmp_path), days=0)
    ledger.add(_row(TODAY, "new", 2.0))
    rows = {r["key"]: r for r in ledger.spend("session", "2026-11-01")["rows"]}
    assert rows["old"]["cost_usd"] == 0.5 and rows["old"]["cache_write_tokens"] == 0 and rows["new"]["cost_usd"] == 2.0
    ledger.close()

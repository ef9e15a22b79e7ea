"""Behaviour under systemd: the notify protocol, and SIGTERM with streams in flight."""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx2

from .conftest import TEST_ROUTES, Daemon, free_port
from .fake_upstream import Script, chunk
from .grammar import check_stream, parse_sse
from .support import wait_for


def test_notify_socket_sequence_and_graceful_stop(tmp_path, fake):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    messages: list[str] = []
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                continue

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()))
    daemon = Daemon(routes, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"},
                    extra_args=("--no-cache", "--drain-timeout", "10"), log_path=tmp_path / "d.log")
    try:
        time.sleep(0.5)
        daemon.proc.send_signal(signal.SIGHUP)
        time.sleep(0.6)
        # three slow streams in flight when SIGTERM arrives
        for _ in range(3):
            fake.push(Script(events=[chunk({"content": "a"}), 1.5, chunk({"content": "b"}), chunk(finish="stop")]))
        results: list[bytes] = []

        def stream() -> None:
            r = httpx2.post(daemon.url + "/v1/messages", timeout=20, json={
                "model": "claude-sonnet-4-5", "max_tokens": 5, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]})
            results.append(r.content)
        clients = [threading.Thread(target=stream) for _ in range(3)]
        for c in clients:
            c.start()
        wait_for(lambda: len(fake.requests) == 3)   # all three in flight (a fixed sleep did not make sure)
        time.sleep(0.5)
        daemon.proc.send_signal(signal.SIGTERM)
        for c in clients:
            c.join(15)
        assert daemon.proc.wait(15) == 0
    finally:
        stop.set()
        collector.join(2)
        daemon.log.close()
    assert len(results) == 3
    for content in results:
        events = parse_sse(content)
        assert check_stream(events) == "complete"
        assert "ab" == "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    kinds = [m.split("\n")[0].split("=")[0] for m in messages if not m.startswith("WATCHDOG")]
    assert kinds == ["READY", "RELOADING", "READY", "STOPPING"], messages
    reloading = next(m for m in messages if m.startswith("RELOADING"))
    assert "MONOTONIC_USEC=" in reloading
    assert any(m == "WATCHDOG=1" for m in messages)


def test_unit_file_security_rating():
    """`systemd-analyze --offline=true security` rates the unit 2.0 or lower."""
    import re
    import shutil
    import subprocess
    from pathlib import Path

    unit = Path(__file__).resolve().parent.parent / "systemd" / "ccproxyd.service"
    text = unit.read_text()
    for needed in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "DynamicUser=yes", "CacheDirectory=",
                   "ProtectSystem=strict", "UMask=0077", "LoadCredential=OPENAI_API_KEY"):
        assert needed in text
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is needed for this check (Debian: package systemd)"
    out = subprocess.run([tool, "--offline=true", "security", str(unit)], capture_output=True, text=True)
    level = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout + out.stderr).group(1))
    assert level <= 2.0, out.stdout[-2000:]


def test_client_keys(tmp_path, fake):
    import anthropic

    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()) + "client_keys: [TEAM_KEY]\n")
    daemon = Daemon(routes, env={"TEAM_KEY": "team-secret-1"}, log_path=tmp_path / "d.log")
    try:
        body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}):
            r = httpx2.post(daemon.url + "/v1/messages", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert httpx2.post(daemon.url + "/v1/messages", json=body, headers={"x-api-key": "team-secret-1"}).status_code == 200
        client = anthropic.Anthropic(base_url=daemon.url, auth_token="team-secret-1", api_key=None, max_retries=0)
        assert client.messages.create(**body).content[0].text == "Hello from fake"
        assert httpx2.get(daemon.url + "/health").status_code == 200
        for r in fake.requests:                     # client credentials never go upstream
            assert "team-secret-1" not in str(r["headers"])
    finally:
        daemon.stop()
    assert "team-secret-1" not in (tmp_path / "d.log").read_text()


def test_unset_client_key_variable_is_a_located_error():
    from ccproxyd.config import table as config
    from ccproxyd.errors import ConfigError
    import pytest

    text = TEST_ROUTES.format(url="http://127.0.0.1:1/v1", dead_port=1) + "client_keys: [NOPE_KEY]\n"
    with pytest.raises(ConfigError) as info:
        config.load(text, "r.yaml", env={})
    assert "client_keys[0]: variable NOPE_KEY is not set" in str(info.value)


def test_streams_past_the_drain_timeout_end_with_an_error_event(tmp_path, fake):
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()))
    daemon = Daemon(routes, extra_args=("--no-cache", "--drain-timeout", "1"), log_path=tmp_path / "d.log")
    fake.push(Script(events=[chunk({"content": "a"}), 8.0, chunk({"content": "b"}), chunk(finish="stop")]))
    result: list[bytes] = []
    client = threading.Thread(target=lambda: result.append(httpx2.post(daemon.url + "/v1/messages", timeout=20, json={
        "model": "claude-sonnet-4-5", "max_tokens": 5, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}).content))
    client.start()
    wait_for(lambda: len(fake.requests) == 1)       # the stream is in flight before SIGTERM
    time.sleep(0.5)
    t0 = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0
    stopped_after = time.monotonic() - t0
    client.join(5)
    daemon.log.close()
    events = parse_sse(result[0])
    assert check_stream(events) == "error"
    assert events[-1][1]["error"]["type"] == "overloaded_error"
    assert stopped_after < 5


def test_metrics_are_summed_over_workers(tmp_path, fake):
    from .support import parse_prometheus

    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()))
    daemon = Daemon(routes, extra_args=("--no-cache", "--workers", "2"), log_path=tmp_path / "d.log")
    try:
        with httpx2.Client() as client:              # new connections, spread over both workers
            for _ in range(10):
                r = client.post(daemon.url + "/v1/messages", headers={"connection": "close"}, json={
                    "model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200
        time.sleep(1.5)                              # every worker has written its snapshot
        totals: dict[int, float] = {}
        for _ in range(40):                          # each worker, asked on one connection, sees all 10
            with httpx2.Client() as client:
                worker = client.get(daemon.url + "/health").json()["worker"]
                samples = parse_prometheus(client.get(daemon.url + "/metrics").text)
            totals[worker] = sum(v for k, v in samples.items() if k.startswith("ccproxyd_requests_total"))
            if len(totals) == 2:
                break
        assert len(totals) == 2 and set(totals.values()) == {10}
        text = httpx2.get(daemon.url + "/metrics").text             # gauges: one sample per worker
        for pid in totals:
            assert f'ccproxyd_reloads{{result="accepted",worker="{pid}"}} 0' in text, text
        family, finished = None, set()                               # each family in one block
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            name = line.split("{")[0].split(" ")[0]
            for suffix in ("_bucket", "_sum", "_count"):
                name = name.removesuffix(suffix) if "duration" in name or "first_token" in name else name
            if name != family:
                finished.add(family)
                family = name
                assert family not in finished, f"{family} appears in two blocks"
        assert (tmp_path / "d.log").read_text().count("ccproxyd.access: {") == 10   # workers log too
    finally:
        daemon.stop()


def test_sighup_with_workers_reaches_every_worker(tmp_path, fake):
    """systemd's ExecReload sends SIGHUP to the manager: it must survive and pass it on."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()))
    daemon = Daemon(routes, extra_args=("--no-cache", "--workers", "2"), log_path=tmp_path / "d.log")
    try:
        workers = set()
        for _ in range(100):                         # both workers are up (handlers installed)
            with httpx2.Client() as client:
                workers.add(client.get(daemon.url + "/health").json()["worker"])
            if len(workers) == 2:
                break
        assert len(workers) == 2
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                f"SIGHUP: worker {pid} still serving" in (tmp_path / "d.log").read_text() for pid in workers):
            time.sleep(0.1)
        log = (tmp_path / "d.log").read_text()
        assert all(f"SIGHUP: worker {pid} still serving" in log for pid in workers), log[-2000:]
        assert daemon.proc.poll() is None
        assert httpx2.get(daemon.url + "/health").status_code == 200
    finally:
        daemon.stop()


def test_port_in_use_is_one_clear_line(tmp_path, fake):
    import subprocess
    import sys

    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "ccproxyd", "serve", "--routes", str(routes), "--port",
                                 str(port), "--no-cache"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_watchdog_is_answered_by_the_main_process_or_its_workers(monkeypatch):
    import os

    from ccproxyd.server import notify

    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    for pid, expected in ((os.getpid(), 15.0), (os.getppid(), 15.0), (999999999, None)):
        monkeypatch.setenv("WATCHDOG_PID", str(pid))
        assert notify.watchdog_interval() == expected
    monkeypatch.delenv("WATCHDOG_USEC")
    assert notify.watchdog_interval() is None


def test_sigterm_closes_the_listener_at_once_and_cuts_late_streams(tmp_path, fake):
    """The listener closes on SIGTERM and idle connections with it; a stream that ends within the
    drain is complete; every stream still running at the deadline ends with an error event."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()))
    daemon = Daemon(routes, extra_args=("--no-cache", "--drain-timeout", "2"), log_path=tmp_path / "d.log")
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    scripts = {                                                  # by the request's text: threads may reach
        "slow": Script(events=[chunk({"content": "a"}), 8.0, chunk({"content": "b"}), chunk(finish="stop")]),
        "quick": Script(events=[chunk({"content": "quick"}), 0.5, chunk(finish="stop")]),   # the fake in any order
        "waiting": Script(events=[chunk({"content": "late"}), chunk(finish="stop")], first_byte_delay=8.0),
    }
    fake.responder = lambda request: scripts[request["messages"][-1]["content"]]
    results: dict[str, bytes] = {}

    def stream(name: str) -> None:
        said = dict(body, messages=[{"role": "user", "content": name}])
        results[name] = httpx2.post(daemon.url + "/v1/messages", timeout=20, json=said).content
    slow = threading.Thread(target=stream, args=("slow",))
    slow.start()
    time.sleep(0.3)
    quick = threading.Thread(target=stream, args=("quick",))
    quick.start()
    time.sleep(0.1)
    waiting = threading.Thread(target=lambda: results.__setitem__("waiting", httpx2.post(
        daemon.url + "/v1/messages", timeout=20, json=dict(
        body, stream=False, messages=[{"role": "user", "content": "waiting"}]))))
    waiting.start()                                          # its upstream has not answered at the deadline
    kept = httpx2.Client(base_url=daemon.url, timeout=10)
    assert kept.get("/health").status_code == 200            # a kept-alive connection, opened before
    wait_for(lambda: len(fake.requests) == 3)                # all three in flight before SIGTERM, whatever
    time.sleep(0.2)                                          # order they reached the daemon in
    t0 = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    refused_after, draining_then = None, None
    while time.monotonic() - t0 < 2:
        try:
            socket.create_connection(("127.0.0.1", daemon.port), timeout=0.2).close()
        except OSError:
            refused_after, draining_then = time.monotonic() - t0, "slow" not in results
            break
        time.sleep(0.02)
    try:                                                     # an idle kept-alive connection is closed at once
        late = kept.post("/v1/messages", json=body).status_code
    except httpx2.TransportError:
        late = "refused"
    assert daemon.proc.wait(10) == 0
    stopped_after = time.monotonic() - t0
    slow.join(5)
    quick.join(5)
    waiting.join(5)
    kept.close()
    daemon.log.close()
    assert refused_after is not None and draining_then, refused_after   # refused while streams drain
    assert late in ("refused", 529)
    assert check_stream(parse_sse(results["quick"])) == "complete"     # finished within the drain
    assert results["waiting"].status_code == 529 and results["waiting"].json()["error"]["type"] == "overloaded_error"
    events = parse_sse(results["slow"])
    assert check_stream(events) == "error" and events[-1][1]["error"]["type"] == "overloaded_error"
    assert 2 <= stopped_after < 2 + 4
    assert "Traceback" not in (tmp_path / "d.log").read_text()


def test_the_daemon_loads_no_cryptography(tmp_path, fake):
    """Sanic imports trustme, and with it cryptography (10 MB of memory in each worker), wherever
    trustme is installed; the tests make their certificates with cryptography itself, which
    nothing in the daemon imports."""
    import importlib.util
    assert importlib.util.find_spec("cryptography") is not None  # installed here: the check means something
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()))
    daemon = Daemon(routes)
    try:
        assert httpx2.get(daemon.url + "/health").status_code == 200
        maps = open(f"/proc/{daemon.proc.pid}/maps").read()
    finally:
        daemon.stop()
    assert "/cryptography/" not in maps and "/trustme/" not in maps
    assert "/uvloop/" in maps                                      # the maps do name loaded packages

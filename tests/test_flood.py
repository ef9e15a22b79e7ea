"""A flood of slow connections up to the daemon's file limit does not lock other clients out,
and clients that hang up mid-request leave DEBUG lines, not tracebacks."""

from __future__ import annotations

import socket
import time

import httpx2

from .conftest import TEST_ROUTES, Daemon, free_port
from .fake_upstream import text_script

FILE_LIMIT = 256


def test_slow_connections_up_to_the_file_limit_do_not_lock_clients_out(tmp_path, fake):
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()))
    daemon = Daemon(routes, file_limit=FILE_LIMIT, log_path=tmp_path / "d.log")
    slow: list[socket.socket] = []
    try:
        for i in range(FILE_LIMIT + 100):                # more than the daemon can hold
            try:
                sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=2)
            except OSError:
                continue
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-le")   # and never the rest
            slow.append(sock)
        served = 0
        with httpx2.Client(base_url=daemon.url, timeout=10) as client:
            for i in range(30):
                fake.push(text_script("still served"))
                r = client.post("/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 10,
                                                     "messages": [{"role": "user", "content": f"q{i}"}]})
                served += r.status_code == 200 and r.json()["content"][0]["text"] == "still served"
        assert served == 30
        held = 0
        for sock in slow:                                # which slow connections the daemon still holds
            sock.setblocking(False)
            try:
                held += sock.recv(1) != b""
            except BlockingIOError:
                held += 1
            except OSError:
                pass
        metrics = httpx2.get(daemon.url + "/metrics").text
        assert "ccproxyd_connections_evicted_total" in metrics
        print("held", held, "of", len(slow))
        assert 0 < held <= FILE_LIMIT * 3 // 4
    finally:
        for sock in slow:
            sock.close()
        daemon.stop()


def test_a_client_that_hangs_up_mid_request_is_not_a_traceback(tmp_path, fake):
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()))
    daemon = Daemon(routes, log_path=tmp_path / "d.log")
    try:
        for head in (b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"model\":",
                     b"POST /v1/messages HTTP/1.1\r\nhos", b"GET /hea"):
            with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
                sock.sendall(head)
        time.sleep(0.5)
        assert httpx2.get(daemon.url + "/health").status_code == 200
    finally:
        daemon.stop()
    log = (tmp_path / "d.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log

"""The production path: ccproxyd against TLS upstreams (HTTP/2 and HTTP/1.1), certificates made at
test time, an HTTP CONNECT proxy on loopback.  Every peer is a real server; nothing is patched.

The SDK conformance tests also run over TLS (conftest.UPSTREAM_KINDS); this module holds the cases
of the TLS and HTTP/2 path itself: trust (ca_file, SSL_CERT_FILE, an untrusted certificate),
GOAWAY, RST_STREAM, resets, stale pooled connections, the server's stream limit, pooling and
retirement on reload, and outbound proxies.
"""

from __future__ import annotations

import json
import threading

import httpx2
import pytest

from .conftest import Daemon
from .fake_proxy import ConnectProxy
from .fake_tls import TlsFakeUpstream
from .fake_upstream import GOAWAY, RESET, Barrier, FakeUpstream, Gate, Script, chunk, text_script, usage
from .grammar import check_stream, parse_sse
from .support import wait_for

MODEL = "{{provider: {p}, upstream: up-{p}, context_window: 1000, max_output_tokens: 100}}"


def table(providers: dict[str, str]) -> str:
    """A routing table: one model per provider, routed from the client model `claude-<provider>`."""
    lines = ["providers:"]
    lines += [f"  {name}: {{{spec}, api_key_env: MOCK_KEY}}" for name, spec in providers.items()]
    lines += ["models:"] + [f"  m-{name}: " + MODEL.format(p=name) for name in providers]
    lines += ["routes:"] + [f"  - {{match: claude-{name}, model: m-{name}}}" for name in providers]
    return "\n".join(lines) + "\n"


def post(daemon: Daemon, provider: str, **kwargs) -> httpx2.Response:
    body = {"model": f"claude-{provider}", "max_tokens": 10, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    return httpx2.post(daemon.url + "/v1/messages", json=body, timeout=30, **kwargs)


def access_line(daemon: Daemon, request_id: str) -> dict:
    """The request's access log line (written once its answer has gone out)."""
    def find() -> dict | None:
        for line in daemon.log_path.read_text().splitlines():
            if "ccproxyd.access: " in line:
                entry = json.loads(line.split("ccproxyd.access: ", 1)[1])
                if entry["request_id"] == request_id:
                    return entry
        return None
    wait_for(find)
    return find()


def text_of(events: list[tuple[str, dict]]) -> str:
    return "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")


@pytest.fixture(scope="module")
def tls_fake(certificates):
    fake = TlsFakeUpstream(http2=True, certificates=certificates).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def narrow_fake(certificates):
    """An HTTP/2 server that allows two concurrent streams per connection."""
    fake = TlsFakeUpstream(http2=True, max_streams=2, certificates=certificates).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def tls_daemon(tls_fake, narrow_fake, certificates, tmp_path_factory):
    ca = certificates.ca_file
    path = tmp_path_factory.mktemp("tls") / "routes.yaml"
    path.write_text(table({
        "h2": f"base_url: '{tls_fake.url}', ca_file: '{ca}', http2: true",
        "h1": f"base_url: '{tls_fake.url}', ca_file: '{ca}', http2: false",
        "untrusted": f"base_url: '{tls_fake.url}', http2: true",
        "untrusted-h1": f"base_url: '{tls_fake.url}', http2: false",
        "narrow": f"base_url: '{narrow_fake.url}', ca_file: '{ca}', http2: true",
    }))
    daemon = Daemon(path)
    yield daemon
    daemon.stop()


@pytest.fixture
def tfake(tls_fake):
    tls_fake.reset()
    yield tls_fake
    tls_fake.reset()


# ---------------------------------------------------------------- trust

@pytest.mark.parametrize("provider", ["untrusted", "untrusted-h1"])
def test_untrusted_certificate_is_a_clear_error_and_not_retried(tls_daemon, tfake, provider):
    r = post(tls_daemon, provider)
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["type"] == "api_error"
    assert f"provider '{provider}'" in error["message"]
    assert "certificate" in error["message"] and "verif" in error["message"]
    assert "ca_file" in error["message"]
    assert r.headers["x-should-retry"] == "false"
    assert access_line(tls_daemon, r.headers["request-id"])["attempts"] == 1
    breaker = httpx2.get(tls_daemon.url + "/health").json()["providers"][provider]
    assert breaker["consecutive_failures"] == 0 and breaker["state"] == "closed"
    assert tfake.requests == []


def test_ssl_cert_file_is_trusted_by_both_clients(tls_fake, certificates, tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(table({"h2": f"base_url: '{tls_fake.url}', http2: true",
                           "h1": f"base_url: '{tls_fake.url}', http2: false"}))
    daemon = Daemon(path, env={"SSL_CERT_FILE": str(certificates.ca_file)})
    try:
        for provider in ("h2", "h1"):
            r = post(daemon, provider)
            assert r.status_code == 200, r.text
            assert check_stream(parse_sse(r.content)) == "complete"
    finally:
        daemon.stop()
    assert [c["protocol"] for c in tls_fake.connections[-2:]] == ["h2", "http/1.1"]


def test_relative_ca_file_and_a_bad_one_in_check(certificates, tmp_path):
    import subprocess
    import sys

    (tmp_path / "ca.pem").write_bytes(certificates.ca_file.read_bytes())
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    good = tmp_path / "good.yaml"
    good.write_text(table({"p": "base_url: 'https://127.0.0.1:1/v1', ca_file: ca.pem"}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(table({"p": "base_url: 'https://127.0.0.1:1/v1', ca_file: junk.pem",
                          "q": "base_url: 'https://127.0.0.1:1/v1', ca_file: /nonexistent/ca.pem"}))
    env = {"MOCK_KEY": "x", "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-m", "ccproxyd", "check", str(good)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = subprocess.run([sys.executable, "-m", "ccproxyd", "check", str(bad)], capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert f"{bad}:2:" in out.stdout and "providers.p.ca_file: not a PEM bundle" in out.stdout
    assert "providers.q.ca_file: no such file: /nonexistent/ca.pem" in out.stdout


def test_a_ca_file_gone_after_load_is_named_in_the_error(tls_fake, certificates, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(certificates.ca_file.read_bytes())
    path = tmp_path / "routes.yaml"
    path.write_text(table({"p": f"base_url: '{tls_fake.url}', ca_file: ca.pem"}))
    daemon = Daemon(path)
    try:
        ca.unlink()                                     # valid at load, gone at the first request
        r = post(daemon, "p")
        assert r.status_code == 500
        assert f"provider 'p': cannot load ca_file {ca}" in r.json()["error"]["message"]
    finally:
        daemon.stop()


# ---------------------------------------------------------------- HTTP/2 connection life

def test_https_speaks_http11_by_default_and_http2_true_selects_http2(tls_fake, certificates, tmp_path):
    tls_fake.reset()
    plain = FakeUpstream().start()
    path = tmp_path / "routes.yaml"
    path.write_text(table({"default": f"base_url: '{tls_fake.url}', ca_file: '{certificates.ca_file}'",
                           "withh2": f"base_url: '{tls_fake.url}', ca_file: '{certificates.ca_file}', http2: true",
                           "plain": f"base_url: '{plain.url}', http2: true"}))
    daemon = Daemon(path)
    try:
        for provider in ("default", "withh2", "plain"):
            r = post(daemon, provider)
            assert r.status_code == 200 and check_stream(parse_sse(r.content)) == "complete", r.text
    finally:
        daemon.stop()
        plain.stop()
    used = [tls_fake.connections[r["connection"] - 1]["protocol"] for r in tls_fake.requests]
    assert used == ["http/1.1", "h2"]
    assert [c["protocol"] for c in plain.connections] == ["http/1.1"]     # plain http never speaks h2c


def test_connections_are_reused_across_requests(tls_daemon, tfake):
    for provider in ("h2", "h1", "h2", "h1", "h2", "h1"):
        assert post(tls_daemon, provider).status_code == 200
    h2 = {r["connection"] for r in tfake.requests[0::2]}
    h1 = {r["connection"] for r in tfake.requests[1::2]}
    assert len(h2) == 1 and len(h1) == 1 and h2 != h1
    assert tfake.connections[min(h2) - 1]["protocol"] == "h2"
    streams = [r["stream"] for r in tfake.requests[0::2]]
    assert streams == sorted(set(streams))              # three streams of one HTTP/2 connection


def test_goaway_between_requests_moves_to_a_new_connection(tls_daemon, tfake):
    script = text_script("before", " goaway")
    script.events.append(GOAWAY)                     # after the last chunk, before the end of the stream
    tfake.push(script)
    first = post(tls_daemon, "h2")
    assert text_of(parse_sse(first.content)) == "before goaway"
    second = post(tls_daemon, "h2")
    assert second.status_code == 200 and check_stream(parse_sse(second.content)) == "complete"
    assert tfake.requests[0]["connection"] != tfake.requests[1]["connection"]
    assert tfake.connections[tfake.requests[0]["connection"] - 1]["goaway"]
    assert access_line(tls_daemon, second.headers["request-id"])["attempts"] == 1


def test_goaway_during_a_stream_lets_it_finish(tls_daemon, tfake):
    """A graceful GOAWAY (a server rotating its connections) names the streams it will still
    finish: the one in flight must complete, and the next request goes to a new connection."""
    gate = Gate()
    tfake.push(Script(events=[chunk({"content": "one"}), GOAWAY, gate, chunk({"content": " two"}),
                              chunk(finish="stop"), chunk(choices=False, usage=usage())]),
               text_script("meanwhile"))
    body = {"model": "claude-h2", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx2.Client(timeout=30) as client:
        with client.stream("POST", tls_daemon.url + "/v1/messages", json=body) as streaming:
            received = b""
            pieces = streaming.iter_raw()
            while b"content_block_delta" not in received:
                received += next(pieces)
            meanwhile = client.post(tls_daemon.url + "/v1/messages", json=body)
            gate.open()
            received += b"".join(pieces)
    assert meanwhile.status_code == 200 and text_of(parse_sse(meanwhile.content)) == "meanwhile"
    events = parse_sse(received)
    assert check_stream(events) == "complete", events[-1]
    assert text_of(events) == "one two"
    assert tfake.requests[0]["connection"] != tfake.requests[1]["connection"]


def test_rst_stream_mid_stream_ends_in_an_error_event_and_keeps_the_connection(tls_daemon, tfake):
    tfake.push(Script(events=[chunk({"content": "partial"}), RESET]))
    events = parse_sse(post(tls_daemon, "h2").content)
    assert check_stream(events) == "error"
    assert "message_stop" not in [n for n, _ in events]
    after = post(tls_daemon, "h2")
    assert check_stream(parse_sse(after.content)) == "complete"
    assert tfake.requests[0]["connection"] == tfake.requests[1]["connection"]   # only the stream was reset


@pytest.mark.parametrize("provider", ["h2", "h1"])
def test_a_reset_connection_before_the_answer_is_dialled_again(tls_daemon, tfake, provider):
    tfake.push(Script(drop=True))
    r = post(tls_daemon, provider)
    assert r.status_code == 200 and check_stream(parse_sse(r.content)) == "complete"
    assert len(tfake.requests) == 2
    assert tfake.requests[0]["connection"] != tfake.requests[1]["connection"]
    assert access_line(tls_daemon, r.headers["request-id"])["attempts"] == 1


@pytest.mark.parametrize("provider", ["h2", "h1"])
def test_a_stale_pooled_connection_is_not_the_clients_problem(tls_daemon, tfake, provider):
    assert post(tls_daemon, provider).status_code == 200
    tfake.close_idle()                                # the server's idle timeout, while ccproxyd pools it
    wait_for(lambda: tfake.connections[tfake.requests[0]["connection"] - 1]["closed"])
    r = post(tls_daemon, provider)
    assert r.status_code == 200 and check_stream(parse_sse(r.content)) == "complete"
    assert tfake.requests[0]["connection"] != tfake.requests[-1]["connection"]


def test_concurrent_streams_respect_the_servers_stream_limit(tls_daemon, narrow_fake):
    """Six streams at once to a server that allows two per connection: all six are in flight at the
    same time (a Barrier holds each answer until all have arrived), on three connections."""
    narrow_fake.reset()
    barrier = Barrier(6, timeout=3.0)
    narrow_fake.responder = lambda body: Script(events=[chunk({"content": "x"}), barrier, chunk(finish="stop")])
    assert concurrently(tls_daemon, "narrow", 6) == [200] * 6
    assert all(not c["errors"] for c in narrow_fake.connections)          # never over the limit
    assert narrow_fake.peak_in_flight == 6
    used = {r["connection"] for r in narrow_fake.requests}
    assert len(used) == 3


def concurrently(daemon: Daemon, provider: str, n: int) -> list[int]:
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(post(daemon, provider).status_code)) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_http11_pool_keeps_one_connection_per_concurrent_stream_and_reuses_them(tls_daemon, tfake):
    """The default client: four streams at once take four connections (a Barrier proves they were
    in flight together); the next four at once reuse those four, and no more are opened."""
    for _ in range(2):
        barrier = Barrier(4)
        tfake.responder = lambda body, barrier=barrier: Script(events=[chunk({"content": "x"}), barrier,
                                                                       chunk(finish="stop")])
        assert concurrently(tls_daemon, "h1", 4) == [200] * 4
        assert barrier.arrived == 4 and tfake.peak_in_flight >= 4
    first, second = tfake.requests[:4], tfake.requests[4:]
    assert len({r["connection"] for r in first}) == 4
    assert {r["connection"] for r in second} == {r["connection"] for r in first}


# ---------------------------------------------------------------- reload retires the pool

@pytest.mark.parametrize("http2", ["true", "false"])
def test_reload_retires_a_changed_providers_pool_after_its_last_request(tls_fake, certificates, tmp_path, http2):
    tls_fake.reset()
    path = tmp_path / "routes.yaml"
    spec = f"base_url: '{tls_fake.url}', ca_file: '{certificates.ca_file}', http2: {http2}"
    path.write_text(table({"h2": spec}))
    daemon = Daemon(path)
    try:
        gate = Gate()
        tls_fake.push(Script(events=[chunk({"content": "old"}), gate, chunk(finish="stop")]))
        slow: list[httpx2.Response] = []
        thread = threading.Thread(target=lambda: slow.append(post(daemon, "h2")))
        thread.start()
        assert gate.reached.wait(20)
        old = tls_fake.requests[0]["connection"]
        version = httpx2.get(daemon.url + "/health").json()["routes"]["version"]
        path.write_text(table({"h2": spec + ", headers: {X-Table: two}"}))
        wait_for(lambda: httpx2.get(daemon.url + "/health").json()["routes"]["version"] != version)
        fresh = post(daemon, "h2")
        assert fresh.status_code == 200
        assert tls_fake.requests[1]["headers"]["x-table"] == "two"
        assert tls_fake.requests[1]["connection"] != old
        assert not tls_fake.connections[old - 1]["closed"]        # still carrying the old request
        gate.open()
        thread.join(30)
        assert slow[0].status_code == 200 and text_of(parse_sse(slow[0].content)) == "old"
        wait_for(lambda: tls_fake.connections[old - 1]["closed"])  # retired after its last request
        assert not tls_fake.connections[tls_fake.requests[1]["connection"] - 1]["closed"]
    finally:
        daemon.stop()


# ---------------------------------------------------------------- outbound proxy

@pytest.fixture
def connect_proxy():
    proxy = ConnectProxy().start()
    yield proxy
    proxy.stop()


def test_https_proxy_and_no_proxy(tls_fake, certificates, connect_proxy, tmp_path):
    """HTTPS_PROXY tunnels both clients through CONNECT; NO_PROXY sends a host direct; HTTP_PROXY
    takes a plain http provider in absolute form."""
    tls_fake.reset()
    plain = FakeUpstream().start()
    ca = certificates.ca_file
    via = tls_fake.url.replace("127.0.0.1", "localhost")
    path = tmp_path / "routes.yaml"
    path.write_text(table({"via-h2": f"base_url: '{via}', ca_file: '{ca}', http2: true",
                           "via-h1": f"base_url: '{via}', ca_file: '{ca}', http2: false",
                           "direct": f"base_url: '{tls_fake.url}', ca_file: '{ca}', http2: true",
                           "plain": f"base_url: '{plain.url.replace('127.0.0.1', 'localhost')}'"}))
    daemon = Daemon(path, env={"HTTPS_PROXY": connect_proxy.url, "http_proxy": connect_proxy.url,
                               "NO_PROXY": "127.0.0.1,example.internal"})
    try:
        for provider in ("via-h2", "via-h1", "direct", "plain"):
            r = post(daemon, provider)
            assert r.status_code == 200, (provider, r.text)
            assert check_stream(parse_sse(r.content)) == "complete"
    finally:
        daemon.stop()
        plain.stop()
    port = tls_fake.url.split(":")[2].split("/")[0]
    assert connect_proxy.tunnels == [f"localhost:{port}", f"localhost:{port}"]
    assert [c["protocol"] for c in tls_fake.connections[-3:]] == ["h2", "http/1.1", "h2"]
    assert len(connect_proxy.forwarded) == 1 and connect_proxy.forwarded[0].endswith("/v1/chat/completions")


def test_a_proxy_that_refuses_the_tunnel_is_named(tls_fake, certificates, connect_proxy, tmp_path):
    connect_proxy.refuse = 403
    path = tmp_path / "routes.yaml"
    ca = certificates.ca_file
    path.write_text(table({"h2": f"base_url: '{tls_fake.url}', ca_file: '{ca}', http2: true, retries: {{attempts: 1}}",
                           "h1": f"base_url: '{tls_fake.url}', ca_file: '{ca}', http2: false, retries: {{attempts: 1}}"}))
    daemon = Daemon(path, env={"HTTPS_PROXY": connect_proxy.url})
    try:
        for provider in ("h2", "h1"):
            r = post(daemon, provider)
            assert r.status_code == 500, r.text
            assert "outbound proxy refused" in r.json()["error"]["message"] and "403" in r.json()["error"]["message"]
    finally:
        daemon.stop()


@pytest.mark.parametrize("env,url,expected", [
    ({"HTTPS_PROXY": "http://proxy:3128"}, "https://api.openai.com/v1", "http://proxy:3128"),
    ({"https_proxy": "proxy:3128"}, "https://api.openai.com/v1", "http://proxy:3128"),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "http://127.0.0.1:8000/v1", None),
    ({"HTTP_PROXY": "http://p:1"}, "http://vllm.internal:8000/v1", "http://p:1"),
    ({"ALL_PROXY": "http://all:1"}, "https://api.x.ai/v1", "http://all:1"),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "openai.com"}, "https://api.openai.com/v1", None),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".openai.com,localhost"}, "https://api.openai.com/v1", None),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "https://openrouter.ai/api/v1", None),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ai.com"}, "https://openrouter.ai/api/v1", "http://p:1"),
    ({}, "https://api.openai.com/v1", None),
])
def test_proxy_for_reads_the_standard_variables(monkeypatch, env, url, expected):
    from ccproxyd.upstream.pool import proxy_for
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url) == expected


def test_a_socks_proxy_is_refused_by_name(monkeypatch):
    from ccproxyd.errors import ApiError
    from ccproxyd.upstream.pool import proxy_for
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ApiError, match="socks5"):
        proxy_for("https://api.openai.com/v1")

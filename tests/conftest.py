from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import pytest

from .fake_tls import Certificates, TlsFakeUpstream
from .fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
CANARY = "sk-mock-canary-3f9a"          # the provider key every test daemon holds; must never leak

TEST_ROUTES = """
providers:
  mock:
    base_url: {url}
    api_key_env: MOCK_KEY
  nokey:
    base_url: {url}
    api_key_env: CCPROXYD_TEST_UNSET_KEY
  dead:
    base_url: http://127.0.0.1:{dead_port}/v1
    connect_timeout: 2
  flaky:
    base_url: {url}
    retries: {{attempts: 1}}
    breaker: {{threshold: 1000}}
  limited:
    base_url: {url}
  cool:
    base_url: {url}
    headers: {{User-Agent: team-proxy/1, X-Title: ccproxyd-tests}}
  slow:
    base_url: {url}
    read_timeout: 0.5
    retries: {{attempts: 2, backoff_base: 0.01}}
  narrow:
    base_url: {url}
    max_concurrency: 1
  probe:
    base_url: {url}
    retries: {{attempts: 1}}
    breaker: {{threshold: 1, cooldown: 0.3}}
  sick:
    base_url: {url}
    retries: {{attempts: 3, backoff_base: 0.01, backoff_cap: 0.02}}
    breaker: {{threshold: 5, cooldown: 30}}
models:
  flaky-model: {{provider: flaky, upstream: flaky-up, context_window: 200000, max_output_tokens: 100}}
  limited-model: {{provider: limited, upstream: limited-up, context_window: 200000, max_output_tokens: 100}}
  cool-model: {{provider: cool, upstream: cool-up, context_window: 200000, max_output_tokens: 100}}
  slow-model: {{provider: slow, upstream: slow-up, context_window: 200000, max_output_tokens: 100}}
  narrow-model: {{provider: narrow, upstream: narrow-up, context_window: 200000, max_output_tokens: 100}}
  probe-model: {{provider: probe, upstream: probe-up, context_window: 200000, max_output_tokens: 100}}
  sick-model: {{provider: sick, upstream: sick-up, context_window: 200000, max_output_tokens: 100}}
  gpt-mock:
    provider: mock
    context_window: 128000
    max_output_tokens: 16384
  reasoner-mock:
    provider: mock
    upstream: reasoner-up
    context_window: 128000
    max_output_tokens: 32000
    reasoning: true
    reasoning_replay: reasoning_content
  gpt5-mock:
    provider: mock
    upstream: gpt-5-up
    api: responses
    web_search: openai
    context_window: 400000
    max_output_tokens: 128000
    reasoning: true
  or-search-mock:
    provider: mock
    upstream: or-search-up
    web_search: openrouter
    context_window: 128000
    max_output_tokens: 16384
    prices: [{{input: 1.0, output: 2.0, web_search_per_1k: 4.0}}]
  grok-search-mock:
    provider: mock
    upstream: grok-search-up
    api: responses
    web_search: xai
    context_window: 128000
    max_output_tokens: 16384
  counted-mock:
    provider: mock
    upstream: counted-up
    context_window: 128000
    max_output_tokens: 16384
    stream_usage: false
  dead-model:
    provider: dead
    context_window: 128000
    max_output_tokens: 16384
  dead-search-model:
    provider: dead
    web_search: openrouter
    context_window: 128000
    max_output_tokens: 16384
  nokey-model:
    provider: nokey
    context_window: 128000
    max_output_tokens: 16384
aliases:
  claude-via-limited: limited-model
  claude-via-reasoner: reasoner-mock
routes:
  - match: "claude-flaky*"
    model: flaky-model
  - match: "claude-limited*"
    model: limited-model
  - match: "claude-cool*"
    model: cool-model
  - match: "claude-slow*"
    model: slow-model
  - match: "claude-narrow*"
    model: narrow-model
  - match: "claude-probe*"
    model: probe-model
  - match: "claude-sick*"
    model: sick-model
    fallbacks: [gpt-mock]
  - match: "claude-reasoner*"
    model: reasoner-mock
  - match: "claude-responses*"
    model: gpt5-mock
  - match: "claude-or-search*"
    model: or-search-mock
  - match: "claude-grok-search*"
    model: grok-search-mock
  - match: "claude-fallback*"
    model: dead-model
    fallbacks: [gpt-mock]
  - match: "claude-dead-search*"
    model: dead-search-model
    fallbacks: [gpt-mock]
  - match: "claude-counted*"
    model: counted-mock
  - match: "claude-dead*"
    model: dead-model
  - match: "claude-nokey*"
    model: nokey-model
  - match: "*"
    when: {{subagent: true}}
    model: limited-model
  - match: "*"
    model: gpt-mock
"""


CACHED_ROUTES = """
providers:
  mock: {{base_url: "{url}", api_key_env: MOCK_KEY, {options}}}
models:
  gpt-mock: {{provider: mock, context_window: 128000, max_output_tokens: 16384}}
routes:
  - match: "*"
    model: gpt-mock
    cache: {{ttl: 600}}
"""


def cached_routes(directory: Path, url: str, options: str = "retries: {attempts: 3}") -> Path:
    """A routing table that sends everything, cached, to the fake upstream at `url`."""
    path = directory / "routes.yaml"
    path.write_text(CACHED_ROUTES.format(url=url, options=options))
    return path


# the machine's own proxy and trust settings never reach a test daemon unless a test sets them
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ssl_cert_file", "ssl_cert_dir")


def sdk_message(client, stream: bool, **request):
    """The final message of a request through the anthropic SDK, streamed or not."""
    if stream:
        with client.messages.stream(**request) as s:
            return s.get_final_message()
    return client.messages.create(**request)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """ccproxyd as a real subprocess."""

    def __init__(self, routes_path: Path, env: dict | None = None, extra_args: tuple = ("--no-cache",),
                 log_path: Path | None = None, file_limit: int | None = None, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or routes_path.with_suffix(".log")
        full_env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
        # the spend ledger in the test's own directory, never the user's ~/.local/state
        full_env.update({"MOCK_KEY": CANARY, "XDG_STATE_HOME": tempfile.mkdtemp(prefix="ccproxyd-state-"),
                         **(env or {})})
        full_env.pop("STATE_DIRECTORY", None)
        full_env.pop("CCPROXYD_TEST_UNSET_KEY", None)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ccproxyd", "serve", "--routes", str(routes_path), "--port", str(self.port),
             *extra_args], cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (file_limit, file_limit)))
            if file_limit else None)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ccproxyd exited: {self.log_path.read_text()}")
            try:
                if httpx2.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"ccproxyd did not start: {self.log_path.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        assert CANARY not in self.log_path.read_text(), f"the provider key leaked into {self.log_path}"


# The upstreams a conformance module runs against (`pytestmark = pytest.mark.upstreams(*KINDS)`):
# plain HTTP (the HTTP/1.1 transport, the default for both), TLS over HTTP/1.1 (`http2: false`),
# and TLS with HTTP/2 (`http2: true`: ccproxyd/upstream/http2.py on h2).  Other modules get "http".
UPSTREAM_KINDS = ("http", "https-h1", "https-h2")


def pytest_configure(config):
    config.addinivalue_line("markers", "upstreams(*kinds): run the module's daemon tests against these "
                                       "fake upstreams (http, https-h1, https-h2)")


def pytest_generate_tests(metafunc):
    if "upstream_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("upstreams")
        metafunc.parametrize("upstream_kind", marker.args if marker else ("http",), indirect=True, scope="session")


@pytest.fixture(scope="session")
def upstream_kind(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def certificates(tmp_path_factory) -> Certificates:
    """A CA made for this test run, and a server certificate for 127.0.0.1 and localhost."""
    return Certificates(tmp_path_factory.mktemp("tls"))


def tls_keys(kind: str, ca_file: Path) -> str:
    """The provider keys (YAML, indented for TEST_ROUTES) that point a provider at a TLS fake."""
    if kind == "http":
        return ""
    return f"    ca_file: {ca_file}\n" + f"    http2: {'true' if kind == 'https-h2' else 'false'}\n"


@pytest.fixture(scope="session")
def upstream(upstream_kind, certificates):
    if upstream_kind == "http":
        fake = FakeUpstream().start()
    else:
        fake = TlsFakeUpstream(http2=upstream_kind == "https-h2", certificates=certificates).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def daemon(upstream, upstream_kind, certificates, tmp_path_factory):
    path = tmp_path_factory.mktemp("routes") / "routes.yaml"
    text = TEST_ROUTES.format(url=upstream.url, dead_port=free_port())
    text = text.replace(f"base_url: {upstream.url}\n",
                        f"base_url: {upstream.url}\n" + tls_keys(upstream_kind, certificates.ca_file))
    path.write_text(text)
    d = Daemon(path, extra_args=("--ping-interval", "0.3", "--no-cache"))
    yield d
    d.stop()


@pytest.fixture
def fake(upstream):
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A redis-server of the module's own on a loopback port (team mode's tests, the Redis backends'
    contracts); skipped where redis-server is missing (make test installs it)."""
    import shutil

    from .support import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make test installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()

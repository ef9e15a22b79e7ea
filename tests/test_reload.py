"""Live reload under a request loop: rename, symlink swap, in-place partial writes, broken edits."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx2
import pytest

from .conftest import Daemon
from .support import wait_for

TABLE = """
providers:
  mock:
    base_url: {url}
    api_key_env: MOCK_KEY
models:
  m-a: {{provider: mock, upstream: up-a, context_window: 1000, max_output_tokens: 100}}
  m-b: {{provider: mock, upstream: up-b, context_window: 1000, max_output_tokens: 100}}
  m-c: {{provider: mock, upstream: up-c, context_window: 1000, max_output_tokens: 100}}
  m-d: {{provider: mock, upstream: up-d, context_window: 1000, max_output_tokens: 100}}
routes:
  - match: "*"
    model: {model}
"""
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


class Loop(threading.Thread):
    """Requests back to back until stopped; records every failure."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.count = 0
        self.failures: list[str] = []

    def run(self) -> None:
        with httpx2.Client(timeout=10) as client:
            while not self.stop.is_set():
                r = client.post(self.url + "/v1/messages", json=BODY)
                self.count += 1
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text}")


@pytest.fixture
def live(tmp_path, fake):
    data1 = tmp_path / "data1"
    data1.mkdir()
    (data1 / "routes.yaml").write_text(TABLE.format(url=fake.url, model="m-a"))
    conf = tmp_path / "conf"
    conf.mkdir()
    routes = conf / "routes.yaml"
    routes.symlink_to(data1 / "routes.yaml")
    daemon = Daemon(routes, log_path=tmp_path / "daemon.log")
    loop = Loop(daemon.url)
    loop.start()
    yield daemon, routes, tmp_path, fake, loop
    loop.stop.set()
    loop.join(5)
    daemon.stop()


def health(daemon) -> dict:
    return httpx2.get(daemon.url + "/health").json()


def upstream_model(fake) -> str:
    return fake.requests[-1]["body"]["model"]


def test_reload_under_load(live):
    daemon, routes, tmp, fake, loop = live
    wait_for(lambda: fake.requests and upstream_model(fake) == "up-a")

    # 1. symlink swap, as a Kubernetes ConfigMap update does
    data2 = tmp / "data2"
    data2.mkdir()
    (data2 / "routes.yaml").write_text(TABLE.format(url=fake.url, model="m-b"))
    tmp_link = routes.parent / ".routes.yaml.tmp"
    tmp_link.symlink_to(data2 / "routes.yaml")
    os.replace(tmp_link, routes)
    took = wait_for(lambda: upstream_model(fake) == "up-b")
    assert took < 2.0
    assert health(daemon)["reload"]["accepted"] == 1

    # 2. editor-style save: write a new file, rename it over the old one
    new = routes.parent / "routes.yaml.new"
    new.write_text(TABLE.format(url=fake.url, model="m-c"))
    os.replace(new, routes)
    assert wait_for(lambda: upstream_model(fake) == "up-c") < 2.0
    assert health(daemon)["reload"]["accepted"] == 2

    # 3. in-place write in several chunks: never applied half-written
    text = TABLE.format(url=fake.url, model="m-d")
    with open(routes, "w") as f:
        for i in range(0, len(text), 60):
            f.write(text[i:i + 60])
            f.flush()
            time.sleep(0.03)
    assert wait_for(lambda: upstream_model(fake) == "up-d") < 2.5
    state = health(daemon)["reload"]
    assert state == {"accepted": 3, "rejected": 0, "last_error": None}

    # 4. a broken edit is refused, the old table keeps serving, /health says where
    routes.write_text(TABLE.format(url=fake.url, model="m-nope"))
    wait_for(lambda: health(daemon)["reload"]["rejected"] == 1)
    state = health(daemon)["reload"]
    assert state["last_error"].startswith(f"{routes}:13:12: routes[0]: unknown model 'm-nope'")
    time.sleep(0.3)
    assert upstream_model(fake) == "up-d"
    log = (tmp / "daemon.log").read_text()
    assert f"{routes}:13:12: routes[0]: unknown model 'm-nope'" in log

    # 5. SIGHUP with nothing changed: handled (the daemon lives on), nothing applied twice
    daemon.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert daemon.proc.poll() is None
    assert health(daemon)["reload"]["accepted"] == 3

    loop.stop.set()
    loop.join(5)
    assert loop.count > 50
    assert loop.failures == []


def test_sighup_applies_a_change_the_watcher_cannot_see(tmp_path, fake):
    """The file is a symlink into a directory the watcher does not watch: only SIGHUP applies it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real = elsewhere / "routes.yaml"
    real.write_text(TABLE.format(url=fake.url, model="m-a"))
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "routes.yaml").symlink_to(real)
    daemon = Daemon(conf / "routes.yaml", log_path=tmp_path / "d.log")
    try:
        real.write_text(TABLE.format(url=fake.url, model="m-b"))
        time.sleep(0.6)
        assert health(daemon)["reload"]["accepted"] == 0
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: health(daemon)["reload"]["accepted"] == 1)
        httpx2.post(daemon.url + "/v1/messages", json=BODY)
        assert upstream_model(fake) == "up-b"
    finally:
        daemon.stop()


def test_keys_from_the_credentials_directory_are_read_at_load_and_again_when_they_change(tmp_path, fake):
    """Under systemd (LoadCredential=) a key is a file: read when the table loads, not on each
    request, and read again when the file changes; an echo of either key never leaves."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "FILE_KEY").write_text("sk-file-key-one-0001\n")
    routes = tmp_path / "routes.yaml"
    routes.write_text(TABLE.format(url=fake.url, model="m-a").replace("MOCK_KEY", "FILE_KEY"))
    daemon = Daemon(routes, env={"CREDENTIALS_DIRECTORY": str(credentials)}, log_path=tmp_path / "d.log")
    try:
        assert httpx2.post(daemon.url + "/v1/messages", json=BODY, timeout=10).status_code == 200
        assert fake.requests[-1]["headers"]["authorization"] == "Bearer sk-file-key-one-0001"
        (credentials / "FILE_KEY").write_text("sk-file-key-two-0002\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            httpx2.post(daemon.url + "/v1/messages", json=BODY, timeout=10)
            if fake.requests[-1]["headers"]["authorization"] == "Bearer sk-file-key-two-0002":
                break
            time.sleep(0.1)
        assert fake.requests[-1]["headers"]["authorization"] == "Bearer sk-file-key-two-0002"
        # read at load, not per request: with the directory gone, requests still carry the key
        credentials.rename(tmp_path / "moved-away")
        assert httpx2.post(daemon.url + "/v1/messages", json=BODY, timeout=10).status_code == 200
        assert fake.requests[-1]["headers"]["authorization"] == "Bearer sk-file-key-two-0002"
        from .fake_upstream import Script
        fake.push(Script(status=401, body=b'{"error": {"message": "bad key {authorization}"}}'))
        r = httpx2.post(daemon.url + "/v1/messages", json=BODY, timeout=10)
        assert "sk-file-key" not in r.text and "[redacted]" in r.text
    finally:
        daemon.stop()
    log = (tmp_path / "d.log").read_text()
    assert "sk-file-key" not in log and "credentials changed" in log

"""The response cache is an optimisation, never a failure: a cache database damaged while the
daemon runs (overwritten, truncated, deleted) costs at most the requests in flight, is logged
once, and is set aside and rebuilt without a restart; a cache directory that cannot be created
at start leaves a daemon that serves without it."""

from __future__ import annotations

import os
import time

import httpx2
import pytest

from ccproxyd.state.answers import Store

from .conftest import Daemon, cached_routes
from .fake_upstream import text_script
from .grammar import check_stream, parse_sse



def damage(directory: str, how: str) -> None:
    database = os.path.join(directory, "cache.db")
    size = os.path.getsize(database)
    if how == "overwritten":
        with open(database, "r+b") as f:
            f.write(os.urandom(max(size, 65536)))
    elif how == "truncated":
        with open(database, "r+b") as f:
            f.truncate(size // 3)
            f.seek(0)
            f.write(b"\0" * 100)
    elif how == "deleted":
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                os.unlink(path)


def ask(daemon: Daemon, question: str, stream: bool = True) -> httpx2.Response:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": question}]}
    return httpx2.post(daemon.url + "/v1/messages", json=body, timeout=30)


@pytest.mark.parametrize("how", ["overwritten", "truncated", "deleted"])
def test_damage_while_running_costs_nothing_and_the_store_comes_back(upstream, fake, tmp_path, how):
    routes = cached_routes(tmp_path, upstream.url)
    cache_dir = str(tmp_path / "cache")
    daemon = Daemon(routes, extra_args=("--cache-dir", cache_dir))
    try:
        for i in range(5):
            assert ask(daemon, f"warm {i}").headers["x-ccproxyd-cache"] == "miss"
        time.sleep(0.3)                                       # the writer has committed them
        assert ask(daemon, "warm 0").headers["x-ccproxyd-cache"] == "hit"
        damage(cache_dir, how)
        answered = 0
        for i in range(12):                                   # repeated and new questions alike
            r = ask(daemon, f"warm {i % 6}", stream=i % 2 == 0)
            assert r.status_code == 200, r.text
            if r.headers["content-type"].startswith("text/event-stream"):
                assert check_stream(parse_sse(r.content)) == "complete"
            else:
                assert r.json()["content"][0]["text"] == "Hello from fake"
            answered += 1
        assert answered == 12
        assert httpx2.get(daemon.url + "/metrics").status_code == 200
        # rebuilt without a restart: a new answer is stored and served as a hit again
        for _ in range(50):
            if httpx2.get(daemon.url + "/health").json()["cache"]["state"] == "up":
                break
            time.sleep(0.1)
        ask(daemon, "after the damage")
        time.sleep(0.3)
        assert ask(daemon, "after the damage").headers["x-ccproxyd-cache"] == "hit"
        log = daemon.log_path.read_text()
        assert log.count("is damaged") <= 1, log
        assert "Traceback" not in log
    finally:
        daemon.stop()


def test_a_cache_directory_that_cannot_be_made_leaves_a_working_daemon(upstream, fake, tmp_path):
    routes = cached_routes(tmp_path, upstream.url)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    daemon = Daemon(routes, extra_args=("--cache-dir", str(blocker / "cache")))
    try:
        for _ in range(2):
            r = ask(daemon, "no cache")
            assert r.status_code == 200 and check_stream(parse_sse(r.content)) == "complete"
        assert httpx2.get(daemon.url + "/health").json()["cache"]["state"] == "down"
        assert httpx2.get(daemon.url + "/metrics").status_code == 200
        log = daemon.log_path.read_text()
        assert log.count("cannot open the response cache") == 1 and str(blocker / "cache") in log
    finally:
        daemon.stop()


def test_store_sets_a_damaged_database_aside_at_open(tmp_path):
    directory = str(tmp_path / "c")
    store = Store(directory)
    store.put("k", {"content": []}, ttl=600)
    store.close()
    with open(os.path.join(directory, "cache.db"), "wb") as f:
        f.write(b"this is not a database" * 100)
    store = Store(directory)
    assert store.available and store.get("k") is None
    store.put("k2", {"content": []}, ttl=600)
    assert store.get("k2") == {"content": []}
    assert os.path.exists(os.path.join(directory, "damaged", "cache.db"))
    store.close()


def test_an_answer_too_deep_to_write_is_left_out_and_its_batch_stored(tmp_path):
    """A model's tool input deeper than orjson writes (it reads 1024 levels, writes 254): that
    answer is not stored; the others written with it are (the batch was lost before)."""
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    store = Store(str(tmp_path / "c"))
    store.put_many([("a", {"content": []}, 600.0),
                    ("deep", {"content": [{"type": "tool_use", "input": {"x": deep}}]}, 600.0),
                    ("b", {"content": [{"type": "text", "text": "kept"}]}, 600.0)])
    assert store.get("a") == {"content": []} and store.get("b")["content"][0]["text"] == "kept"
    assert store.get("deep") is None
    store.close()

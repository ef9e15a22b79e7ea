"""`ccproxyd prices --refresh`: OpenRouter's models list (a recorded-shape copy, tests/data) served
on loopback -> the override file; a truncated or partial answer changes nothing; `prices` shows
the prices in use with their dates and sources."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RECORDED = (ROOT / "tests" / "data" / "openrouter_models.json").read_bytes()
NOW = "2026-12-07T09:15:00Z"
ROUTES = """
providers:
  openrouter: {base_url: "https://openrouter.ai/api/v1"}
models:
  opus-via-openrouter: {provider: openrouter, upstream: anthropic/claude-opus-5.5, context_window: 1000000,
                        max_output_tokens: 128000}
routes:
  - {match: "*", model: opus-via-openrouter}
"""


class _Serve(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def serve(body: bytes) -> str:
        _Serve.body = body
        return f"http://127.0.0.1:{server.server_address[1]}/api/v1/models"
    yield serve
    server.shutdown()


def prices(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CCPROXYD_NOW": NOW,
           "CCPROXYD_PRICES": str(tmp_path / "prices.yaml")}
    return subprocess.run([sys.executable, "-m", "ccproxyd", "prices", "--routes", str(routes), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def test_refresh_writes_the_override_and_the_daemon_prices_with_it(tmp_path, served):
    result = prices(tmp_path, "--refresh", "--url", served(RECORDED), "opus-via-openrouter")
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load((tmp_path / "prices.yaml").read_text())["openrouter"]["models"]
    entries = {m["id"]: m["pricing"] for m in json.loads(RECORDED)["data"]}
    opus = written["anthropic/claude-opus-5.5"]["rows"][-1]
    # USD per token as strings -> USD per 1M tokens: 0.000004 -> 4, 0.00002 -> 20, 0.0000002 -> 0.2
    assert (opus["input"], opus["output"], opus["cached_input"]) == (4.0, 20.0, 0.2)
    assert opus["since"] == NOW and opus["source"] == "https://openrouter.ai/api/v1/models"
    variable = [i for i, p in entries.items() if p.get("prompt") == "-1"]
    assert all(i not in written for i in variable)              # "-1": billed as the routed model, not a price
    assert "since 2026-12-07T09:15:00Z (in force), openrouter: https://openrouter.ai/api/v1/models" in result.stdout
    assert "$4 in / $20 out / $0.2 cache read" in result.stdout
    again = prices(tmp_path, "--refresh", "--url", served(RECORDED))
    assert again.returncode == 0 and "0 new price rows" in again.stderr          # unchanged prices: no new row


@pytest.mark.parametrize("answer, why", [
    (RECORDED[: len(RECORDED) // 2], "not JSON"),
    (b'{"data": []}', "no `data` list"),
    (json.dumps({"data": [{"id": "a/b"}, {"id": "c/d", "pricing": {}}]}).encode(), "have no readable id and price"),
])
def test_a_bad_answer_changes_nothing_and_says_why(tmp_path, served, answer, why):
    assert prices(tmp_path, "--refresh", "--url", served(RECORDED)).returncode == 0
    before = (tmp_path / "prices.yaml").read_bytes()
    result = prices(tmp_path, "--refresh", "--url", served(answer))
    assert result.returncode == 1 and why in result.stderr and "is unchanged" in result.stderr
    assert (tmp_path / "prices.yaml").read_bytes() == before


def test_a_much_shorter_list_is_taken_for_a_partial_answer(tmp_path, served):
    assert prices(tmp_path, "--refresh", "--url", served(RECORDED)).returncode == 0
    before = (tmp_path / "prices.yaml").read_bytes()
    few = json.dumps({"data": json.loads(RECORDED)["data"][:3]}).encode()
    result = prices(tmp_path, "--refresh", "--url", served(few))
    assert result.returncode == 1 and "a partial answer?" in result.stderr
    assert (tmp_path / "prices.yaml").read_bytes() == before


def test_prices_without_models_lists_the_table_and_each_route_against_claude(tmp_path):
    result = prices(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "catalog: ccproxyd/data/prices.yaml"
    assert "opus-via-openrouter = openrouter:anthropic/claude-opus-5.5" in result.stdout
    assert "routes[0] (*) claude-opus-5-5: opus-via-openrouter" in result.stdout


def test_a_model_priced_nan_is_left_out_and_a_varying_search_price_is_not_a_price(tmp_path, served):
    entries = json.loads(RECORDED)["data"]
    odd = [dict(entries[0], id="odd/nan", pricing={"prompt": "NaN", "completion": "0.000001"}),
           dict(entries[1], id="odd/search", pricing={"prompt": "0.000001", "completion": "0.000002", "web_search": "-1"})]
    result = prices(tmp_path, "--refresh", "--url", served(json.dumps({"data": entries + odd}).encode()))
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load((tmp_path / "prices.yaml").read_text())["openrouter"]["models"]
    assert "odd/nan" not in written
    assert written["odd/search"]["rows"][-1] == {"since": NOW, "source": "https://openrouter.ai/api/v1/models",
                                                 "input": 1.0, "output": 2.0}

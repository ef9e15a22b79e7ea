"""Helpers the test modules share (one home for each; no test module imports another):
a manual clock, waiting for a condition, Claude Code's pinned binaries and a headless run of one,
reading a test daemon's access lines and ledger, running the ccproxyd command line, a strict
Prometheus parser, a redis-server on a loopback port, and replaying the providers' recorded answers
(tests/corpus) through the translator with a preset's model, then building Claude Code's next
request from what a client would have assembled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from ccproxyd.config import table as config
from ccproxyd.config.table import Model
from ccproxyd.translate.stream import StreamTranslator

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "corpus"


class Clock:
    """A clock the test moves by hand: `clock.now += 60`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wait_for(predicate, timeout: float = 6.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError("condition not met in time")



# A priced routing table the ledger and client tests share: gpt-mock (cached) and cheap-mock (the
# haiku route), Claude list prices by glob; and what usage(1000, 200, 400) costs on gpt-mock
PRICED_ROUTES = """
providers:
  mock: {{base_url: "{url}", api_key_env: MOCK_KEY}}
models:
  gpt-mock:
    provider: mock
    context_window: 128000
    max_output_tokens: 16384
    prices: [{{input: 2.0, output: 8.0, cached_input: 0.5}}]
  cheap-mock:
    provider: mock
    upstream: cheap-up
    context_window: 128000
    max_output_tokens: 16384
    prices: [{{input: 0.1, output: 0.4}}]
claude_prices:
  "claude-sonnet-4-5*": [{{input: 3.0, output: 15.0, cached_input: 0.3}}]
  "claude-haiku-4-5*": [{{input: 1.0, output: 5.0, cached_input: 0.1}}]
routes:
  - match: "claude-haiku*"
    model: cheap-mock
    cache: false
  - match: "*"
    model: gpt-mock
    cache: {{ttl: 600}}
"""

# usage(prompt=1000, completion=200, cached=400): 600 fresh input, 400 read from the prompt cache
COST = (600 * 2.0 + 400 * 0.5 + 200 * 8.0) / 1e6          # gpt-mock's prices
CLAUDE = (600 * 3.0 + 400 * 0.3 + 200 * 15.0) / 1e6       # Claude Sonnet's list price


# Claude Code releases the end-to-end tests run against (the Makefile's CLAUDE_VERSIONS)
VERSIONS = tuple(os.environ.get("CCPROXYD_CLAUDE_VERSIONS", "2.1.197 2.1.332").split())
NEWEST = max(VERSIONS, key=lambda v: tuple(int(n) for n in v.split(".")))


def claude_binary(version: str) -> Path:
    base = Path(os.environ.get("CCPROXYD_CLAUDE", ROOT / ".claude-code")) / version
    for candidate in (base / "node_modules/@anthropic-ai/claude-code-linux-x64/claude",
                      base / "node_modules/.bin/claude"):
        if candidate.exists():
            return candidate
    raise AssertionError(f"Claude Code {version} is not installed under {base}: run `make claude-code`")


def run_claude(claude: Path, daemon, work: Path, home: Path, *extra: str,
               prompt: str = "Create hello.txt saying hi", tools: str = "Write") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update(ANTHROPIC_BASE_URL=daemon.url, ANTHROPIC_API_KEY="sk-ant-client-key",
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", HOME=str(home), DISABLE_AUTOUPDATER="1")
    result = subprocess.run(
        [str(claude), "-p", prompt, "--output-format", "json",
         "--permission-mode", "acceptEdits", "--allowedTools", tools, *extra],
        cwd=work, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"stdout={result.stdout[-2000:]}\nstderr={result.stderr[-2000:]}"
    output = json.loads(result.stdout)
    assert output.get("is_error") is False, output
    return output


def access_lines(daemon) -> dict[str, dict]:
    """The daemon's access log lines by request id."""
    lines = {}
    for text in daemon.log_path.read_text().splitlines():
        payload = text.split("ccproxyd.access: ", 1)[1] if "ccproxyd.access: " in text else text
        if payload.startswith("{"):
            record = json.loads(payload)
            if "request_id" in record:
                lines[record["request_id"]] = record
    return lines


def spend(daemon, **query) -> dict:
    response = httpx2.get(daemon.url + "/spend", params=query, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def ccproxyd(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CCPROXYD_"))}
    full["CCPROXYD_STATUSLINE_TIMEOUT"] = "10"        # a loaded test machine; bench measures the real wait
    return subprocess.run([sys.executable, "-m", "ccproxyd", *args], input=stdin, capture_output=True, text=True,
                          env={**full, **env}, timeout=60)


def parse_prometheus(text: str) -> dict:
    """A strict little parser of the Prometheus text format: every sample line must parse."""
    import re as _re

    samples = {}
    sample = _re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|\+Inf|NaN)$')
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = sample.match(line)
        assert m, f"not Prometheus text: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


# a Responses API model (OpenAI's GPT-5) the Responses translation tests share
GPT5 = Model(name="gpt-5", provider="openai", upstream="gpt-5", api="responses", context_window=400000,
             max_output_tokens=128000, reasoning=True, reasoning_control="reasoning_effort", sampling=False,
             efforts=("minimal", "low", "medium", "high"))


class RedisServer:
    """redis-server as a subprocess on a loopback port, without persistence; kill() and start()
    again on the same port."""

    def __init__(self, directory) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.directory)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.cli("PING") == "PONG":
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=5)
        return done.stdout.strip()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)


# ---------------------------------------------------------------- the providers' recorded answers

def preset(name: str, model: str):
    return config.load((ROOT / "config" / f"{name}.yaml").read_text(), env={}).models[model]


def chunks(path: str) -> list[dict]:
    return [json.loads(line) for line in (CORPUS / path).read_text().splitlines() if line.strip()]


def replay(path: str, model, thinking: str = "summarized") -> list[tuple[str, dict]]:
    translator = StreamTranslator("claude-sonnet-4-5", provider=model.provider, upstream_model=model.upstream,
                                  thinking=thinking, live_tools=True, details=model.reasoning_details)
    events = translator.start()
    for chunk in chunks(path):
        events += translator.feed(chunk)
    events += translator.finish(saw_done=True)
    return events


def blocks(events) -> list[dict]:
    """The content blocks a client assembles from the events, checking the stream's grammar on the
    way (docs/PROTOCOL.md §7.1): indices in order, deltas of the block's own kind, each block stopped
    once, a signature on every thinking block, message_start first and message_stop last."""
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    out, open_ = [], set()
    for name, payload in events[1:-2]:
        if name == "content_block_start":
            assert payload["index"] == len(out)
            out.append(dict(payload["content_block"], _json=""))
            open_.add(payload["index"])
        elif name == "content_block_delta":
            block, delta = out[payload["index"]], payload["delta"]
            assert payload["index"] in open_
            kind = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "thinking",
                    "input_json_delta": "tool_use"}[delta["type"]]
            assert block["type"] == kind
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] += delta["signature"]
            else:
                block["_json"] += delta["partial_json"]
        else:
            assert name == "content_block_stop" and payload["index"] in open_
            open_.remove(payload["index"])
    assert not open_
    for block in out:
        if block["type"] == "tool_use":
            block["input"] = json.loads(block["_json"])
        if block["type"] == "thinking":
            assert block["signature"]
        del block["_json"]
    return out


def ending(events) -> tuple[str, dict]:
    name, delta = events[-2]
    assert name == "message_delta"
    return delta["delta"]["stop_reason"], delta["usage"]


def next_request(found: list[dict], thinking: dict | None = None) -> dict:
    """Claude Code's next request: the answer as history, each call answered."""
    results = [{"type": "tool_result", "tool_use_id": b["id"], "content": "sunny"} for b in found if b["type"] == "tool_use"]
    body = {"model": "claude-sonnet-4-5", "max_tokens": 2000, "messages": [
        {"role": "user", "content": "weather?"}, {"role": "assistant", "content": found},
        {"role": "user", "content": results or "thanks"}],
        "tools": [{"name": b["name"], "input_schema": {"type": "object"}} for b in found if b["type"] == "tool_use"]}
    if thinking:
        body["thinking"] = thinking
    return body


def assistant_turn(body: dict) -> dict:
    return next(m for m in body["messages"] if m["role"] == "assistant")

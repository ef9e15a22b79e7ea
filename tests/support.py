"""Helpers the test modules share (one home for each; no test module imports another):
a manual clock, waiting for a condition, Claude Code's pinned binaries and a headless run of one,
reading a test daemon's access lines and ledger, running the ccproxyd command line, a strict
Prometheus parser, and a redis-server on a loopback port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from ccproxyd.config.table import Model

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


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

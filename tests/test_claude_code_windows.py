"""Claude Code itself on a route whose window is far smaller than the Claude model it thinks it
talks to: `ccproxyd claude` tells it the routed window, the session grows past that window
(the model reads one large file after another), Claude Code compacts the conversation, and the
session goes on to the end of the task.  No request larger than the window reaches the upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ccproxyd.translate import tokens

from .conftest import Daemon
from .fake_upstream import text_script, tool_script
from .support import NEWEST, ROOT, claude_binary

ROUTES = """
providers:
  mock: {{base_url: "{url}", api_key_env: MOCK_KEY}}
models:
  windowed: {{provider: mock, upstream: windowed-up, context_window: {window}, max_output_tokens: 4096}}
  roomy: {{provider: mock, upstream: roomy-up, context_window: 400000, max_output_tokens: 16384}}
aliases:
  claude-windowed: windowed
routes:
  - {{match: "claude-sonnet*", model: windowed}}
  - {{match: "*", model: roomy}}
"""
LINE = "the quick brown fox jumps over the lazy dog while counting sheep number {n} in field {f}\n"


def honest(script, body: dict):
    """The script with the usage a provider would report for `body`: its prompt as counted here
    (Claude Code sizes its conversation by the usage of the last answer)."""
    prompt = tokens.count_text(json.dumps(body.get("messages")) + json.dumps(body.get("tools") or []))
    for event in script.events:
        if isinstance(event, dict) and event.get("usage"):
            event["usage"] = dict(event["usage"], prompt_tokens=prompt, total_tokens=prompt + 5)
    return script


def is_compaction(body: dict) -> bool:
    text = json.dumps(body["messages"])
    return "Your task is to create a detailed summary" in text or "summarizing conversations" in text


# (the model Claude Code is started with, the routed window, whether Claude Code compacts before
# ccproxyd refuses a request).  An alias is a model id Claude Code does not know: it takes the
# window ccproxyd claude gives it (CLAUDE_CODE_MAX_CONTEXT_TOKENS).  A Claude id keeps its own
# window, capped by the auto-compact window ccproxyd claude sets, which Claude Code takes no
# smaller than 100K: a 128K route is honoured in time, a 60K one learnt from the 400.
SESSIONS = [("claude-windowed", 60_000, True), ("claude-sonnet-5-5", 60_000, False),
            ("claude-sonnet-5-5", 128_000, True)]
FILE_TOKENS = 5_000                         # 250 lines of LINE


@pytest.mark.upstreams("http")
@pytest.mark.parametrize("model, window, in_time", SESSIONS)
def test_claude_code_compacts_on_a_small_window_route_and_goes_on(upstream, fake, tmp_path, model, window, in_time):
    files = window // FILE_TOKENS + 2        # together past the window
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(url=upstream.url, window=window))
    daemon = Daemon(routes)
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    for f in range(files):
        (work / f"part{f}.txt").write_text("".join(LINE.format(n=n, f=f) for n in range(250)))
    read = sum(tokens.count_text((work / f"part{f}.txt").read_text()) for f in range(files))
    assert read > window
    state = {"reads": 0, "compactions": 0}

    def responder(body: dict):
        return honest(answer(body), body)

    def answer(body: dict):
        names = {t["function"]["name"] for t in body.get("tools") or ()}
        if body["model"] != "windowed-up" or not ("Read" in names or is_compaction(body)):
            return text_script("ok")                   # side requests: titles, summaries
        if is_compaction(body):
            state["compactions"] += 1
            return text_script(f"<summary>The user asked to read part0.txt to part{files - 1}.txt one by one; "
                               f"{state['reads']} of them are read so far.</summary>")
        if state["reads"] < files:
            path = str(work / f"part{state['reads']}.txt")
            state["reads"] += 1
            return tool_script("Read", json.dumps({"file_path": path}), call_id=f"call_read_{state['reads']}")
        return text_script(f"Read all {files} files.")

    fake.responder = responder
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update(HOME=str(home), CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1",
               CCPROXYD_PORT=str(daemon.port), PYTHONPATH=str(ROOT))    # this checkout's ccproxyd
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ccproxyd", "claude", "--claude", str(claude_binary(NEWEST)),
             "-p", f"Read part0.txt to part{files - 1}.txt one at a time", "--output-format", "json",
             "--model", model, "--allowedTools", "Read"],
            cwd=work, env=env, capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL)
    finally:
        daemon.stop()
    main = [r["body"] for r in fake.requests if r["body"]["model"] == "windowed-up"]
    sizes = [tokens.count_request({"messages": [{"role": "user", "content": json.dumps(b)}]}) for b in main]
    log = daemon.log_path.read_text()
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\nsizes={sizes}\n{log[-3000:]}"
    output = json.loads(result.stdout)
    assert output["is_error"] is False, output
    assert f"Read all {files} files." in output["result"], (output, sizes)
    assert state["compactions"] >= 1, (sizes, result.stderr[-6000:])
    statuses = [json.loads(line.split("ccproxyd.access: ", 1)[1]).get("status") for line in log.splitlines()
                if "ccproxyd.access: " in line]
    assert (400 not in statuses) is in_time, statuses
    for body in main:                           # what went upstream fits: JSON text counts more than the prompt
        assert tokens.count_text(json.dumps(body.get("messages")) + json.dumps(body.get("tools") or [])) < window

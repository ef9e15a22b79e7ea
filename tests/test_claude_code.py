"""Claude Code itself, headless, through ccproxyd in front of the fake upstream.

The model (the fake upstream) asks for the Write tool; Claude Code must run it, send the result
back, and finish the turn with the model's final text.  Never skipped: `make test` installs the
pinned Claude Code into .claude-code/ first.  Like the SDK tests, each runs against a plain HTTP,
a TLS HTTP/1.1 and a TLS HTTP/2 upstream (conftest.UPSTREAM_KINDS).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import UPSTREAM_KINDS
from .fake_upstream import responses_script, text_script, tool_script

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.upstreams(*UPSTREAM_KINDS)


def claude_binary() -> Path:
    base = Path(os.environ.get("CCPROXYD_CLAUDE", ROOT / ".claude-code"))
    for candidate in (base / "node_modules/@anthropic-ai/claude-code-linux-x64/claude",
                      base / "node_modules/.bin/claude"):
        if candidate.exists():
            return candidate
    raise AssertionError(f"Claude Code is not installed under {base}: run `make claude-code`")


def run_claude(daemon, work: Path, home: Path, *extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update(ANTHROPIC_BASE_URL=daemon.url, ANTHROPIC_API_KEY="sk-ant-client-key",
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", HOME=str(home), DISABLE_AUTOUPDATER="1")
    result = subprocess.run(
        [str(claude_binary()), "-p", "Create hello.txt saying hi", "--output-format", "json",
         "--permission-mode", "acceptEdits", "--allowedTools", "Write", *extra],
        cwd=work, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"stdout={result.stdout[-2000:]}\nstderr={result.stderr[-2000:]}"
    output = json.loads(result.stdout)
    assert output.get("is_error") is False, output
    return output


@pytest.fixture
def workspace(tmp_path) -> tuple[Path, Path]:
    """Claude Code's working directory and a fresh HOME."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    return work, home


def test_claude_code_completes_a_tool_turn(daemon, fake, workspace):
    work, home = workspace
    target = work / "hello.txt"

    def responder(body: dict):
        messages = body["messages"]
        tool_names = {t["function"]["name"] for t in body.get("tools", [])}
        if any(m["role"] == "tool" for m in messages):
            return text_script("Done: wrote hello.txt")
        if "Write" in tool_names:
            args = json.dumps({"file_path": str(target), "content": "hi from ccproxyd\n"})
            return tool_script("Write", args, call_id="call_write_1", text="I'll create the file.")
        return text_script("ok")

    fake.responder = responder
    output = run_claude(daemon, work, home)
    assert "Done: wrote hello.txt" in output["result"]
    assert target.read_text() == "hi from ccproxyd\n"

    main_loop = [r["body"] for r in fake.requests if any(m["role"] == "tool" for m in r["body"]["messages"])]
    assert main_loop, "Claude Code never sent the tool result back"
    tool_msg = next(m for m in main_loop[0]["messages"] if m["role"] == "tool")
    assert tool_msg["tool_call_id"] == "call_write_1"
    assistant = next(m for m in main_loop[0]["messages"] if m.get("tool_calls"))
    assert assistant["tool_calls"][0]["function"]["name"] == "Write"
    for r in fake.requests:               # the client's key never reaches the upstream
        assert "sk-ant-client-key" not in json.dumps(r["headers"])


def test_claude_code_on_a_responses_api_model_replays_the_reasoning(daemon, fake, workspace):
    """`claude-responses*` routes to a model with `api: responses`: Claude Code must get a thinking
    block whose signature carries the encrypted reasoning, and hand it back with the tool result."""
    work, home = workspace
    target = work / "hello.txt"

    def responder(body: dict):
        if "input" not in body:                       # side requests on other models (chat path)
            return text_script("ok")
        if any(item.get("type") == "function_call_output" for item in body["input"]):
            return responses_script(text="Done: wrote hello.txt", encrypted="enc-final")
        if any(t["name"] == "Write" for t in body.get("tools", [])):
            args = json.dumps({"file_path": str(target), "content": "hi from gpt-5\n"})
            return responses_script(summary="I should write the file.", call=("Write", args), encrypted="enc-plan")
        return responses_script(text="ok")

    fake.responder = responder
    output = run_claude(daemon, work, home, "--model", "claude-responses-1")
    assert "Done: wrote hello.txt" in output["result"]
    assert target.read_text() == "hi from gpt-5\n"
    loop = [r["body"] for r in fake.requests if r["path"].endswith("/responses")
            and any(i.get("type") == "function_call_output" for i in r["body"]["input"])]
    assert loop, "Claude Code never sent the tool result back"
    reasoning = [i for i in loop[0]["input"] if i.get("type") == "reasoning"]
    assert reasoning and reasoning[0]["encrypted_content"] == "enc-plan"
    kinds = [i.get("type") for i in loop[0]["input"]]
    assert kinds.index("reasoning") < kinds.index("function_call") < kinds.index("function_call_output")

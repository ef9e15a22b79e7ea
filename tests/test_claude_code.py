"""Claude Code itself, headless, through ccproxyd in front of the fake upstream.

The model (the fake upstream) asks for the Write tool; Claude Code must run it, send the result
back, and finish the turn with the model's final text.  Every test runs on each pinned release
(`CLAUDE_VERSIONS` in the Makefile; the newest on npm among them).  Never skipped: `make test`
installs them into .claude-code/VERSION/ first.  The tool-turn tests also run against a plain
HTTP, a TLS HTTP/1.1 and a TLS HTTP/2 upstream (conftest.UPSTREAM_KINDS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import UPSTREAM_KINDS
from .fake_upstream import responses_script, text_script, tool_script
from .support import NEWEST, VERSIONS, claude_binary, run_claude

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.upstreams(*UPSTREAM_KINDS)


@pytest.fixture(params=VERSIONS)
def claude(request) -> Path:
    return claude_binary(request.param)


@pytest.fixture
def workspace(tmp_path) -> tuple[Path, Path]:
    """Claude Code's working directory and a fresh HOME."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    return work, home


def test_claude_code_completes_a_tool_turn(claude, daemon, fake, workspace):
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
    output = run_claude(claude, daemon, work, home)
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


def test_claude_code_on_a_responses_api_model_replays_the_reasoning(claude, daemon, fake, workspace):
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
    output = run_claude(claude, daemon, work, home, "--model", "claude-responses-1")
    assert "Done: wrote hello.txt" in output["result"]
    assert target.read_text() == "hi from gpt-5\n"
    loop = [r["body"] for r in fake.requests if r["path"].endswith("/responses")
            and any(i.get("type") == "function_call_output" for i in r["body"]["input"])]
    assert loop, "Claude Code never sent the tool result back"
    reasoning = [i for i in loop[0]["input"] if i.get("type") == "reasoning"]
    assert reasoning and reasoning[0]["encrypted_content"] == "enc-plan"
    kinds = [i.get("type") for i in loop[0]["input"]]
    assert kinds.index("reasoning") < kinds.index("function_call") < kinds.index("function_call_output")


@pytest.mark.upstreams("http")              # about the client, not the transport
def test_claude_code_finds_an_mcp_tool_through_tool_search(daemon, fake, workspace):
    """Claude Code 2.1.3xx defers MCP tools behind ToolSearch: the model loads the tool by name,
    calls it, and the MCP server's answer reaches the model.  Before loading, the MCP tool is not
    offered and the placeholder never is."""
    work, home = workspace
    mcp = json.dumps({"mcpServers": {"demo": {"command": sys.executable,
                                              "args": [str(Path(__file__).parent / "mcp_server.py")]}}})

    def responder(body: dict):
        names = {t["function"]["name"] for t in body.get("tools", [])}
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if "ToolSearch" not in names:                     # side requests (titles, summaries)
            return text_script("ok")
        if not results:
            return tool_script("ToolSearch", json.dumps({"query": "select:mcp__demo__lookup", "max_results": 5}),
                               call_id="call_search")
        if len(results) == 1 and "mcp__demo__lookup" in names:
            return tool_script("mcp__demo__lookup", json.dumps({"key": "alpha"}), call_id="call_mcp")
        return text_script(f"The model saw: {results[-1]}")

    fake.responder = responder
    output = run_claude(claude_binary(NEWEST), daemon, work, home, "--mcp-config", mcp,
                        prompt="Find the secret word for alpha with the demo lookup tool",
                        tools="ToolSearch mcp__demo__lookup")
    assert "PERIWINKLE-42" in output["result"]
    main = [r["body"] for r in fake.requests if "ToolSearch" in {t["function"]["name"] for t in r["body"].get("tools", [])}]
    offered = [{t["function"]["name"] for t in body["tools"]} for body in main]
    assert "mcp__demo__lookup" not in offered[0] and "mcp__demo__lookup" in offered[1]
    assert not any("DeferredToolPlaceholder" in names for names in offered)
    loaded = [m["content"] for m in main[1]["messages"] if m["role"] == "tool"]
    assert loaded == ["Tool loaded, now callable as a function: mcp__demo__lookup"]


@pytest.mark.upstreams("http")              # about the client, not the transport
def test_claude_code_web_search_on_a_model_that_cannot_search(daemon, fake, workspace):
    """Claude Code's WebSearch runs a request of its own with the web_search server tool; on a
    route whose model cannot search, what comes back to the main conversation says that no search
    took place, instead of the model's guess presented as results."""
    work, home = workspace

    def responder(body: dict):
        names = {t["function"]["name"] for t in body.get("tools", [])}
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if "ToolSearch" not in names:
            return text_script("ok")                      # a guess, if a search request ever got here
        if not results:
            return tool_script("ToolSearch", json.dumps({"query": "select:WebSearch"}), call_id="call_search")
        if len(results) == 1:
            return tool_script("WebSearch", json.dumps({"query": "ccproxyd release notes"}), call_id="call_web")
        return text_script(f"The model saw: {results[-1]}")

    fake.responder = responder
    output = run_claude(claude_binary(NEWEST), daemon, work, home, prompt="Search the web for ccproxyd release notes",
                        tools="ToolSearch WebSearch")
    assert "No web search took place" in output["result"]
    # the search request itself (its system prompt: "You run a web search for another Claude
    # model") never reached the upstream
    assert not [r for r in fake.requests if "run a web search for another" in json.dumps(r["body"])]


@pytest.mark.upstreams("http")              # about the client, not the transport
def test_claude_code_subagent_traffic_takes_its_own_route(daemon, fake, workspace):
    """A subagent's requests carry x-claude-code-agent-id: the test table routes them (`when:
    {subagent: true}`) to another model, and the access line names the session and the agent."""
    work, home = workspace

    def responder(body: dict):
        if body["model"] == "limited-up":                 # the subagent's own conversation
            return text_script("the subagent counted seven")
        names = {t["function"]["name"] for t in body.get("tools", [])}
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if "Agent" not in names:
            return text_script("ok")
        if not results:
            return tool_script("Agent", json.dumps({"description": "count", "prompt": "Count to seven",
                                                    "subagent_type": "claude", "run_in_background": False}),
                               call_id="call_agent")
        return text_script(f"The main agent heard: {results[-1]}")

    fake.responder = responder
    output = run_claude(claude_binary(NEWEST), daemon, work, home, prompt="Ask a subagent to count to seven",
                        tools="Agent")
    assert "the subagent counted seven" in output["result"]
    lines = [json.loads(line.split("ccproxyd.access: ", 1)[1]) for line in daemon.log_path.read_text().splitlines()
             if "ccproxyd.access: " in line]
    lines = [line for line in lines if line["session_id"] == output["session_id"]]   # this run's (a shared daemon)
    sub = [line for line in lines if line["upstream_model"] == "limited-up"]
    main = [line for line in lines if line["upstream_model"] == "gpt-mock" and line["session_id"] == sub[0]["session_id"]]
    assert sub and all(line["agent_id"] for line in sub) and sub[0]["session_id"]
    assert main and not any(line["agent_id"] for line in main)


@pytest.mark.upstreams("http")
def test_claude_code_picks_an_alias_and_it_routes_there(daemon, fake, workspace):
    """An alias from /v1/models (`claude-via-limited` in the test table) picked as Claude Code's
    model reaches the model it names, not the catch-all route."""
    work, home = workspace
    fake.responder = lambda body: text_script(f"answered by {body['model']}")
    output = run_claude(claude_binary(NEWEST), daemon, work, home, "--model", "claude-via-limited",
                        prompt="Say hello", tools="Write")
    assert "answered by limited-up" in output["result"]


@pytest.mark.upstreams("http")
def test_claude_code_web_search_on_a_model_that_searches(daemon, fake, workspace):
    """On a route whose model searches (`web_search: openai`, Responses API), Claude Code's WebSearch
    gets the sources OpenAI's search found, as Anthropic's web_search_tool_result."""
    from .fake_upstream import web_search_script
    work, home = workspace

    def responder(body: dict):
        if "input" not in body:
            return text_script("ok")
        tools = {t.get("name") or t.get("type") for t in body.get("tools", [])}
        results = [i["output"] for i in body["input"] if i.get("type") == "function_call_output"]
        if "web_search" in tools:                         # Claude Code's own search request
            return web_search_script("ccproxyd release notes", ["https://example.org/ccproxyd-notes"],
                                     "One page lists the notes.")
        if not results:
            return renamed(responses_script(call=("ToolSearch", json.dumps({"query": "select:WebSearch"}))), "call_ts")
        if len(results) == 1:
            return renamed(responses_script(call=("WebSearch", json.dumps({"query": "ccproxyd release notes"}))),
                           "call_ws")
        return responses_script(text=f"The model saw: {results[-1]}")

    def renamed(script, call_id: str):
        """Each call its own id (responses_script gives every call the same one)."""
        script.events = json.loads(json.dumps(script.events).replace('"call_r1"', json.dumps(call_id)))
        return script

    fake.responder = responder
    output = run_claude(claude_binary(NEWEST), daemon, work, home, "--model", "claude-responses-1",
                        prompt="Search the web for ccproxyd release notes", tools="ToolSearch WebSearch")
    assert "https://example.org/ccproxyd-notes" in output["result"]


@pytest.mark.upstreams("http")
def test_ccproxyd_claude_starts_claude_code_at_the_daemon(daemon, fake, workspace):
    """`ccproxyd claude ARGS` runs Claude Code against this daemon with an auth token instead of an
    API key (no custom-key question), and says so in one line when no daemon answers."""
    work, home = workspace
    fake.responder = lambda body: text_script("launched through ccproxyd")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update(HOME=str(home), CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1",
               ANTHROPIC_API_KEY="sk-ant-should-not-be-used", CCPROXYD_PORT=str(daemon.port))
    command = [sys.executable, "-m", "ccproxyd", "claude", "--claude", str(claude_binary(NEWEST)),
               "-p", "Say hello", "--output-format", "json"]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=240,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["result"] == "launched through ccproxyd"
    picker = json.loads((home / ".claude/cache/gateway-models.json").read_text())   # what /model offers
    assert picker["baseUrl"] == daemon.url
    offered = {m["id"]: m for m in picker["models"]}
    assert offered["claude-via-limited"]["display_name"] == "limited-up (limited) via ccproxyd"
    assert "gpt-mock (mock) via ccproxyd" in offered["claude-sonnet-4-5-20250929"]["display_name"]
    down = subprocess.run(command, cwd=work, env=dict(env, CCPROXYD_PORT="1"), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert down.returncode == 1 and down.stderr.count("\n") == 1 and "no daemon answers" in down.stderr


@pytest.mark.upstreams("http")              # about the client, not the transport
def test_claude_code_web_search_through_openrouter(daemon, fake, workspace):
    """On a route whose model searches through OpenRouter (`web_search: openrouter`), Claude Code's
    WebSearch request goes upstream with OpenRouter's `openrouter:web_search` server tool, and the
    sources its answer cites (url_citation annotations) reach the main conversation as results."""
    from .fake_search import NOTES, openrouter_stream
    work, home = workspace

    def responder(body: dict):
        kinds = {t.get("type") for t in body.get("tools", [])}
        names = {t["function"]["name"] for t in body.get("tools", []) if t.get("type") == "function"}
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if "openrouter:web_search" in kinds:               # Claude Code's own search request
            return openrouter_stream()
        if "ToolSearch" not in names:
            return text_script("ok")
        if not results:
            return tool_script("ToolSearch", json.dumps({"query": "select:WebSearch"}), call_id="call_search")
        if len(results) == 1:
            return tool_script("WebSearch", json.dumps({"query": "ccproxyd 2.0"}), call_id="call_web")
        return text_script(f"The model saw: {results[-1]}")

    fake.responder = responder
    output = run_claude(claude_binary(NEWEST), daemon, work, home, "--model", "claude-or-search-1",
                        prompt="Search the web for ccproxyd 2.0", tools="ToolSearch WebSearch")
    assert NOTES in output["result"] and "Release notes" in output["result"]
    assert [r for r in fake.requests if {"type": "openrouter:web_search", "parameters": {"max_total_results": 40}}
            in r["body"].get("tools", [])]


@pytest.mark.upstreams("http")              # about the client, not the transport
def test_claude_code_web_search_through_xai(daemon, fake, workspace):
    """On a route whose model searches through xAI (`web_search: xai`, Responses API), Claude Code's
    WebSearch request carries xAI's `web_search` tool, and the sources xAI's search found and cited
    reach the main conversation."""
    from .fake_search import CHANGES, responses_search
    work, home = workspace

    def responder(body: dict):
        if "input" not in body:
            return text_script("ok")
        results = [i["output"] for i in body["input"] if i.get("type") == "function_call_output"]
        if {"type": "web_search"} in body.get("tools", []):     # Claude Code's own search request
            return responses_search("ccproxyd 2.0", [CHANGES], xai_usage=True)
        if not results:
            return renamed(responses_script(call=("ToolSearch", json.dumps({"query": "select:WebSearch"}))), "call_ts")
        if len(results) == 1:
            return renamed(responses_script(call=("WebSearch", json.dumps({"query": "ccproxyd 2.0"}))), "call_ws")
        return responses_script(text=f"The model saw: {results[-1]}")

    def renamed(script, call_id: str):
        script.events = json.loads(json.dumps(script.events).replace('"call_r1"', json.dumps(call_id)))
        return script

    fake.responder = responder
    output = run_claude(claude_binary(NEWEST), daemon, work, home, "--model", "claude-grok-search-1",
                        prompt="Search the web for ccproxyd 2.0", tools="ToolSearch WebSearch")
    assert CHANGES in output["result"] and "Changelog" in output["result"]

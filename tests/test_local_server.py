"""A real model server as the upstream: llama-cpp-python's server on loopback, serving the tiny
model of tests/tiny_model.py (its answer is fixed by its weights: ANSWER), behind ccproxyd run
with the bundled preset, exactly as README's "Run it on a local model" says.

Never skipped: `make test` builds and installs the server first (`make llama-server`); if it is
missing or does not start, these tests fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx2
import pytest

from ccproxyd.translate import tokens
from ccproxyd.translate.provider_errors import MAX_UPSTREAM_MESSAGE, from_upstream

from . import tiny_model
from .conftest import Daemon, free_port
from .grammar import check_stream, parse_sse

ROOT = Path(__file__).resolve().parent.parent
ANSWER = tiny_model.ANSWER
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
ASK = [{"role": "user", "content": "Say something, little model."}]


def readme_commands() -> tuple[list[str], dict[str, str], list[str]]:
    """The server's command, and ccproxyd's environment and command, from the README section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Run it on a local model", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    lines = [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]
    server = next(words for words in lines if "llama_cpp.server" in words)
    serve = next(words for words in lines if "serve" in words and any(w.endswith("ccproxyd") for w in words))
    env = dict(w.split("=", 1) for w in serve if re.match(r"^[A-Z_]+=", w))
    return server, env, [w for w in serve if not re.match(r"^[A-Z_]+=", w)]


@pytest.fixture(scope="session")
def tiny_gguf() -> Path:
    """The model file, written once per version of its builder (about 50 MB, a few seconds)."""
    digest = hashlib.sha256(Path(tiny_model.__file__).read_bytes()).hexdigest()[:12]
    path = ROOT / ".cache" / "models" / f"tiny-{digest}.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        tiny_model.write(partial)
        partial.rename(path)
    return path


@pytest.fixture(scope="session")
def llama_server(tiny_gguf, tmp_path_factory):
    """llama-cpp-python's server, started with the README's flags; yields its base URL."""
    argv, _, _ = readme_commands()
    argv = [sys.executable if w.endswith("python") else w for w in argv]
    argv[argv.index("--model") + 1] = str(tiny_gguf)
    port = free_port()
    argv += ["--host", "127.0.0.1", "--port", str(port), "--n_threads", "2", "--verbose", "False"]
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    while True:                                   # readiness, not a timed assertion
        if proc.poll() is not None:
            raise AssertionError(f"llama-cpp-python's server exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx2.get(url + "/v1/models", timeout=2).status_code == 200:
                break
        except httpx2.HTTPError:
            time.sleep(0.1)
        if time.monotonic() - started > 120:
            proc.kill()
            raise AssertionError(f"llama-cpp-python's server did not start: {log_path.read_text()[-3000:]}")
    print(f"\nllama-cpp-python server ready in {time.monotonic() - started:.2f}s", file=sys.stderr)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def local_daemon(llama_server, tmp_path_factory):
    """ccproxyd with the bundled preset, as the README starts it."""
    _, env, serve = readme_commands()
    routes = ROOT / serve[serve.index("--routes") + 1]
    env = dict(env, LLAMA_CPP_BASE_URL=llama_server + "/v1")
    d = Daemon(routes, env=env, extra_args=("--no-cache", "--log-bodies"),
               log_path=tmp_path_factory.mktemp("local") / "ccproxyd.log")
    yield d
    d.stop()


@pytest.fixture
def client(local_daemon) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=local_daemon.url, api_key="sk-ant-local", max_retries=0, timeout=120)


def post(daemon, body: dict, path: str = "/v1/messages") -> httpx2.Response:
    return httpx2.post(daemon.url + path, json=body, timeout=120)


def stream(daemon, **body) -> list[tuple[str, dict]]:
    r = post(daemon, {"model": "claude-sonnet-4-5", "max_tokens": 200, "messages": ASK, "stream": True, **body})
    assert r.status_code == 200, r.text
    return parse_sse(r.content)


def text_of(events) -> str:
    return "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")


def usage_of(events) -> tuple[dict, dict]:
    return events[0][1]["message"]["usage"], [d for n, d in events if n == "message_delta"][0]["usage"]


def access_lines(daemon) -> list[dict]:
    return [json.loads(line.split("ccproxyd.access: ", 1)[1])
            for line in daemon.log_path.read_text().splitlines() if "ccproxyd.access: " in line]


def new_access_line(daemon, seen: int, where) -> dict:
    """The last access line after the first `seen` that matches `where`.  A streamed request's
    line is written once the handler returns, which may be just after the client read the end."""
    deadline = time.monotonic() + 10
    while True:
        lines = [x for x in access_lines(daemon)[seen:] if where(x)]
        if lines or time.monotonic() > deadline:
            assert lines, "no such access line"
            return lines[-1]
        time.sleep(0.05)


# ---------------------------------------------------------------- conformance


def test_the_model_is_o200k_and_says_its_answer(llama_server):
    """The server itself: the tiny model tokenizes as ccproxyd counts, and answers ANSWER."""
    sample = "Counting with one tokenizer: ccproxyd's o200k and the model's own vocabulary agree."
    r = httpx2.post(llama_server + "/extras/tokenize", json={"input": sample}, timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.json()["tokens"]) == tokens.count_text(sample)
    r = httpx2.post(llama_server + "/v1/chat/completions", json={"model": "local", "messages": ASK}, timeout=60)
    assert r.json()["choices"][0]["message"]["content"] == ANSWER
    assert r.json()["usage"]["completion_tokens"] == tokens.count_text(ANSWER)


def test_non_streamed_text(client):
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=200, messages=ASK)
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == ANSWER
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == tokens.count_request({"messages": ASK})
    assert message.usage.output_tokens == tokens.count_text(ANSWER)


def test_streamed_text_and_one_usage_at_both_ends(local_daemon):
    seen = len(access_lines(local_daemon))
    events = stream(local_daemon)
    assert check_stream(events) == "complete"
    assert text_of(events) == ANSWER
    start, final = usage_of(events)
    assert start["input_tokens"] == final["input_tokens"] == tokens.count_request({"messages": ASK})
    assert final["output_tokens"] == tokens.count_text(ANSWER)
    line = new_access_line(local_daemon, seen, lambda x: x["stream"])
    assert line["provider"] == "llama-cpp" and line["upstream_model"] == "local"
    assert line["usage_estimated"] is True and line["output_tokens"] == final["output_tokens"]
    metrics = httpx2.get(local_daemon.url + "/metrics", timeout=10).text
    assert 'ccproxyd_estimated_usage_total{provider="llama-cpp"}' in metrics


def test_max_tokens_cuts_the_answer(local_daemon):
    events = stream(local_daemon, max_tokens=2)
    assert check_stream(events) == "complete"
    assert text_of(events) == "Hello from"
    assert [d for n, d in events if n == "message_delta"][0]["delta"]["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_forced_tool_call(local_daemon, streamed):
    body = {"model": "claude-sonnet-4-5", "max_tokens": 200, "messages": ASK, "stream": streamed,
            "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}}
    r = post(local_daemon, body)
    assert r.status_code == 200, r.text
    if streamed:
        events = parse_sse(r.content)
        assert check_stream(events) == "complete"
        start = [d["content_block"] for n, d in events if n == "content_block_start"]
        arguments = "".join(d["delta"]["partial_json"] for n, d in events
                            if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta")
        blocks = [dict(start[-1], input=json.loads(arguments))]
        stop = [d for n, d in events if n == "message_delta"][0]["delta"]["stop_reason"]
    else:
        blocks, stop = r.json()["content"], r.json()["stop_reason"]
    assert [(b["type"], b["name"], b["input"]) for b in blocks] == [("tool_use", "get_weather", {"city": ANSWER})]
    assert stop == "tool_use"


@pytest.mark.parametrize("said", ["", "Let me look."], ids=["tool-call-only", "text-and-tool-call"])
def test_tool_result_round_trip(client, said):
    """The second turn of every agentic session: an assistant tool call (no text, or some) and the
    user's tool result.  llama-cpp-python refused this while ccproxyd sent `content: null`."""
    assistant = ([{"type": "text", "text": said}] if said else []) + [
        {"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {"city": "Oslo"}}]
    history = ASK + [{"role": "assistant", "content": assistant},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_w1", "content": "Sunny, 21 C"}]}]
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=200, messages=history, tools=[WEATHER])
    assert message.content[0].text == ANSWER and message.stop_reason == "end_turn"


def test_structured_output_in_json_mode(client):
    """Claude Code's session titles: output_config.format -> json_object (the preset's mode)."""
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    message = client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=ASK,
                                     extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert isinstance(json.loads(message.content[0].text), dict)


def test_count_tokens(local_daemon):
    body = {"model": "claude-sonnet-4-5", "messages": ASK, "tools": [WEATHER]}
    r = post(local_daemon, body, "/v1/messages/count_tokens")
    assert r.status_code == 200 and r.json() == {"input_tokens": tokens.count_request(body)}


def test_upstream_error_is_trimmed_and_names_the_provider(local_daemon, llama_server):
    """The server's own refusal of the old translation (content null): a long pydantic dump.
    Through ccproxyd's error mapping it is one line, no paths, the provider named."""
    old = {"model": "local", "max_tokens": 20, "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]}
    r = httpx2.post(llama_server + "/v1/chat/completions", json=old, timeout=60)
    assert r.status_code >= 400 and "valid string" in r.text
    exc = from_upstream(r.status_code, r.content, provider="llama-cpp")
    assert "valid string" in exc.message and exc.message.endswith(f"(provider 'llama-cpp', HTTP {r.status_code})")
    assert len(exc.message) <= MAX_UPSTREAM_MESSAGE + 40 and "\n" not in exc.message
    # end to end: a PDF goes as a `file` part, which llama-cpp-python's schema refuses (HTTP 500)
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 20,
            "messages": [{"role": "user", "content": [pdf, {"type": "text", "text": "Summarise it."}]}]}
    seen = len(access_lines(local_daemon))
    r = post(local_daemon, body)
    assert r.status_code == 500, r.text
    message = r.json()["error"]["message"]
    assert "validation error" in message and message.endswith("(provider 'llama-cpp', HTTP 500)")
    assert "Traceback" not in message and 'File "' not in message and "\n" not in message
    line = new_access_line(local_daemon, seen, lambda x: x["status"] == 500)
    assert (line["provider"], line["upstream_model"]) == ("llama-cpp", "local") and line["attempts"] >= 1


def test_a_stream_the_server_abandons_ends_in_an_error_naming_the_provider(local_daemon):
    """A tool_choice naming no tool: the server answers 200, then its generator raises and the
    stream ends empty.  The client gets an error event, never a clean stop; the log line names
    the provider and the attempts."""
    seen = len(access_lines(local_daemon))
    events = stream(local_daemon, tools=[WEATHER], tool_choice={"type": "tool", "name": "no_such_tool"})
    assert check_stream(events) == "error"
    line = new_access_line(local_daemon, seen, lambda x: x["stream"] and x["status"] >= 400)
    assert line["provider"] == "llama-cpp" and line["upstream_model"] == "local" and line["attempts"] == 1


# ---------------------------------------------------------------- Claude Code


def run_claude(url: str, work: Path, home: Path, prompt: str, *extra: str) -> dict:
    from .support import NEWEST, claude_binary

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update(ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY="sk-ant-client-key", HOME=str(home),
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1")
    result = subprocess.run([str(claude_binary(NEWEST)), "-p", prompt, "--output-format", "json",
                             "--permission-mode", "acceptEdits", "--allowedTools", "Write", *extra],
                            cwd=work, env=env, capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"stdout={result.stdout[-2000:]}\nstderr={result.stderr[-2000:]}"
    output = json.loads(result.stdout)
    assert output.get("is_error") is False, output
    return output


@pytest.mark.timeout(600)
def test_claude_code_session_continues_on_the_local_model_after_a_tool_call(daemon, fake, local_daemon, tmp_path):
    """A Claude Code session: its first turn makes a tool call (Write, scripted by the fake
    upstream, because llama-cpp-python's server cannot stream a tool call the model chooses
    itself), then the session is resumed on the local model, whose turn carries the assistant
    tool call and the tool result, and answers."""
    from .fake_upstream import text_script, tool_script

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    target = work / "hello.txt"

    def responder(body: dict):
        if any(m["role"] == "tool" for m in body["messages"]):
            return text_script("Done: wrote hello.txt")
        if "Write" in {t["function"]["name"] for t in body.get("tools", [])}:
            return tool_script("Write", json.dumps({"file_path": str(target), "content": "hi\n"}), call_id="call_write_1")
        return text_script("ok")

    fake.responder = responder
    first = run_claude(daemon.url, work, home, "Create hello.txt saying hi")
    assert target.read_text() == "hi\n" and "Done" in first["result"]

    second = run_claude(local_daemon.url, work, home, "And now?", "--resume", first["session_id"])
    assert second["result"] == ANSWER
    bodies = [json.loads(line.split(" ", 1)[1]) for line in
              (line.split("ccproxyd.bodies: ", 1)[1] for line in local_daemon.log_path.read_text().splitlines()
               if "ccproxyd.bodies: " in line)]
    resumed = [b for b in bodies if any(isinstance(m["content"], list) and any(
        blk.get("type") == "tool_result" for blk in m["content"]) for m in b["messages"])]
    assert resumed, "the resumed session never sent the tool result to the local model"
    kinds = [[blk.get("type") for blk in m["content"]] if isinstance(m["content"], list) else ["text"]
             for m in resumed[-1]["messages"]]
    assert any("tool_use" in k for k in kinds) and any("tool_result" in k for k in kinds)
    lines = [x for x in access_lines(local_daemon) if x["status"] == 200 and x["provider"] == "llama-cpp"]
    assert lines, "no answered request from the local model in the access log"

"""Table tests: an upstream's error body -> the message a client sees (trimmed, no stack trace,
no server paths, the provider named)."""

from __future__ import annotations

import orjson
import pytest

from ccproxyd.translate.provider_errors import MAX_UPSTREAM_MESSAGE, from_upstream, upstream_message

LLAMA_CPP_TRACE = """Traceback (most recent call last):
  File "/root/.venv/lib/python3.11/site-packages/llama_cpp/server/errors.py", line 173, in custom_route_handler
    response = await original_route_handler(request)
               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3.11/site-packages/llama_cpp/llama_chat_format.py", line 652, in chat_completion_handler
    result = chat_formatter(
ValueError: Requested tokens (9000) exceed context window of 4096 in /home/alice/models/tiny.gguf"""

PYDANTIC = ("7 validation errors for CreateChatCompletionRequest\nmessages.1.typed-dict.content\n  Input should be a "
            "valid string [type=string_type, input_value=None, input_type=NoneType]\n    For further information "
            "visit https://errors.pydantic.dev/2.11/v/string_type")

LLAMA_CPP_422 = """7 validation errors:
  {'type': 'literal_error', 'loc': ('body', 'messages', 1, 'ChatCompletionRequestSystemMessage', 'role'), 'msg': "Input should be 'system'", 'input': 'assistant', 'ctx': {'expected': "'system'"}}
  {'type': 'literal_error', 'loc': ('body', 'messages', 1, 'ChatCompletionRequestUserMessage', 'role'), 'msg': "Input should be 'user'", 'input': 'assistant', 'ctx': {'expected': "'user'"}}
  {'type': 'string_type', 'loc': ('body', 'messages', 1, 'ChatCompletionRequestAssistantMessage', 'content'), 'msg': 'Input should be a valid string', 'input': None}"""

CASES = [
    ("llama-cpp-python field errors, union noise dropped", {"error": {"message": LLAMA_CPP_422, "type": "internal_server_error"}},
     "7 validation errors: body.messages.1.ChatCompletionRequestAssistantMessage.content: Input should be a valid string"),
    ("openai shape", {"error": {"message": "Invalid 'messages[1].content'", "type": "invalid_request_error"}},
     "Invalid 'messages[1].content'"),
    ("a traceback keeps its last line", {"error": {"message": LLAMA_CPP_TRACE, "type": "internal_server_error"}},
     "ValueError: Requested tokens (9000) exceed context window of 4096 in [path]"),
    ("a plain-text traceback", LLAMA_CPP_TRACE.encode(),
     "ValueError: Requested tokens (9000) exceed context window of 4096 in [path]"),
    ("pydantic errors on one line, urls kept", {"error": {"message": PYDANTIC}},
     "7 validation errors for CreateChatCompletionRequest messages.1.typed-dict.content Input should be a valid string "
     "[type=string_type, input_value=None, input_type=NoneType] For further information visit "
     "https://errors.pydantic.dev/2.11/v/string_type"),
    ("fastapi 422 detail list", {"detail": [{"loc": ["body", "messages", 1, "content"], "msg": "Input should be a valid string"}]},
     "body.messages.1.content: Input should be a valid string"),
    ("a node stack", {"error": {"message": "TypeError: x is undefined\n    at handler (/app/server.js:10:5)\n    at next (/app/node_modules/express/router.js:1:2)"}},
     "TypeError: x is undefined"),
    ("windows path", {"error": "cannot load C:\\models\\qwen.gguf: bad magic"}, "cannot load [path]: bad magic"),
    ("an api path is not a file path", {"error": {"message": "POST /v1/chat/completions: model 'x' not found"}},
     "POST /v1/chat/completions: model 'x' not found"),
    ("empty body", b"", "(empty body)"),
]


@pytest.mark.parametrize("body,expected", [(b, e) for _, b, e in CASES], ids=[c[0] for c in CASES])
def test_upstream_message(body, expected):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    assert upstream_message(raw) == expected


def test_long_messages_are_cut():
    message = upstream_message(orjson.dumps({"error": {"message": "word " * 400}}))
    assert len(message) == MAX_UPSTREAM_MESSAGE and message.endswith("…")


@pytest.mark.parametrize("status", [400, 422, 429, 500, 503])
def test_the_provider_is_named(status):
    exc = from_upstream(status, orjson.dumps({"error": {"message": LLAMA_CPP_TRACE}}), provider="local")
    assert exc.message.endswith(f"(provider 'local', HTTP {status})")
    assert "File \"" not in exc.message and "/root/" not in exc.message and "/home/alice" not in exc.message

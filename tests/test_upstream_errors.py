"""Table tests: an upstream's error body -> the message a client sees (trimmed, no stack trace,
no server paths, the provider named)."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest

from ccproxyd.observe import redact
from ccproxyd.translate import provider_errors
from ccproxyd.translate.provider_errors import (MAX_DECODED, MAX_UPSTREAM_MESSAGE, brotli, decoded, from_upstream,
                                                upstream_message)

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


BODY = orjson.dumps({"error": {"message": "no such model"}})
UNREADABLE = "the error answer's body is compressed (content-encoding "

# case -> (content-encoding, the body as sent, what `decoded` makes of it: the body, or the start of its sentence)
DECODED = {
    "gzip": ("gzip", gzip.compress(BODY), BODY),
    "x-gzip": ("x-gzip", gzip.compress(BODY), BODY),
    "deflate": ("deflate", zlib.compress(BODY), BODY),
    "deflate without its zlib wrapper": ("deflate", (lambda c: c.compress(BODY) + c.flush())(
        zlib.compressobj(wbits=-zlib.MAX_WBITS)), BODY),
    "names in any case, identity skipped": ("Identity, GZIP", gzip.compress(BODY), BODY),
    "two codings, the last undone first": ("gzip, deflate", zlib.compress(gzip.compress(BODY)), BODY),
    "a bomb": ("gzip", gzip.compress(b"\0" * (MAX_DECODED + 1)), UNREADABLE + "'gzip') and decodes to more than"),
    "not gzip": ("gzip", b"not gzip at all", UNREADABLE + "'gzip') and does not decode"),
    "cut short": ("deflate", zlib.compress(BODY)[:-8], UNREADABLE + "'deflate') and does not decode (it is cut short)"),
    "zstd": ("zstd", b"(\xb5/\xfd zstd frame", UNREADABLE + "'zstd') in a coding ccproxyd cannot read"),
}


@pytest.mark.parametrize("case", sorted(DECODED))
def test_a_compressed_error_body_is_decoded_or_said_unreadable(case):
    coding, body, expected = DECODED[case]
    out = decoded(body, coding)
    assert out == expected if expected == BODY else out.decode().startswith(expected), out


def test_br_without_a_brotli_module_is_said_unreadable(monkeypatch):
    monkeypatch.setattr(provider_errors, "brotli", None)
    assert decoded(b"\x1b\x00", "br").decode() == UNREADABLE + "'br') in a coding ccproxyd cannot read (no brotli " \
                                                               "module is installed)"


def test_br_is_decoded_where_a_brotli_module_is_installed():
    module = brotli
    assert module is not None, "the test extra installs brotli"
    assert decoded(module.compress(BODY), "br") == BODY
    assert decoded(module.compress(BODY)[:-2], "br").decode().startswith(UNREADABLE + "'br') and does not decode")
    bomb = decoded(module.compress(b"\0" * (MAX_DECODED * 4)), "br")
    assert bomb.decode() == UNREADABLE + f"'br') and decodes to more than {MAX_DECODED} bytes"


def test_br_with_a_brotli_module_older_than_1_2_is_not_decoded(monkeypatch):
    """brotli before 1.2 has no output bound: a few hundred bytes may decode to hundreds of MB,
    so its body is said unreadable instead of decoded."""
    class Old:                                       # brotli 1.1's Decompressor.process signature
        error = brotli.error

        class Decompressor:
            def process(self, data):
                raise AssertionError("decoded without a bound")
    monkeypatch.setattr(provider_errors, "brotli", Old)
    assert decoded(brotli.compress(BODY), "br").decode() == UNREADABLE + "'br') in a coding ccproxyd cannot " \
                                                                       "read safely (the brotli module installed is older than 1.2)"


def test_an_empty_compressed_error_body_is_an_empty_body():
    assert decoded(b"", "gzip") == b""
    assert from_upstream(500, b"", provider="p", coding="gzip").message.startswith("(empty body)")


def test_the_coding_named_is_scrubbed():
    redact.register("sk-secret-0123456789")
    try:
        message = from_upstream(500, b"\x00", provider="p", coding="x-sk-secret-0123456789").message
    finally:
        redact.clear()
    assert "sk-secret" not in message and "[redacted]" in message, message

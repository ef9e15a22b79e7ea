"""What a provider's error means in ccproxyd's tree: an HTTP error answer (`from_upstream`, one
table of statuses, its body's content coding undone by `decoded`) or an error inside a stream
(`from_stream_error`), its message tidied and scrubbed of secrets (`upstream_message`), and a
prompt over the window recognised however the provider words it (`is_overflow`) and answered as
Anthropic does (PromptTooLong)."""

from __future__ import annotations

import json
import re
import zlib

from ..observe import redact
from ..errors import (TYPE_TO_ERROR,
                      ApiError,
                      BillingError,
                      ClientFacingError,
                      InvalidRequest,
                      NotFound,
                      Overloaded,
                      PermissionDenied,
                      PromptTooLong,
                      RateLimited,
                      RequestTooLarge,
                      UpstreamTimeout)

try:                                     # optional: ccproxyd does not depend on brotli
    import brotli
except ImportError:
    try:
        import brotlicffi as brotli
    except ImportError:
        brotli = None


STATUS_TO_ERROR: dict[int, tuple[type[ClientFacingError], bool]] = {
    400: (InvalidRequest, False),
    401: (ApiError, False),          # the *proxy's* upstream key is bad; not the client's fault
    402: (BillingError, False),
    403: (PermissionDenied, False),
    404: (NotFound, False),
    408: (UpstreamTimeout, True),
    413: (RequestTooLarge, False),
    422: (InvalidRequest, False),
    429: (RateLimited, True),
    500: (ApiError, True),
    502: (Overloaded, True),
    503: (Overloaded, True),
    504: (UpstreamTimeout, True),
    529: (Overloaded, True),
}

# Anthropic error type -> class, for errors that arrive inside an upstream stream.

# A provider's own word that a request overflowed the model's window -> PromptTooLong.  Codes are
# matched exactly against the error's `code` (or `type`), phrases anywhere in its message.
OVERFLOW_CODES: dict[str, str] = {
    # OpenAI: https://platform.openai.com/docs/guides/error-codes (400, code context_length_exceeded);
    # the Responses API reports the same code in `response.failed` and in-stream `error` events
    "context_length_exceeded": "OpenAI, OpenAI-compatible servers",
    "model_context_window_exceeded": "Anthropic-shaped upstreams (stop reason turned error)",
}
OVERFLOW_PHRASES: tuple[str, ...] = (
    "prompt is too long",                       # Anthropic-shaped upstreams
    "maximum context length",                   # OpenAI, vLLM: "This model's maximum context length is N tokens"
    "context window",                           # "exceeds the context window" (OpenAI Responses, others)
    "context length",                           # "longer than the model's context length" (vLLM, SGLang)
    "too many tokens",
    "exceeds the available context size",       # llama.cpp server
    "input is too long for requested model",    # Bedrock-hosted models
    "reduce the length of the messages",        # OpenAI's older wording
    # more providers' wordings, from the list Claude Code 2.1.332 itself keeps of them (its strings)
    "maximum prompt length",                    # xAI: "This model's maximum prompt length is 131072 but the
                                                # request contains 136973 tokens." (cline/cline#3120)
    "input_too_large",                          # xAI's later "[input_too_large] Current message (N tokens)
                                                # exceeds budget (M tokens)" (UKGovernmentBEIS/inspect_ai#5208)
    "longer than the maximum model length",
    "exceeds the maximum number of tokens allowed",
    "input token length too long",
    "input tokens exceed the configured limit",
    "maximum context limit",
    "but model only supports up to",
)
# Statuses a provider answers an overflow with: 400 (OpenAI), 413 (some gateways), 422 (FastAPI servers).
OVERFLOW_STATUSES = (400, 413, 422)


# Providers' own numeric codes for a prompt over the window: (error.code, a word the message must
# hold, "" for none).
PROVIDER_OVERFLOW_CODES = (
    ("1261", ""),          # Z.AI GLM: "Prompt exceeds max length"
    ("1210", "token"),     # Z.AI GLM: 1210 is any bad parameter; an overflow names the tokens
                           # ("tokens in request more than max tokens allowed")
)


def is_overflow(message: str, code: str) -> bool:
    """True when a provider's error says the prompt did not fit the model's window."""
    codes, lowered = code.split(), message.lower()
    return (any(c in OVERFLOW_CODES for c in codes) or any(p in lowered for p in OVERFLOW_PHRASES)
            or any(c in codes and w in lowered for c, w in PROVIDER_OVERFLOW_CODES))


MAX_UPSTREAM_MESSAGE = 300
_TRACEBACK = "Traceback (most recent call last):"
_FRAME = re.compile(r'^\s*(File "[^"]*", line \d+.*|at .+:\d+(:\d+)?\)?|\^+|~+)\s*$')
_PATH = re.compile(r'(?<![\w.:/-])(?:[A-Za-z]:\\[^\s"\':,;)\]]+|/(?:home|root|usr|opt|var|tmp|srv|app|apps|workspace|'
                   r'Users|etc|mnt|data|lib|nix|private|models|run)/[^\s"\',;)\]]*)')


_FIELD_ERROR = re.compile(r"""\{'type': '(\w+)', 'loc': \(([^)]*)\), 'msg': (['"])(.*?)\3""")


def _field_errors(text: str) -> str:
    """A pydantic dump of field errors (FastAPI servers: llama-cpp-python, vLLM) as `loc: msg`
    pairs, without the union branches that only say the role did not match."""
    found = [(kind, ".".join(p.strip(" '\"") for p in loc.split(",") if p.strip()), msg)
             for kind, loc, _, msg in _FIELD_ERROR.findall(text)]
    if not found:
        return text
    useful = [f for f in found if f[0] != "literal_error"] or found
    head = text.split("{", 1)[0].strip()
    return " ".join([head] + list(dict.fromkeys(f"{loc}: {msg};" for _, loc, msg in useful))).rstrip(";")


def tidy(text: str) -> str:
    """An upstream's words fit for a client: no stack trace (its last line, the exception, stays),
    no file paths, one line, at most MAX_UPSTREAM_MESSAGE characters."""
    text = _field_errors(text)
    if _TRACEBACK in text:
        before, _, trace = text.partition(_TRACEBACK)
        lines = [line for line in trace.splitlines() if line.strip() and not _FRAME.match(line)]
        text = before + (" " + lines[-1].strip() if lines else "")
    text = "\n".join(line for line in text.splitlines() if not _FRAME.match(line))
    text = " ".join(_PATH.sub("[path]", text).split())
    if len(text) > MAX_UPSTREAM_MESSAGE:
        text = text[:MAX_UPSTREAM_MESSAGE - 1].rstrip() + "…"
    return text


def upstream_message(body: bytes | str | dict | None) -> str:
    """The human message out of an upstream error body (OpenAI, OpenRouter, vLLM, llama.cpp
    shapes), tidied: the message, not a stack trace or the server's paths.  Secrets are masked
    before anything is cut or rewritten, so that no part of a key survives a cut."""
    return tidy(redact.scrub(_raw_message(body))) or "(empty body)"


def _raw_message(body: bytes | str | dict | None) -> str:
    obj = body
    if isinstance(body, (bytes, str)):
        try:
            obj = json.loads(body)
        except ValueError:                                  # not JSON, or not UTF-8
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            return redact.scrub(text)[:4000]
    obj = _unwrapped(obj)
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            if isinstance(msg, str) and msg:
                return msg
            if isinstance(msg, list):                     # FastAPI's 422: a list of field errors
                return "; ".join(f"{'.'.join(map(str, d.get('loc', ())))}: {d.get('msg', '')}"
                                 for d in msg if isinstance(d, dict))
        if isinstance(err, str):
            return err
        if isinstance(obj.get("message"), str):
            return obj["message"]
    return redact.scrub(str(obj))[:4000]


def _unwrapped(obj):
    """Gemini's OpenAI-compatible endpoint answers errors as a one-element list of the error object."""
    return obj[0] if isinstance(obj, list) and len(obj) == 1 and isinstance(obj[0], dict) else obj


def _upstream_code(body: bytes | str | dict | None) -> str:
    obj = body
    if isinstance(body, (bytes, str)):
        try:
            obj = json.loads(body)
        except ValueError:
            return ""
    obj = _unwrapped(obj)
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        err = obj["error"]
        return f"{err.get('code') or ''} {err.get('type') or ''}".strip()
    return ""


def from_upstream(status: int, body: bytes | str | dict | None, *, provider: str,
                  retry_after: float | None = None, coding: str | None = None) -> ClientFacingError:
    """Map an upstream HTTP error answer to our tree (docs/PROTOCOL.md §5.7); `coding` is its
    content-encoding, when its body is the bytes as sent."""
    if coding is not None and isinstance(body, bytes):
        body = decoded(body, coding)
    message = upstream_message(body)
    code = _upstream_code(body)
    if status in OVERFLOW_STATUSES and is_overflow(message, code):
        return PromptTooLong(upstream=f"{message} (provider '{provider}', HTTP {status})" if provider else message,
                             upstream_status=status, provider=provider)
    if status == 429 and "insufficient_quota" in code:
        cls, retryable = BillingError, False
    elif status in STATUS_TO_ERROR:
        cls, retryable = STATUS_TO_ERROR[status]
    elif 400 <= status < 500:
        cls, retryable = InvalidRequest, False
    else:
        cls, retryable = ApiError, True
    if status == 401:
        message = f"upstream provider '{provider}' rejected the proxy's API key: {message}"
    elif provider:                        # an HTTP answer; an in-stream error names no status of its own
        message = f"{message} (provider '{provider}', HTTP {status})"
    return cls(message, retryable=retryable, retry_after=retry_after, upstream_status=status, provider=provider)


def from_stream_error(obj: dict, provider: str | None = None) -> ClientFacingError:
    """An error that arrived as a data event inside an upstream stream (OpenRouter, vLLM, and
    the Responses API's `error` event, which nests `message` and `code` under `error`)."""
    err = obj.get("error") if isinstance(obj.get("error"), dict) else obj
    message = upstream_message(obj)
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, int) and 400 <= code <= 599:
        return from_upstream(code, obj, provider=provider or "")
    etype = err.get("type") if isinstance(err, dict) else None
    words = " ".join(str(w) for w in (code, etype) if isinstance(w, (str, int)) and not isinstance(w, bool))
    if is_overflow(message, words):
        return PromptTooLong(upstream=message, provider=provider)
    cls = next((STREAM_CODE_TO_ERROR[w] for w in words.split() if w in STREAM_CODE_TO_ERROR), None)
    if cls is None:
        cls = TYPE_TO_ERROR.get(etype, ApiError) if isinstance(etype, str) else ApiError
    return cls(message, provider=provider)


# An in-stream error's OpenAI code -> our class, where its `type` is not one of Anthropic's.
# https://platform.openai.com/docs/guides/error-codes: "You exceeded your current quota" is
# insufficient_quota (a billing matter, never worth a retry).
STREAM_CODE_TO_ERROR: dict[str, type[ClientFacingError]] = {
    "insufficient_quota": BillingError,
}


MAX_DECODED = 256 * 1024                 # bytes an error body may decode to
_ZLIB_BITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class _Unreadable(Exception):
    """Why a compressed error body cannot be read (the end of a sentence)."""


def decoded(body: bytes, coding: str) -> bytes:
    """An error body with the content codings its content-encoding names undone, the last applied
    first (RFC 9110 section 8.4): gzip and deflate by zlib, br where a brotli module is installed.
    ccproxyd asks for identity; a server that compresses its error answers anyway (a CDN in front
    of it) is still understood.  A body in a coding ccproxyd cannot read, or one that does not
    decode whole, becomes a sentence that says so: never the compressed bytes shown as text, nor a
    part of a body cut short (its cut could fall inside a key, which then escapes the scrub)."""
    if not body:
        return body                      # nothing to decode: an empty body, whatever its coding
    try:
        for name in reversed([c.strip().lower() for c in coding.split(",") if c.strip()]):
            if name != "identity":
                body = _undo(name, body)
        return body
    except _Unreadable as exc:
        return (f"the error answer's body is compressed (content-encoding {redact.scrub(coding)[:40]!r}) "
                f"{exc}").encode()


def _undo(name: str, body: bytes) -> bytes:
    if name in _ZLIB_BITS:
        try:
            return _inflate(zlib.decompressobj(_ZLIB_BITS[name]), body)
        except zlib.error:
            if name != "deflate":
                raise _Unreadable("and does not decode") from None
        try:                             # "deflate" sent raw, without its zlib wrapper (as httpx allows)
            return _inflate(zlib.decompressobj(-zlib.MAX_WBITS), body)
        except zlib.error:
            raise _Unreadable("and does not decode") from None
    if name == "br" and brotli is not None:
        return _unbrotli(body)
    raise _Unreadable("in a coding ccproxyd cannot read" + (" (no brotli module is installed)" if name == "br" else ""))


def _inflate(decompressor, body: bytes) -> bytes:
    out = decompressor.decompress(body, MAX_DECODED + 1)
    if len(out) > MAX_DECODED:
        raise _Unreadable(f"and decodes to more than {MAX_DECODED} bytes")
    if not decompressor.eof:
        raise _Unreadable("and does not decode (it is cut short)")
    return out


def _unbrotli(body: bytes) -> bytes:
    decompressor = brotli.Decompressor()
    try:
        out = decompressor.process(body, output_buffer_limit=MAX_DECODED + 1)
    except TypeError:                    # a brotli module older than 1.2 cannot bound its output: one
        raise _Unreadable("in a coding ccproxyd cannot read safely (the brotli module installed is "   # KB
                          "older than 1.2)") from None                                   # may make 100s of MB
    except brotli.error:
        raise _Unreadable("and does not decode") from None
    if len(out) > MAX_DECODED:
        raise _Unreadable(f"and decodes to more than {MAX_DECODED} bytes")
    if not decompressor.is_finished():
        raise _Unreadable("and does not decode (it is cut short)")
    return out

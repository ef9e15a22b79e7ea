"""The one exception tree of ccproxyd, and the one function that turns it into an Anthropic error.

    CcproxydError                      anything ccproxyd raises on purpose
    ├── ConfigError                    a routing table that cannot be used (operator-facing;
    │                                  carries every Problem with PATH:LINE:COL)
    ├── CatalogError                   a price catalog or override file that cannot be used
    ├── EncodingError                  a tiktoken data file that is missing or damaged
    ├── Unreachable                    the command line could not ask the running daemon
    │                                  (str() is one line for the user)
    └── ClientFacingError              ends as an Anthropic error body + HTTP status
        ├── InvalidRequest             400 invalid_request_error (malformed JSON, missing fields)
        │   ├── PromptTooLong           a request larger than the routed model's window, or a
        │   │                          provider's own overflow error (Anthropic's wording)
        │   ├── ThreadAlreadyContinued  400 + details.error_code thread_already_continued
        │   ├── ThreadContinueInFlight  400 + details.error_code thread_continue_in_flight
        │   └── ThreadUnsupported       400 + details.error_code thread_unsupported_request
        ├── AuthenticationFailed       401 authentication_error
        ├── BillingError               402 billing_error
        │   └── BudgetExhausted        a client's budget_usd (names the budget and when it resets)
        ├── PermissionDenied           403 permission_error
        │   └── ModelNotAllowed        a model outside the client's `models` globs
        ├── NotFound                   404 not_found_error
        │   └── ThreadNotFound         404 + details.error_code thread_not_found
        ├── RequestTooLarge            413 request_too_large
        ├── RateLimited                429 rate_limit_error (retry_after)
        │   └── ClientLimited          a client's rpm or tpm (names the limit; retry_after)
        ├── ApiError                   500 api_error
        │   ├── MissingCredential      a provider's key variable is unset (names the variable)
        │   ├── UntrustedCertificate   the provider's TLS certificate failed verification (names
        │   │                          the provider and the reason; never retried)
        │   ├── ConnectionDropped      the upstream closed the connection without answering
        │   ├── CallCancelled          an upstream call ccproxyd cancelled (every client left, or
        │   │                          shutdown); a flight's followers see it
        │   └── Untranslatable         upstream data that cannot be translated (never cached)
        ├── UpstreamTimeout            504 timeout_error
        └── Overloaded                 529 overloaded_error (retry_after)

`retryable`, on instances created from an upstream answer or a transport failure, says whether
another attempt (or a fallback target) may succeed.

Standard library only (no orjson): `ccproxyd statusline` imports the tree, and starts in tens of ms.

`from_upstream(status, body)` maps an upstream HTTP error to this tree (one table);
`to_anthropic(exc)` gives (status, body, headers) for a client.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from . import redact


class CcproxydError(Exception):
    """Base of every error ccproxyd raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One located problem in a routing table: PATH:LINE:COL: message (line/col 1-based)."""

    path: str
    line: int
    col: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {'warning: ' if self.warning else ''}{self.message}"


class CatalogError(CcproxydError):
    """A price catalog file that cannot be used; `problems` lists each as `where: message`."""

    def __init__(self, origin: str, problems: list[str]) -> None:
        self.origin, self.problems = origin, problems
        super().__init__(f"{origin}: " + f"\n{origin}: ".join(problems))


class EncodingError(CcproxydError):
    """A tiktoken encoding file that is missing, or whose checksum does not match."""


class Unreachable(CcproxydError):
    """The daemon could not be asked, or did not answer as a ccproxyd does; str() is one line."""


class ConfigError(CcproxydError):
    """A routing table that cannot be used; `problems` are all errors found (not warnings)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ClientFacingError(CcproxydError):
    """`message` is scrubbed of every provider secret when the error is made: upstream words
    (error bodies, in-stream errors, transport messages) all pass through here on their way to a
    client, a log line or a metric.  `provider` and `attempts` say which upstream failed and how
    many tries it got (0: none was tried); `held_back` marks a target skipped by its breaker or
    concurrency cap rather than one that answered; `upstream_model` is the model it was asked for.
    `details` is the body's `error.details` (a stable `error_code` the SDKs branch on), for the
    errors that have one."""
    status = 500
    error_type = "api_error"
    details: dict | None = None

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None,
                 upstream_status: int | None = None, provider: str | None = None, held_back: bool = False):
        message = redact.scrub(message)
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        self.provider = provider
        self.held_back = held_back
        self.attempts = 0
        self.upstream_model: str | None = None


class InvalidRequest(ClientFacingError):
    status, error_type = 400, "invalid_request_error"


class PromptTooLong(InvalidRequest):
    r"""A prompt that does not fit the window: ccproxyd's own count against the routed model's
    `context_window` (`tokens` > `limit`), or a provider's overflow error (`OVERFLOW_CODES`,
    `OVERFLOW_PHRASES`; its numbers when `OVERFLOW_NUMBERS` finds them, then its own words).  Worded as Anthropic words it, which Claude Code 2.1.332
    matches (case-insensitive "prompt is too long", and the two numbers by
    /prompt is too long[^0-9]*(\d+)\s*tokens?\s*>\s*(\d+)/) to compact the conversation and
    retry: `prompt is too long: 200251 tokens > 200000 maximum`
    (https://github.com/boldsoftware/exe.dev/issues/62, the API's own 400 body)."""

    def __init__(self, tokens: int | None = None, limit: int | None = None, *, upstream: str | None = None,
                 **kwargs) -> None:
        if upstream is not None and tokens is None:
            tokens, limit = overflow_numbers(upstream)
        if upstream is not None and upstream.lower().startswith("prompt is too long"):
            message = upstream                        # said the Anthropic way already
        elif tokens is not None and limit is not None:
            message = f"prompt is too long: {tokens} tokens > {limit} maximum"
            if upstream is not None:
                message += f" ({upstream})"
        else:
            message = f"prompt is too long: {upstream or 'the provider says the context window is exceeded'}"
        super().__init__(message, **kwargs)
        self.tokens, self.limit = tokens, limit


# Providers' overflow wordings that give both numbers -> (pattern, group of the prompt's tokens,
# group of the limit), so that the answer carries them where Claude Code reads them.
OVERFLOW_NUMBERS: tuple[tuple[re.Pattern, int, int], ...] = (
    # Anthropic-shaped: "prompt is too long: 200251 tokens > 200000 maximum"
    (re.compile(r"prompt is too long: (\d+) tokens > (\d+) maximum", re.I), 1, 2),
    # OpenAI, vLLM: "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens"
    # / "However, your messages resulted in 130000 tokens"
    (re.compile(r"maximum context length is (\d+) tokens.*?(?:requested|resulted in) (\d+) tokens", re.I | re.S), 2, 1),
    # xAI: "This model's maximum prompt length is 131072 but the request contains 136973 tokens."
    (re.compile(r"maximum prompt length is (\d+) but the request contains (\d+) tokens", re.I), 2, 1),
    # xAI: "[input_too_large] Current message (1149677 tokens) exceeds budget (975424 tokens)"
    (re.compile(r"\((\d+) tokens\) exceeds budget \((\d+) tokens\)", re.I), 1, 2),
)


def overflow_numbers(message: str) -> tuple[int | None, int | None]:
    """(prompt tokens, limit) out of a provider's overflow message, or (None, None)."""
    for pattern, tokens, limit in OVERFLOW_NUMBERS:
        found = pattern.search(message)
        if found:
            return int(found.group(tokens)), int(found.group(limit))
    return None, None


class ThreadAlreadyContinued(InvalidRequest):
    """The thread point `previous_message_id` names was continued already (each is continued once)."""
    details = {"error_code": "thread_already_continued"}


class ThreadContinueInFlight(InvalidRequest):
    """Another request is still continuing from the same thread point."""
    details = {"error_code": "thread_continue_in_flight"}


class ThreadUnsupported(InvalidRequest):
    """A request ccproxyd cannot thread (threads off, a conversation over the size limit); `unsupported`
    names the request fields to blame, when there are any (the SDKs then send the whole history)."""

    def __init__(self, message: str, *, unsupported: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = {"error_code": "thread_unsupported_request"}
        if unsupported is not None:
            self.details["unsupported"] = list(unsupported)


class AuthenticationFailed(ClientFacingError):
    status, error_type = 401, "authentication_error"


class BillingError(ClientFacingError):
    status, error_type = 402, "billing_error"


class BudgetExhausted(BillingError):
    """A client's daily or monthly budget_usd is spent (clients.<name>.budget_usd)."""


class PermissionDenied(ClientFacingError):
    status, error_type = 403, "permission_error"


class ModelNotAllowed(PermissionDenied):
    """The client's policy does not allow the model it asked for (clients.<name>.models)."""


class NotFound(ClientFacingError):
    status, error_type = 404, "not_found_error"


class ThreadNotFound(NotFound):
    """No thread state for `previous_message_id`: expired, evicted, lost in a restart, or not this client's."""
    details = {"error_code": "thread_not_found"}


class RequestTooLarge(ClientFacingError):
    status, error_type = 413, "request_too_large"


class RateLimited(ClientFacingError):
    status, error_type = 429, "rate_limit_error"


class ClientLimited(RateLimited):
    """A client is over its rpm or tpm (clients.<name>); retry_after says when a slot frees."""


class ApiError(ClientFacingError):
    status, error_type = 500, "api_error"


class MissingCredential(ApiError):
    """A provider's API key variable is unset: an operator mistake, never worth a client retry."""


class UntrustedCertificate(ApiError):
    """The provider's TLS certificate failed verification (unknown CA, expired, wrong host name):
    a trust setting to fix (`ca_file`, `SSL_CERT_FILE`), not a busy provider.  Not retried, not a
    breaker failure, and the client is told not to retry either."""


class ConnectionDropped(ApiError):
    """The upstream closed the connection without answering: a stale keep-alive connection, an
    HTTP/2 GOAWAY, or a server that went away mid-request."""


class CallCancelled(ApiError):
    """An upstream call ccproxyd cancelled: every client of it left, or the daemon is stopping."""

    def __init__(self, message: str = "the upstream call was cancelled", **kwargs) -> None:
        super().__init__(message, **kwargs)


class Untranslatable(ApiError):
    """Upstream data that cannot be translated: not JSON, the wrong shape, or a translator bug.
    The answer ends in an error (never a clean stop over a hole) and is never cached."""


class UpstreamTimeout(ClientFacingError):
    status, error_type = 504, "timeout_error"


class Overloaded(ClientFacingError):
    status, error_type = 529, "overloaded_error"


# Upstream HTTP status -> (our class, retryable).  Unknown statuses take the explicit paths in
# `from_upstream`: other 4xx -> InvalidRequest, other 5xx -> ApiError.
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
TYPE_TO_ERROR: dict[str, type[ClientFacingError]] = {
    cls.error_type: cls
    for cls in (InvalidRequest, AuthenticationFailed, BillingError, PermissionDenied, NotFound,
                RequestTooLarge, RateLimited, ApiError, UpstreamTimeout, Overloaded)
}

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
                  retry_after: float | None = None) -> ClientFacingError:
    """Map an upstream HTTP error answer to our tree (PROTOCOL.md §5.7)."""
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


def error_body(exc: ClientFacingError, request_id: str | None = None) -> dict:
    body: dict = {"type": "error", "error": {"type": exc.error_type, "message": exc.message}}
    if exc.details is not None:
        body["error"]["details"] = exc.details
    if request_id:
        body["request_id"] = request_id
    return body


def to_anthropic(exc: BaseException, request_id: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    """Any exception -> (HTTP status, Anthropic error JSON, extra headers)."""
    if not isinstance(exc, ClientFacingError):
        exc = ApiError(f"internal error in ccproxyd: {type(exc).__name__}")
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, int(round(exc.retry_after))))
    if isinstance(exc, (MissingCredential, UntrustedCertificate)):
        headers["x-should-retry"] = "false"
    return exc.status, json.dumps(error_body(exc, request_id), separators=(",", ":"), ensure_ascii=False).encode(), headers

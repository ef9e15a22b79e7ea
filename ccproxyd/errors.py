"""The one exception tree of ccproxyd, and the one function that turns it into an Anthropic error.

    CcproxydError                      anything ccproxyd raises on purpose
    ├── ConfigError                    a routing table that cannot be used (operator-facing;
    │                                  carries every Problem with PATH:LINE:COL)
    └── ClientFacingError              ends as an Anthropic error body + HTTP status
        ├── InvalidRequest             400 invalid_request_error (malformed JSON, missing fields)
        ├── AuthenticationFailed       401 authentication_error
        ├── BillingError               402 billing_error
        ├── PermissionDenied           403 permission_error
        ├── NotFound                   404 not_found_error
        ├── RequestTooLarge            413 request_too_large
        ├── RateLimited                429 rate_limit_error (retry_after)
        ├── ApiError                   500 api_error
        │   ├── MissingCredential      a provider's key variable is unset (names the variable)
        │   ├── UntrustedCertificate   the provider's TLS certificate failed verification (names
        │   │                          the provider and the reason; never retried)
        │   ├── ConnectionDropped      the upstream closed the connection without answering
        │   └── Untranslatable         upstream data that cannot be translated (never cached)
        ├── UpstreamTimeout            504 timeout_error
        └── Overloaded                 529 overloaded_error (retry_after)

`UpstreamFailure` is a mixin flag on instances created from an upstream answer or a transport
failure: `retryable` says whether another attempt (or a fallback target) may succeed.

`from_upstream(status, body)` maps an upstream HTTP error to this tree (one table);
`to_anthropic(exc)` gives (status, body, headers) for a client.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

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
    concurrency cap rather than one that answered."""
    status = 500
    error_type = "api_error"

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


class InvalidRequest(ClientFacingError):
    status, error_type = 400, "invalid_request_error"


class AuthenticationFailed(ClientFacingError):
    status, error_type = 401, "authentication_error"


class BillingError(ClientFacingError):
    status, error_type = 402, "billing_error"


class PermissionDenied(ClientFacingError):
    status, error_type = 403, "permission_error"


class NotFound(ClientFacingError):
    status, error_type = 404, "not_found_error"


class RequestTooLarge(ClientFacingError):
    status, error_type = 413, "request_too_large"


class RateLimited(ClientFacingError):
    status, error_type = 429, "rate_limit_error"


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

_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window",
                    "prompt is too long", "too many tokens")


def upstream_message(body: bytes | str | dict | None) -> str:
    """Best-effort human message out of an upstream error body (OpenAI, OpenRouter, vLLM shapes)."""
    obj = body
    if isinstance(body, (bytes, str)):
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            return text.strip()[:500] or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            if isinstance(msg, str) and msg:
                return msg
        if isinstance(err, str):
            return err
        if isinstance(obj.get("message"), str):
            return obj["message"]
    return str(obj)[:500]


def _upstream_code(body: bytes | str | dict | None) -> str:
    obj = body
    if isinstance(body, (bytes, str)):
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return ""
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        err = obj["error"]
        return f"{err.get('code') or ''} {err.get('type') or ''}".strip()
    return ""


def from_upstream(status: int, body: bytes | str | dict | None, *, provider: str,
                  retry_after: float | None = None) -> ClientFacingError:
    """Map an upstream HTTP error answer to our tree (PROTOCOL.md §5.7)."""
    message = upstream_message(body)
    code = _upstream_code(body)
    if status == 429 and "insufficient_quota" in code:
        cls, retryable = BillingError, False
    elif status in STATUS_TO_ERROR:
        cls, retryable = STATUS_TO_ERROR[status]
    elif 400 <= status < 500:
        cls, retryable = InvalidRequest, False
    else:
        cls, retryable = ApiError, True
    if cls is InvalidRequest and any(m in (message + code).lower() for m in _CONTEXT_MARKERS):
        message = f"prompt is too long: {message}"
    if status == 401:
        message = f"upstream provider '{provider}' rejected the proxy's API key: {message}"
    return cls(message, retryable=retryable, retry_after=retry_after, upstream_status=status, provider=provider)


def from_stream_error(obj: dict, provider: str | None = None) -> ClientFacingError:
    """An error that arrived as a data event inside an upstream stream (OpenRouter, vLLM)."""
    err = obj.get("error") if isinstance(obj.get("error"), dict) else obj
    message = upstream_message(obj)
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, int) and 400 <= code <= 599:
        return from_upstream(code, obj, provider=provider or "upstream")
    etype = err.get("type") if isinstance(err, dict) else None
    cls = TYPE_TO_ERROR.get(etype, ApiError) if isinstance(etype, str) else ApiError
    return cls(message, provider=provider)


def error_body(exc: ClientFacingError, request_id: str | None = None) -> dict:
    body: dict = {"type": "error", "error": {"type": exc.error_type, "message": exc.message}}
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
    return exc.status, orjson.dumps(error_body(exc, request_id)), headers

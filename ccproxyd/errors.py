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

from .observe import redact


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
                 upstream_status: int | None = None, provider: str | None = None, held_back: bool = False,
                 attempts: int = 0, upstream_model: str | None = None):
        message = redact.scrub(message)
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        self.provider = provider
        self.held_back = held_back
        self.attempts = attempts
        self.upstream_model = upstream_model

    def within(self, *, provider: str | None = None, attempts: int = 0,
               upstream_model: str | None = None) -> "ClientFacingError":
        """This error with the context its raiser did not know (which provider, after how many
        attempts, for which upstream model): a new error of the same class and message, with the
        fields it had left empty filled in, and the same traceback; `self` when there is nothing
        to add.  Nothing is assigned to an exception after it was made (tests/test_style.py)."""
        fresh = {key: value for key, value in (("provider", provider), ("attempts", attempts),
                                               ("upstream_model", upstream_model))
                 if value and not getattr(self, key)}
        if not fresh:
            return self
        new = BaseException.__new__(type(self), *self.args)
        new.__dict__.update(self.__dict__, **fresh)
        return new.with_traceback(self.__traceback__)


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
TYPE_TO_ERROR: dict[str, type[ClientFacingError]] = {
    cls.error_type: cls
    for cls in (InvalidRequest, AuthenticationFailed, BillingError, PermissionDenied, NotFound,
                RequestTooLarge, RateLimited, ApiError, UpstreamTimeout, Overloaded)
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

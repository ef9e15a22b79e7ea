"""Provider secrets never leave: every key ccproxyd has read is remembered here, and `scrub`
removes it, in each form an upstream may echo it, from any text before that text reaches a
client, a log line, a metric or the cache.

The registry is process-wide because a key can surface anywhere an upstream's words travel
(an error body, an in-stream error event, an HTML page, an exception's text).  `credentials`
registers each key as it reads it, so a key that was ever sent is always known.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import quote, quote_plus

MASK = "[redacted]"
MIN_SECRET = 8                  # shorter values would mask ordinary words; no real key is this short

_forms: set[str] = set()
_longest_first: tuple[str, ...] = ()
_pattern: re.Pattern[str] | None = None


def _variants(secret: str) -> set[str]:
    """The ways a key appears in echoed text: bare (also after `Bearer `), URL-encoded, in a
    Basic credential, and with JSON's escaped slash."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), secret.replace("/", "\\/")}
    for user in ("", "user:", "api:"):
        forms.add(base64.b64encode(f"{user}{secret}".encode()).decode().rstrip("="))
        forms.add(base64.b64encode(f"{secret}:".encode()).decode().rstrip("="))
    return {f for f in forms if len(f) >= MIN_SECRET}


def register(secret: str | None) -> None:
    """Remember a secret (idempotent); shorter than MIN_SECRET characters is ignored."""
    global _pattern, _longest_first
    if not secret or len(secret) < MIN_SECRET:
        return
    new = _variants(secret) - _forms
    if new:
        _forms.update(new)
        # longest first, so a form that contains another is masked whole
        _longest_first = tuple(sorted(_forms, key=len, reverse=True))
        _pattern = re.compile("|".join(re.escape(f) for f in _longest_first))


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by MASK; `text` itself when it holds none
    (looked for form by form first: a substring search is a sixth of the pattern's scan, and
    nearly every text, such as each log line, holds no secret)."""
    if _pattern is None or not text or not any(form in text for form in _longest_first):
        return text
    return _pattern.sub(MASK, text)


def scrub_bytes(data: bytes) -> bytes:
    if _pattern is None or not data:
        return data
    text = data.decode("utf-8", "surrogateescape")
    cleaned = scrub(text)
    return data if cleaned is text else cleaned.encode("utf-8", "surrogateescape")


def shown(data: bytes, limit: int) -> bytes:
    """At most `limit` bytes of what an upstream sent, for an error message: every provider secret
    is masked before the cut, which could otherwise fall inside one and leave its start readable."""
    return scrub_bytes(data)[:limit]


def clear() -> None:
    """Forget every secret (tests)."""
    global _pattern, _longest_first
    _forms.clear()
    _longest_first = ()
    _pattern = None

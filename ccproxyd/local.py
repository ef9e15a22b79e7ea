"""Asking the running daemon from the command line (`costs`, `statusline`).

Standard library only (no httpx2, no click, no orjson): `ccproxyd statusline` runs after every
message Claude Code shows and must answer within 300 ms, most of which is interpreter start-up.
Every problem reaching the daemon is a `Unreachable` whose text is one line for the user.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse

from .settings import Settings


class Unreachable(Exception):
    """The daemon could not be asked, or did not answer as a ccproxyd does; str() is one line."""


def daemon_url(url: str | None = None, *fallbacks: str) -> str:
    """--url / CCPROXYD_URL, then the first of `fallbacks` that is set, else loopback at
    CCPROXYD_PORT (8082); without a trailing slash."""
    for candidate in (url, *fallbacks):
        if candidate:
            return candidate.rstrip("/")
    return f"http://127.0.0.1:{os.environ.get('CCPROXYD_PORT') or Settings.port}"


def client_key() -> str:
    """The key to present when the daemon wants client keys: CCPROXYD_CLIENT_KEY, else the token
    or key Claude Code itself sends (a status line runs in Claude Code's environment)."""
    return (os.environ.get("CCPROXYD_CLIENT_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")
            or os.environ.get("ANTHROPIC_API_KEY") or "")


def get_json(base: str, path: str, query: dict | None = None, timeout: float = 5.0) -> dict:
    """GET base+path?query as JSON from a ccproxyd; raises Unreachable with one line."""
    try:
        parts = urllib.parse.urlsplit(base)
        port = parts.port
    except ValueError as exc:
        raise Unreachable(f"{base} is not a usable URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unreachable(f"{base} is not an http:// or https:// URL")
    target = parts.path.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, port, timeout=timeout)
    headers = {"accept": "application/json"}
    if client_key():
        headers["x-api-key"] = client_key()
    try:
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        body = response.read()
    except TimeoutError:
        raise Unreachable(f"no answer from {base} within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise Unreachable(f"no daemon answers at {base} (connection refused): start it with `ccproxyd serve`") from None
    except (OSError, http.client.HTTPException) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Unreachable(f"cannot reach {base}: {reason}") from None
    finally:
        connection.close()
    try:
        answer = json.loads(body)
    except ValueError:
        raise Unreachable(f"{base}{path} did not answer as a ccproxyd does (HTTP {response.status}, not JSON)") from None
    if response.status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if message is None:
            raise Unreachable(f"{base}{path} did not answer as a ccproxyd does (HTTP {response.status})")
        hint = " (set CCPROXYD_CLIENT_KEY)" if response.status == 401 else ""
        raise Unreachable(f"{base}{path}: HTTP {response.status}: {message}{hint}")
    if not isinstance(answer, dict):
        raise Unreachable(f"{base}{path} did not answer as a ccproxyd does")
    return answer

"""Asking the running daemon from the command line (`costs`, `statusline`).

Standard library only (no httpx2, no click, no orjson; errors.py is too): `ccproxyd statusline` runs after every
message Claude Code shows and must answer within 300 ms, most of which is interpreter start-up.
A plain http:// daemon is asked over a bare socket (http.client and the ssl and email modules it
loads cost more than the request); https goes through http.client.  Every problem reaching the
daemon is a `Unreachable` whose text is one line for the user.
"""

from __future__ import annotations

import json
import os
import socket
from urllib.parse import urlencode, urlsplit

from ..errors import Unreachable


def daemon_url(url: str | None = None, *fallbacks: str) -> str:
    """--url / CCPROXYD_URL, then the first of `fallbacks` that is set, else loopback at
    CCPROXYD_PORT (8082); without a trailing slash."""
    for candidate in (url, *fallbacks):
        if candidate:
            return candidate.rstrip("/")
    from ..config.settings import Settings

    return f"http://127.0.0.1:{os.environ.get('CCPROXYD_PORT') or Settings.port}"


def client_key(base: str) -> str:
    """The key to present when the daemon wants client keys: CCPROXYD_CLIENT_KEY, else the token
    or key Claude Code itself sends (a status line runs in Claude Code's environment), but only
    to the daemon Claude Code is pointed at: an Anthropic key never goes anywhere else."""
    if os.environ.get("CCPROXYD_CLIENT_KEY"):
        return os.environ["CCPROXYD_CLIENT_KEY"]
    if os.environ.get("ANTHROPIC_BASE_URL", "").rstrip("/") == base.rstrip("/"):
        return os.environ.get("ANTHROPIC_AUTH_TOKEN") or os.environ.get("ANTHROPIC_API_KEY") or ""
    return ""


def get_json(base: str, path: str, query: dict | None = None, timeout: float = 5.0) -> dict:
    """GET base+path?query as JSON from a ccproxyd; raises Unreachable with one line."""
    try:
        parts = urlsplit(base)
        port = parts.port
    except ValueError as exc:
        raise Unreachable(f"{base} is not a usable URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unreachable(f"{base} is not an http:// or https:// URL")
    target = parts.path.rstrip("/") + path + ("?" + urlencode(query) if query else "")
    headers = {"accept": "application/json"}
    key = client_key(base)
    if key:
        headers["x-api-key"] = key
    get = _get if parts.scheme == "http" else _get_https
    try:
        status, body = get(parts.hostname, port or (80 if parts.scheme == "http" else 443), target, headers, timeout)
    except TimeoutError:
        raise Unreachable(f"no answer from {base} within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise Unreachable(f"no daemon answers at {base} (connection refused): start it with `ccproxyd serve`") from None
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Unreachable(f"cannot reach {base}: {reason}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise Unreachable(f"{base}{path} did not answer as a ccproxyd does (HTTP {status}, not JSON)") from None
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if message is None:
            raise Unreachable(f"{base}{path} did not answer as a ccproxyd does (HTTP {status})")
        hint = " (set CCPROXYD_CLIENT_KEY)" if status == 401 else ""
        raise Unreachable(f"{base}{path}: HTTP {status}: {message}{hint}")
    if not isinstance(answer, dict):
        raise Unreachable(f"{base}{path} did not answer as a ccproxyd does")
    return answer


def _get(host: str, port: int, target: str, headers: dict, timeout: float) -> tuple[int, bytes]:
    """One HTTP/1.1 GET with `Connection: close`; the body is what comes until the server closes
    (or Content-Length says it is complete)."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        data = b""
        length = None
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and length is None:
                length = _content_length(head)
            if sep and length is not None and len(body) >= length:
                break
    head, sep, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or not status_line[1].isdigit():
        raise ValueError("the answer is not HTTP")
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return int(status_line[1]), body


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2:]
    return out


def _get_https(host: str, port: int, target: str, headers: dict, timeout: float) -> tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPSConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    finally:
        connection.close()

"""One HTTP client per provider; the one place that maps httpx2 exceptions to ours.

Both transports (http2.py over HTTP/2, http11.py over HTTP/1.1) get the same trust and the same
route out: `ssl_context` (the provider's `ca_file`, else `SSL_CERT_FILE` / `SSL_CERT_DIR`, else
the system store) and `proxy_for` (`HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` unless `NO_PROXY`
names the host), read when the provider's client is built.
"""

from __future__ import annotations

import contextlib
import ssl
import urllib.parse
import urllib.request
from functools import lru_cache
from typing import Callable, Mapping

import httpx2

from .. import __version__
from ..config.table import Provider
from ..observe import redact
from ..errors import (ApiError,
                      ClientFacingError,
                      ConnectionDropped,
                      MissingCredential,
                      Overloaded,
                      Untranslatable,
                      UntrustedCertificate,
                      UpstreamTimeout)
from ..translate.provider_errors import from_upstream
from .http11 import Http11Transport
from .http2 import Http2Transport

# Content codings httpx2 decodes (brotli and zstandard are not installed).  ccproxyd asks for
# identity; a server that compresses anyway (a CDN in front of it) is still understood.
DECODED = frozenset({"identity", "gzip", "deflate"})
WRITE_TIMEOUT = 60.0     # seconds to send a request body
POOL_TIMEOUT = 30.0      # seconds to wait for a free connection when max_connections are busy
MAX_ERROR_BODY = 256 * 1024   # bytes of an error answer read (providers' error bodies are a few KB)


def map_transport_error(exc: httpx2.HTTPError, provider: str) -> ClientFacingError:
    """httpx2 exception -> our tree.  Every upstream transport failure goes through here."""
    certificate = _certificate_error(exc)
    if certificate is not None:
        return UntrustedCertificate(
            f"provider '{provider}': the TLS certificate{_host_of(exc)} failed verification "
            f"({certificate.verify_message or certificate.reason or certificate}); trust its CA with the "
            "provider's ca_file (a PEM bundle) or SSL_CERT_FILE", retryable=False, provider=provider)
    if isinstance(exc, httpx2.ProxyError):
        return ApiError(f"provider '{provider}': the outbound proxy refused the connection ({exc})", retryable=True)
    if isinstance(exc, httpx2.ConnectTimeout):
        return Overloaded(f"provider '{provider}': connection timed out", retryable=True)
    if isinstance(exc, httpx2.ConnectError):
        return Overloaded(f"provider '{provider}': cannot connect ({exc})", retryable=True)
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamTimeout(f"provider '{provider}': timed out waiting for the upstream", retryable=True)
    if isinstance(exc, (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError)):
        return ConnectionDropped(f"provider '{provider}': the connection was closed ({type(exc).__name__}: {exc})",
                                 retryable=True)
    return ApiError(f"provider '{provider}': connection failed ({type(exc).__name__}: {exc})", retryable=True)


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a transport error, if that is what it is."""
    seen: BaseException | None = exc
    for _ in range(8):                       # httpx2 -> httpcore2 -> ssl: a short chain
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _host_of(exc: httpx2.HTTPError) -> str:
    try:
        return f" of {exc.request.url.host}"
    except RuntimeError:                     # raised by the lean transport, without a Request
        return ""


def ssl_context(provider: Provider, http2: bool) -> ssl.SSLContext:
    """The trust of both transports: the provider's `ca_file`, else SSL_CERT_FILE / SSL_CERT_DIR,
    else the system store.  One context per client, with its ALPN list (h2 first for HTTP/2)."""
    if provider.ca_file:
        try:
            context = ssl.create_default_context(cafile=provider.ca_file)
        except (OSError, ssl.SSLError) as exc:     # checked at load; gone or changed since
            raise ApiError(f"provider '{provider.name}': cannot load ca_file {provider.ca_file} ({exc})") from exc
    else:
        context = httpx2.create_ssl_context(trust_env=True)
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return context


def proxy_for(base_url: str) -> str | None:
    """The outbound proxy for `base_url` from the standard variables (HTTPS_PROXY for https,
    HTTP_PROXY for http, ALL_PROXY for either, lower case first), or None when NO_PROXY names
    its host (suffix match, `*` for every host) or no variable is set."""
    parts = urllib.parse.urlsplit(base_url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(parts.netloc, proxies):
        return None
    proxy = proxy if "://" in proxy else "http://" + proxy
    if urllib.parse.urlsplit(proxy).scheme not in ("http", "https"):
        raise ApiError(f"outbound proxy {urllib.parse.urlsplit(proxy).scheme}://… for {parts.hostname} is not "
                       "supported: ccproxyd speaks to HTTP proxies (CONNECT) only")
    return proxy


@lru_cache(maxsize=None)
def endpoint_url(base_url: str, path: str) -> httpx2.URL:
    """Parsed once per base URL and path: httpx2's URL parsing is a noticeable part of a request's cost."""
    return httpx2.URL(base_url.rstrip("/") + "/" + path)


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def _error_body(response: httpx2.Response) -> bytes:
    """An error answer's body as sent, at most MAX_ERROR_BODY bytes (`from_upstream` undoes its
    content coding, within bounds of its own); nothing when the read fails (a body cut short may
    end inside a key, which the scrub would then miss)."""
    pieces, size = [], 0
    try:
        async with contextlib.aclosing(response.aiter_raw()) as raw:
            async for piece in raw:
                pieces.append(piece)
                size += len(piece)
                if size >= MAX_ERROR_BODY:
                    break
    except httpx2.HTTPError:
        pieces = []
    finally:
        await response.aclose()
    return b"".join(pieces)[:MAX_ERROR_BODY]


class Upstreams:
    """HTTP clients by provider name; open them inside the event loop, close them on stop."""

    def __init__(self, keys: Callable[[], Mapping[str, str]] = dict) -> None:
        self.keys = keys                 # -> the current table's provider_keys (read at load, off the loop)
        self._clients: dict[Provider, httpx2.AsyncClient] = {}
        self._in_flight: dict[Provider, int] = {}
        self._retired: dict[Provider, httpx2.AsyncClient] = {}
        self._lean: dict[Provider, Http11Transport | Http2Transport] = {}

    def client(self, provider: Provider) -> httpx2.AsyncClient:
        client = self._clients.get(provider)
        if client is None:
            https = provider.base_url.startswith("https://")
            http2 = provider.http2 and https         # plain http stays HTTP/1.1 (no h2c)
            limits = httpx2.Limits(max_connections=provider.max_connections,
                                  max_keepalive_connections=provider.max_keepalive,
                                  keepalive_expiry=provider.keepalive_expiry)
            context = ssl_context(provider, http2) if https else None
            proxy = proxy_for(provider.base_url)
            transport = (Http2Transport if http2 else Http11Transport)(limits, context, proxy)
            client = httpx2.AsyncClient(
                trust_env=False, follow_redirects=False, transport=transport,
                timeout=httpx2.Timeout(connect=provider.connect_timeout, read=provider.read_timeout,
                                      write=WRITE_TIMEOUT, pool=POOL_TIMEOUT),
            )
            self._clients[provider] = client
            self._lean[provider] = transport
        return client

    def headers(self, provider: Provider) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "text/event-stream, application/json",
                   # the stream is relayed as it arrives: compression would only cost CPU
                   "accept-encoding": "identity", "user-agent": f"ccproxyd/{__version__}",
                   **dict(provider.headers)}
        if provider.api_key_env:
            key = self.keys().get(provider.api_key_env)
            if not key:
                raise MissingCredential(
                    f"provider '{provider.name}' has no API key: environment variable "
                    f"{provider.api_key_env} is not set", provider=provider.name)
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def open(self, provider: Provider, content: bytes, path: str = "chat/completions") -> httpx2.Response:
        """POST to `path` (chat/completions or responses) under the provider's base URL; return the
        streaming response once its status is 200 (in a content coding httpx2 decodes)."""
        headers = self.headers(provider)
        client = self.client(provider)
        self._in_flight[provider] = self._in_flight.get(provider, 0) + 1
        try:
            response = await self._send(provider, client, headers, content, endpoint_url(provider.base_url, path))
        except BaseException as exc:
            await self.release(provider)
            if isinstance(exc, httpx2.HTTPError):
                raise map_transport_error(exc, provider.name) from exc
            raise
        if response.status_code != 200:
            await self.release(provider)
            raise from_upstream(response.status_code, await _error_body(response), provider=provider.name,
                                retry_after=_retry_after(response), coding=response.headers.get("content-encoding"))
        coding = response.headers.get("content-encoding")
        if coding is not None and not DECODED.issuperset(c.strip().lower() for c in coding.split(",")):
            await self.release(provider)
            await response.aclose()
            raise Untranslatable(f"provider '{provider.name}' answered in content-encoding "
                                 f"{redact.scrub(coding)[:40]!r}, which ccproxyd did not ask for and cannot decode",
                                 provider=provider.name)
        return response

    async def _send(self, provider: Provider, client: httpx2.AsyncClient, headers: dict[str, str],
                    content: bytes, url: httpx2.URL) -> httpx2.Response:
        """Straight to the transport, without an httpx2.Request: the client's auth, redirect and
        cookie layers do nothing for this POST, and building the request costs more than the
        exchange itself."""
        transport = self._lean[provider]
        raw = [(b"host", url.netloc), *((name.encode(), value.encode("ascii")) for name, value in headers.items()),
               (b"content-length", b"%d" % len(content))]
        timeout = {"connect": provider.connect_timeout, "read": provider.read_timeout, "write": WRITE_TIMEOUT,
                   "pool": POOL_TIMEOUT}
        return await transport.send("POST", url, raw, content, timeout)

    async def release(self, provider: Provider) -> None:
        """One request to `provider` is over; a retired client closes after its last request."""
        self._in_flight[provider] = self._in_flight.get(provider, 1) - 1
        if self._in_flight[provider] <= 0 and provider in self._retired:
            await self._retired.pop(provider).aclose()

    async def retire(self, current: set[Provider]) -> None:
        """After a reload: clients of providers that changed or went away close once idle."""
        for provider in [p for p in self._clients if p not in current]:
            client = self._clients.pop(provider)
            self._lean.pop(provider, None)
            if self._in_flight.get(provider, 0) > 0:
                self._retired[provider] = client
            else:
                await client.aclose()

    async def close(self) -> None:
        clients = [*self._clients.values(), *self._retired.values()]
        self._clients, self._retired, self._lean = {}, {}, {}
        for client in clients:
            await client.aclose()

"""One HTTP client per provider; the one place that maps httpx exceptions to ours."""

from __future__ import annotations

import os
from typing import Mapping

import httpx
import orjson

from . import credentials
from .config import Provider
from .errors import ApiError, ClientFacingError, MissingCredential, Overloaded, UpstreamTimeout, from_upstream


def map_transport_error(exc: httpx.HTTPError, provider: str) -> ClientFacingError:
    """httpx exception -> our tree.  Every upstream transport failure goes through here."""
    if isinstance(exc, httpx.ConnectTimeout):
        return Overloaded(f"provider '{provider}': connection timed out", retryable=True)
    if isinstance(exc, httpx.ConnectError):
        return Overloaded(f"provider '{provider}': cannot connect ({exc})", retryable=True)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"provider '{provider}': timed out waiting for the upstream", retryable=True)
    return ApiError(f"provider '{provider}': connection failed ({type(exc).__name__}: {exc})", retryable=True)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class Upstreams:
    """HTTP clients by provider name; open them inside the event loop, close them on stop."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self._clients: dict[Provider, httpx.AsyncClient] = {}

    def client(self, provider: Provider) -> httpx.AsyncClient:
        client = self._clients.get(provider)
        if client is None:
            http2 = provider.http2 if provider.http2 is not None else provider.base_url.startswith("https://")
            client = httpx.AsyncClient(
                http2=http2, trust_env=False, follow_redirects=False,
                timeout=httpx.Timeout(connect=provider.connect_timeout, read=provider.read_timeout,
                                      write=60.0, pool=30.0),
                limits=httpx.Limits(max_connections=provider.max_connections,
                                    max_keepalive_connections=provider.max_keepalive,
                                    keepalive_expiry=provider.keepalive_expiry),
            )
            self._clients[provider] = client
        return client

    def headers(self, provider: Provider) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "text/event-stream, application/json",
                   **dict(provider.headers)}
        if provider.api_key_env:
            key = credentials.lookup(provider.api_key_env, self.env)
            if not key:
                raise MissingCredential(
                    f"provider '{provider.name}' has no API key: environment variable "
                    f"{provider.api_key_env} is not set")
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def open(self, provider: Provider, body: dict) -> httpx.Response:
        """POST chat/completions and return the streaming response once its status is 200."""
        headers = self.headers(provider)
        client = self.client(provider)
        request = client.build_request("POST", provider.base_url.rstrip("/") + "/chat/completions",
                                       content=orjson.dumps(body), headers=headers)
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, provider.name) from exc
        if response.status_code != 200:
            try:
                content = await response.aread()
            except httpx.HTTPError:
                content = b""
            finally:
                await response.aclose()
            raise from_upstream(response.status_code, content, provider=provider.name,
                                retry_after=_retry_after(response))
        return response

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

"""The one HTTP client every sink shares: pooled, with timeouts, closed by the runtime.

Underneath the httpx API it runs on aiohttp: on this 2-core machine httpx's own pool delivered
250 requests/s at 32 in flight against 1,412/s for aiohttp (`make bench`, send). The aiohttp
transport's own error mapping is not safe for us, though: it maps every
`aiohttp.ClientConnectionError`, including a connection dropped AFTER the request was written,
to `httpx.ConnectTimeout`, which means "provably never sent" and would be retried: a second, paid
SMS. `TruthfulTransport` re-maps each aiohttp error by what it proves about the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from connector import __version__

TRANSPORTS = ("aiohttp", "httpx")


def _truthful(exc: Exception) -> Exception:
    """The httpx exception that says whether the request may have reached the provider."""
    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) else exc
    message = str(cause or exc) or type(cause or exc).__name__
    # Order matters: most specific aiohttp classes first (see their MRO).
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)  # no connection yet: nothing left
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)  # refused, unreachable, DNS: nothing left
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)  # the request was written; no answer in time
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message)  # dropped after the request left
    if isinstance(cause, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
        return httpx.ReadError(message)  # reset mid-way: cannot prove it was not taken
    return exc


class _TruthfulStream(httpx.AsyncByteStream):
    """The response body, whose read errors are re-mapped the same way."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            raise _truthful(exc) from exc

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            raise _truthful(exc) from exc


class TruthfulTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface on aiohttp, with errors that tell the truth about sending."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._inner = AiohttpTransport(limits=limits)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            raise _truthful(exc) from exc
        response.stream = _TruthfulStream(response.stream)  # type: ignore[arg-type]
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_client(
    connections: int, transport: httpx.AsyncBaseTransport | str | None = None
) -> httpx.AsyncClient:
    """A pool big enough for every sink's `concurrency` at once, so no send waits on the pool.

    `transport`: "aiohttp" (default), "httpx" (httpx's own pool) or a transport object (tests).
    """
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        # Shorter than common server idle timeouts: a request on a connection the server is closing
        # fails in a way we must treat as ambiguous, so avoid reusing stale ones.
        keepalive_expiry=4.0,
    )
    chosen: httpx.AsyncBaseTransport | None
    if transport is None or transport == "aiohttp":
        chosen = TruthfulTransport(limits)
    elif transport == "httpx":
        chosen = None
    elif isinstance(transport, str):
        raise ValueError(f"unknown transport {transport!r}: choose from {', '.join(TRANSPORTS)}")
    else:
        chosen = transport
    return httpx.AsyncClient(
        limits=limits,
        timeout=httpx.Timeout(30.0, connect=5.0),
        transport=chosen,
        headers={"User-Agent": f"sms-connector/{__version__}"},
        follow_redirects=False,
    )

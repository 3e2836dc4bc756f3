"""The one HTTP client every sink shares: pooled, with timeouts, closed by the runtime."""

from __future__ import annotations

import httpx

from connector import __version__


def make_client(connections: int, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """A pool big enough for every sink's `concurrency` at once, so no send waits on the pool."""
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        # Shorter than common server idle timeouts: a request on a connection the server is closing
        # fails in a way we must treat as ambiguous, so avoid reusing stale ones.
        keepalive_expiry=4.0,
    )
    return httpx.AsyncClient(
        limits=limits,
        timeout=httpx.Timeout(30.0, connect=5.0),
        transport=transport,
        headers={"User-Agent": f"sms-connector/{__version__}"},
        follow_redirects=False,
    )

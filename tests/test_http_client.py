"""The shared client's transport: aiohttp errors re-mapped by what they prove about the request."""

from __future__ import annotations

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from connector.http import _truthful, make_client

KEY = ConnectionKey("127.0.0.1", 9, False, True, None, None, None)

# aiohttp error -> httpx error the sinks classify; the comment says what the sink then does.
CASES = [
    (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),  # retry: never left
    (aiohttp.ClientConnectorError(KEY, OSError(111, "refused")), httpx.ConnectError),  # retry
    (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),  # unknown: may be taken
    (aiohttp.ServerTimeoutError("read"), httpx.ReadTimeout),  # unknown
    (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),  # unknown, NOT ConnectTimeout
    (aiohttp.ClientPayloadError("cut"), httpx.ReadError),  # unknown
    (aiohttp.ClientOSError(104, "reset"), httpx.ReadError),  # unknown
]


@pytest.mark.parametrize(("cause", "expected"), CASES, ids=[type(c).__name__ for c, _ in CASES])
def test_each_aiohttp_error_becomes_the_truthful_httpx_error(cause: Exception, expected: type) -> None:
    # As the aiohttp transport raises them: its own (unsafe) mapping, caused by the aiohttp error.
    wrapped = httpx.ConnectTimeout("mapped upstream")
    wrapped.__cause__ = cause
    assert type(_truthful(wrapped)) is expected
    assert type(_truthful(cause)) is expected


def test_unknown_transport_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        make_client(4, "curl")


async def test_refused_connection_reaches_the_caller_as_connect_error() -> None:
    async with make_client(4) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("http://127.0.0.1:9/", json={})

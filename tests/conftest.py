"""Fixtures shared across test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from connector.http import TRANSPORTS, make_client


@pytest.fixture(params=TRANSPORTS)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """The product's shared client on each transport: provider outcome tables must hold on both."""
    async with make_client(64, request.param) as shared:
        yield shared

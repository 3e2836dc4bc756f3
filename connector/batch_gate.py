"""Batches in hand, and a moment between them: how a reloaded config is taken without cutting one.

A batch (the records of a file chunk, a sheet poll, a webhook delivery, a sweep of held messages)
runs from its rules to its last outcome with the config it started with. Closing the gate lets the
batches in hand finish, holds new ones back, and opens again once the change is made. New batches
wait only while the ones in hand finish, never for one another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class BatchGate:
    def __init__(self) -> None:
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()

    @property
    def running(self) -> int:
        return self._running

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        while not self._open.is_set():
            await self._open.wait()
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def closed(self) -> AsyncIterator[None]:
        """No batch runs inside: those in hand have finished, new ones wait until this ends."""
        while not self._open.is_set():  # one change at a time
            await self._open.wait()
        self._open.clear()
        try:
            await self._idle.wait()
            yield
        finally:
            self._open.set()

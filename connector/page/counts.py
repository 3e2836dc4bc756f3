"""The counts by state for the status page: a copy kept for a while, not a count per page view.

Why a copy: counting by source, rule and state reads every row of the ledger. At a million rows
that took 2.2 s on SQLite (a sort of every row; there is no index to count with, and adding one
over every state would be paid for by every send, which the schema avoids on purpose). Exact
counts that cheap would need counters kept by each transition, one more write per send and a
row every instance contends for. Counts a few seconds old are what a person reading the page
needs, so the page shows the copy and says how old it is.

How: a page view that finds the copy older than `max_age` starts a recount in the background and
is answered with the copy it has; nothing counts while nobody looks. Only a view that finds no
copy at all waits, and no longer than `first_wait` (a small ledger is counted in milliseconds;
a big one shows "being counted" until the next refresh). The count runs beside the writes
(`counts_aside`: SQLite reads a snapshot on a connection of its own), never in the writer's turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from connector.ledger import Counts

log = structlog.get_logger(__name__)

MAX_AGE_S = 20.0
FIRST_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    counts: list[Counts]
    at: float  # time.time() when the count started: nothing older than this is missing from it


class CountsCache:
    def __init__(
        self,
        count: Callable[[], Awaitable[list[Counts]]],
        *,
        max_age: float = MAX_AGE_S,
        first_wait: float = FIRST_WAIT_S,
    ) -> None:
        self._count = count
        self.max_age = max_age
        self.first_wait = first_wait
        self.snapshot: Snapshot | None = None
        self._counting: asyncio.Task[None] | None = None

    async def get(self) -> Snapshot | None:
        """The latest copy (None: the first count is still running); a recount starts if it is old."""
        if self.snapshot is None or time.time() - self.snapshot.at > self.max_age:
            if self._counting is None or self._counting.done():
                self._counting = asyncio.create_task(self._recount(), name="page-counts")
            if self.snapshot is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._counting), self.first_wait)
        return self.snapshot

    async def _recount(self) -> None:
        started = time.time()
        try:
            counts = await self._count()
        except Exception as exc:  # noqa: BLE001 - the page shows the copy it has and tries again later
            log.warning("status page: cannot count the ledger's messages now", error=str(exc))
            return
        self.snapshot = Snapshot(counts, started)

    async def close(self) -> None:
        """Stop a count in progress (the server is stopping)."""
        if self._counting is not None and not self._counting.done():
            self._counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._counting
        self._counting = None

"""The status page's copy of the counts (connector/page/counts.py): counted again only when it is
old and someone looks, never waited for but the first time, kept when a count fails."""

from __future__ import annotations

import asyncio

from connector.ledger import Counts, State
from connector.page.counts import CountsCache


class Counter:
    """A count that takes `seconds` and can be made to fail; says how often it was asked."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls = 0
        self.fail = False

    async def __call__(self) -> list[Counts]:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        if self.fail:
            raise OSError("database is locked")
        return [Counts("erp", "confirm", State.SENT, self.calls)]


async def test_a_fresh_copy_is_answered_without_counting() -> None:
    count = Counter()
    cache = CountsCache(count, max_age=60)
    first = await cache.get()
    assert first is not None and first.counts[0].count == 1
    for _ in range(5):
        assert await cache.get() is first
    assert count.calls == 1
    await cache.close()


async def test_an_old_copy_is_answered_at_once_and_counted_again_behind_it() -> None:
    count = Counter()
    cache = CountsCache(count, max_age=0.05)
    first = await cache.get()
    assert first is not None
    await asyncio.sleep(0.1)
    count.seconds = 0.2
    assert await cache.get() is first  # not waited for: the old copy, and a recount started
    assert await cache.get() is first  # one recount at a time
    await asyncio.sleep(0.3)
    again = await cache.get()
    assert again is not None and again.counts[0].count == 2 and again.at > first.at
    assert count.calls == 2
    await cache.close()


async def test_the_first_view_waits_a_little_then_goes_without() -> None:
    count = Counter(seconds=0.5)
    cache = CountsCache(count, first_wait=0.05)
    assert await cache.get() is None  # a big ledger: the page says it is being counted
    await asyncio.sleep(0.6)
    ready = await cache.get()
    assert ready is not None and count.calls == 1
    await cache.close()


async def test_a_failed_count_keeps_the_copy_it_had() -> None:
    count = Counter()
    cache = CountsCache(count, max_age=0.01)
    first = await cache.get()
    count.fail = True
    await asyncio.sleep(0.05)
    assert await cache.get() is first
    await asyncio.sleep(0.05)
    assert await cache.get() is first and count.calls >= 2
    await cache.close()


async def test_closing_stops_a_count_in_progress() -> None:
    count = Counter(seconds=10)
    cache = CountsCache(count, first_wait=0.01)
    assert await cache.get() is None
    await asyncio.wait_for(cache.close(), 1)

"""The sends webhook intake has claimed and not made yet: one queue per sink, a few workers each.

A task per delivery would do the same, but while sends back up behind a slow provider that keeps
thousands of coroutine chains alive (about 90 objects per queued message), and every full garbage
collection walks them all: the event loop, and every 202 behind it, stalled for 0.3-0.9 s. A queue
holds plain values; the workers are as many as the sink sends at once, so none waits for nothing.

A sink's workers spread their starts over the time a send takes (`Pace`), so that their CPU does
not land on the event loop in one burst that every webhook answer due meanwhile waits behind.

Stopping takes what no worker has taken out of the queues: it is not sent, and the caller records
it `pending` for the next start. The workers finish the send in hand and end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

Item = TypeVar("Item")

SPREAD = 0.5  # of an even share of a send's time: starts are spread, throughput is never capped
LONGEST_GAP_S = 0.05  # a slow or retrying provider does not space its sink's starts further
LEARN = 0.2  # weight of the latest send in the running estimate of how long one takes


class Pace:
    """When each of a sink's workers may start its next send.

    Workers that begin together against a provider that answers in a steady time finish together,
    begin again together, and stay in step for ever: each round, reading the answers, recording the
    outcomes and building the next requests comes as one burst of several ms on the event loop.
    Spacing the starts at least half an even share of a send's time apart breaks the step after
    one round; it allows twice the rate the workers can send, so it never slows sending down.
    """

    def __init__(self, workers: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._workers = max(1, workers)
        self._clock = clock
        self._took: float | None = None  # seconds a send takes, as a running estimate
        self._next = 0.0  # no start before this (clock time)

    def delay(self) -> float:
        """Seconds until the calling worker may start; the start after it is spaced from it."""
        now = self._clock()
        start = max(now, self._next)
        gap = 0.0 if self._took is None else min(LONGEST_GAP_S, self._took * SPREAD / self._workers)
        self._next = start + gap
        return start - now

    def took(self, seconds: float) -> None:
        self._took = seconds if self._took is None else self._took + LEARN * (seconds - self._took)


class SendQueues(Generic[Item]):
    def __init__(self, send: Callable[[str, Item], Awaitable[None]], workers: Callable[[str], int]) -> None:
        self._send = send
        self._workers_for = workers
        self._queues: dict[str, asyncio.Queue[Item | None]] = {}
        self._workers: dict[str, list[asyncio.Task[None]]] = {}
        self._stopped = False

    def put(self, sink: str, item: Item) -> bool:
        """Queue `item` for `sink`'s workers; False once stopping (the caller keeps it)."""
        if self._stopped:
            return False
        queue = self._queues.get(sink)
        if queue is None:
            queue = self._queues[sink] = asyncio.Queue()
            count = max(1, self._workers_for(sink))
            pace = Pace(count)
            self._workers[sink] = [
                asyncio.create_task(self._work(sink, queue, pace), name=f"send:{sink}:{n}")
                for n in range(count)
            ]
        queue.put_nowait(item)
        return True

    @property
    def workers(self) -> Sequence[asyncio.Task[None]]:
        return tuple(w for workers in self._workers.values() for w in workers if not w.done())

    def stop(self) -> list[Item]:
        """Nothing more is taken; answers what was still queued. Idle workers end at once."""
        self._stopped = True
        left: list[Item] = []
        for sink, queue in self._queues.items():
            while not queue.empty():
                item = queue.get_nowait()
                queue.task_done()
                if item is not None:
                    left.append(item)
            for _ in self._workers[sink]:
                queue.put_nowait(None)  # one end mark per worker of this queue
        return left

    async def join(self) -> None:
        """Until every queued send is made (tests; a running connector never waits for this)."""
        await asyncio.gather(*(queue.join() for queue in self._queues.values()))

    async def _work(self, sink: str, queue: asyncio.Queue[Item | None], pace: Pace) -> None:
        while True:
            item = await queue.get()
            try:
                if item is None:
                    return
                if (delay := pace.delay()) > 0:
                    await asyncio.sleep(delay)
                began = time.monotonic()
                await self._send(sink, item)
                pace.took(time.monotonic() - began)
            except Exception:
                # The claims stay pending in the ledger, where the next start finds them.
                log.exception("queued send failed; its messages stay pending", sink=sink)
            finally:
                queue.task_done()

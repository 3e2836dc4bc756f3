"""The sends webhook intake has claimed and not made yet: one queue per sink, a few workers each.

A task per delivery would do the same, but while sends back up behind a slow provider that keeps
thousands of coroutine chains alive (about 90 objects per queued message), and every full garbage
collection walks them all: the event loop, and every 202 behind it, stalled for 0.3-0.9 s. A queue
holds plain values; the workers are as many as the sink sends at once, so none waits for nothing.

Stopping takes what no worker has taken out of the queues: it is not sent, and the caller records
it `pending` for the next start. The workers finish the send in hand and end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

Item = TypeVar("Item")


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
            self._workers[sink] = [
                asyncio.create_task(self._work(sink, queue), name=f"send:{sink}:{n}")
                for n in range(max(1, self._workers_for(sink)))
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

    async def _work(self, sink: str, queue: asyncio.Queue[Item | None]) -> None:
        while True:
            item = await queue.get()
            try:
                if item is None:
                    return
                await self._send(sink, item)
            except Exception:
                # The claims stay pending in the ledger, where the next start finds them.
                log.exception("queued send failed; its messages stay pending", sink=sink)
            finally:
                queue.task_done()

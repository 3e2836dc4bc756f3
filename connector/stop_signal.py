"""A stop that reaches its children at the very moment it is given.

The runtime's stop is set by a signal handler; each source has a stop of its own (a reload stops
one alone). Were the sources told on the runtime's next turn, a webhook delivery arriving in
between would still be taken in after the stop: children are set in the same call instead.
"""

from __future__ import annotations

import asyncio


class StopSignal(asyncio.Event):
    def __init__(self) -> None:
        super().__init__()
        self._children: list[asyncio.Event] = []

    def child(self) -> asyncio.Event:
        """A stop of its own, set with this one (at once, if this one is set already)."""
        event = asyncio.Event()
        if self.is_set():
            event.set()
        self._children.append(event)
        return event

    def forget(self, child: asyncio.Event) -> None:
        """A child whose work is over (a source a reload replaced)."""
        if child in self._children:
            self._children.remove(child)

    def set(self) -> None:
        super().set()
        for child in self._children:
            child.set()

"""The plug point every source implements: give me records, here are their statuses.

A source turns its input into `Record`s and hands them to `SourceContext.process`, which applies
the rules, sends through the ledger and answers one status per record (None where no rule wanted
the record: it gets no status). The source writes those statuses back in its own way. Statuses
that change later (a held message sent after its sink resumes) arrive through `write_back`.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from connector.events import Event, Record
from connector.plugins import Plugin
from connector.web import HttpRoute

Process = Callable[[Sequence[Record]], Awaitable[list[str | None]]]


@dataclass(frozen=True, slots=True)
class DeliveryNote:
    """A delivery, recorded once under (scope, key) in the claims' own transaction, with its answer
    made from the events: the answer is durable together with what it answers for."""

    scope: str
    key: str
    answer: Callable[[list[list[Event]]], str]


@dataclass(frozen=True, slots=True)
class Accepted:
    answer: str  # the note's value: made now, or the first one's
    replayed: bool  # recorded before (by this instance or another: one delivery id is one delivery)


Accept = Callable[[Sequence[Record], DeliveryNote], Awaitable[Accepted]]
"""Claim durably and answer at once; the sends go on behind the ledger (webhook intake)."""
Delivered = Callable[[str, int, int], None]
"""(source, HTTP status answered, records newly taken in): for the server's metrics."""


def _not_counted(source: str, status: int, records: int) -> None:
    return None


class SourceConfigBase(BaseModel):
    """Fields every source accepts."""

    def secrets(self) -> list[str]:
        return []


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    origin: str  # Record.origin of the record whose status changed
    status: str


class Notes(Protocol):
    """Small durable key-value memory a source may keep in the ledger (batch ids, file names)."""

    async def get_note(self, scope: str, key: str) -> str | None: ...
    async def set_note(self, scope: str, key: str, value: str) -> None: ...
    async def notes_in(self, scope: str) -> dict[str, str]: ...
    async def drop_notes(self, scope: str, keys: Sequence[str]) -> None: ...


class Holds(Protocol):
    """What this instance has taken among several sharing the ledger: a file, a sheet's poll.

    `hold` answers an epoch (it grows at every change of holder) or None while another live
    instance has it; a hold lapses with its holder's lease, so check `holding` before acting on
    what was taken a while ago (moving a file, writing a sheet). Names are `KIND:SOURCE[:WHAT]`
    (`csv:erp:orders.csv`, `sheet:orders`): the status page shows each under its source."""

    async def hold(self, name: str) -> int | None: ...
    async def holding(self, name: str, epoch: int) -> bool: ...
    async def let_go(self, name: str) -> None: ...


class Alone:
    """Holds for a process that shares nothing (read-only commands, a source tested by itself)."""

    async def hold(self, name: str) -> int | None:
        return 1

    async def holding(self, name: str, epoch: int) -> bool:
        return True

    async def let_go(self, name: str) -> None:
        return None


@dataclass(slots=True)
class Activity:
    """What a source did last and its last error, as this process saw them (the status page).
    A source says so in a line where it happens: a file taken, a poll, a delivery."""

    last: str = ""
    last_at: float | None = None
    error: str = ""
    error_at: float | None = None

    def did(self, what: str) -> None:
        self.last, self.last_at = what, time.time()

    def failed(self, error: str) -> None:
        self.error, self.error_at = error, time.time()


@dataclass(slots=True)
class SourceContext:
    """What the runtime lends a source."""

    process: Process
    notes: Notes
    base_dir: Path  # relative paths in config.yaml are relative to the config file's folder
    stopping: asyncio.Event
    scheduler: Any = None  # APScheduler AsyncIOScheduler while `connector run` is running
    accept: Accept | None = None  # while `connector run` serves HTTP
    delivered: Delivered = _not_counted
    holds: Holds = field(default_factory=Alone)  # the ledger's, whenever records are processed


class Source(Plugin, abc.ABC):
    type_name: ClassVar[str]  # from the config model's `type` Literal: written once, there
    config_model: ClassVar[type[SourceConfigBase]]

    def __init__(self, name: str, config: Any, ctx: SourceContext) -> None:
        self.name = name
        self.config = config
        self.ctx = ctx
        self.activity = Activity()

    @abc.abstractmethod
    async def run(self) -> None:
        """Watch, poll or serve until `ctx.stopping` is set; finish the batch in hand, then return."""

    @abc.abstractmethod
    async def once(self) -> None:
        """Take everything due now, process it, write every status back, return."""

    @abc.abstractmethod
    def preview(self) -> Iterator[Record]:
        """The records as they stand, read without changing anything. Blocking: call in a thread."""

    def routes(self) -> Sequence[HttpRoute]:
        """The HTTP endpoints this source serves under `connector run` (a webhook's intake)."""
        return ()

    async def write_back(self, updates: Sequence[StatusUpdate]) -> None:
        """Statuses that changed after the batch was written (held messages sent later)."""

    async def flush(self) -> None:
        """Write now what `write_back` kept for a later pass, where this process may (a command
        such as `connector resolve`, which takes no pass of its own)."""

    async def check(self, *, online: bool = True) -> str:
        """Prove the source can be read; a one-line summary. Raises SourceError when it cannot.

        `online=False` (`connector check --offline`): check only what needs no network.
        """
        return "ok"

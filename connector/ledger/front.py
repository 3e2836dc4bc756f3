"""The Ledger interface over the programs, for any driver; and the lease this process renews.

A driver (SQLite, PostgreSQL) only says how a program runs: `_write` in a group-committed write
transaction, `_read` wherever reading is cheapest. Everything else is here, once.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import structlog

from connector.ledger import programs
from connector.ledger.base import (
    Claim,
    Claimed,
    Counts,
    Delivery,
    Entry,
    Instance,
    Ledger,
    State,
    Transition,
)
from connector.ledger.claims import claim as claim_program
from connector.ledger.steps import Program

log = structlog.get_logger(__name__)
T = TypeVar("T")
Factory = Callable[[], Program[T]]  # a program made afresh, so a driver can run it again

DEFAULT_LEASE_S = 30.0
RETIRE_WAIT_S = 10.0  # a stop through a ledger outage does not wait for ever: the lease lapses instead


def new_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class SqlLedger(Ledger, abc.ABC):
    def __init__(self) -> None:
        self.instance_id = new_instance_id()
        self.lease = DEFAULT_LEASE_S
        self._mine: list[str] = [self.instance_id]  # every id this process had: outcomes of each are ours
        self._joined = False
        self._renewing: asyncio.Task[None] | None = None
        self.renewed = 0.0  # time.monotonic() of the last renewal that held
        self.held: dict[str, int] = {}  # hold name -> epoch, as this process last took it

    # -- the driver -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def _write(self, factory: Factory[T]) -> T: ...

    @abc.abstractmethod
    async def _read(self, factory: Factory[T]) -> T: ...

    @abc.abstractmethod
    async def _disconnect(self) -> None: ...

    # -- joining: an instance with a lease ------------------------------------------------------

    async def join(self, lease: float = DEFAULT_LEASE_S) -> None:
        """Register this process and keep its lease renewed (every third of it) until `close`."""
        self.lease = lease
        await self._write(
            lambda: programs.register(self.instance_id, socket.gethostname(), os.getpid(), lease)
        )
        self.renewed = time.monotonic()
        self._joined = True
        self._renewing = asyncio.create_task(self._keep_lease(), name="ledger-lease")
        log.info("instance registered", instance=self.instance_id, lease_s=lease)

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.renew()
            except Exception as exc:  # noqa: BLE001 - an outage: try again at the next beat
                log.warning("cannot renew the lease; the ledger is unreachable", error=str(exc))

    async def renew(self) -> bool:
        if await self._write(lambda: programs.renew(self.instance_id, self.lease)):
            self.renewed = time.monotonic()
            return True
        lost = self.instance_id
        self.instance_id = new_instance_id()
        self._mine.append(self.instance_id)
        self.held.clear()
        log.error(
            "lease lost: this process was silent longer than its lease; what it held is another "
            "instance's now and it sends none of it; carrying on as a new instance",
            lost=lost,
            instance=self.instance_id,
        )
        await self._write(
            lambda: programs.register(self.instance_id, socket.gethostname(), os.getpid(), self.lease)
        )
        self.renewed = time.monotonic()
        return False

    @property
    def lease_left(self) -> float:
        """Seconds of lease this process can count on, by its own clock."""
        return max(0.0, self.renewed + self.lease - time.monotonic()) if self._joined else 0.0

    # -- sends --------------------------------------------------------------------------------------

    async def claim(self, claims: Sequence[Claim], delivery: Delivery | None = None) -> Claimed:
        me = self.instance_id
        return await self._write(lambda: claim_program(claims, me, delivery))

    async def mark_sending(self, keys: Sequence[str]) -> None:
        me = self.instance_id
        await self._write(lambda: programs.mark_sending(keys, me))

    async def record(self, transitions: Sequence[Transition]) -> None:
        mine = list(self._mine)
        await self._write(lambda: programs.record(transitions, mine))

    async def take_pending(self, sinks: Sequence[str], limit: int) -> list[Entry]:
        me = self.instance_id
        return await self._write(lambda: programs.take_pending(sinks, limit, me)) if sinks else []

    async def release(self, keys: Sequence[str]) -> None:
        me = self.instance_id
        if keys:
            await self._write(lambda: programs.release(keys, me))

    async def recover(self) -> int:
        return await self._write(programs.recover)

    # -- holds ---------------------------------------------------------------------------------------

    async def hold(self, name: str) -> int | None:
        me = self.instance_id
        epoch = await self._write(lambda: programs.hold(name, me))
        if epoch is None:
            self.held.pop(name, None)
        else:
            self.held[name] = epoch
        return epoch

    async def holding(self, name: str, epoch: int) -> bool:
        me = self.instance_id
        return await self._read(lambda: programs.holding(name, epoch, me))

    async def let_go(self, name: str) -> None:
        me = self.instance_id
        self.held.pop(name, None)
        await self._write(lambda: programs.let_go(name, me))

    async def instances(self) -> list[Instance]:
        return await self._read(programs.instances)

    # -- reading and notes ---------------------------------------------------------------------------

    async def entries(self, keys: Sequence[str]) -> list[Entry]:
        return await self._read(lambda: programs.entries(keys)) if keys else []

    async def counts(self) -> list[Counts]:
        return await self._read(programs.counts)

    async def recent(self, states: Sequence[State], limit: int) -> list[Entry]:
        return await self._read(lambda: programs.recent(states, limit))

    async def get_note(self, scope: str, key: str) -> str | None:
        return await self._read(lambda: programs.get_note(scope, key))

    async def set_note(self, scope: str, key: str, value: str) -> None:
        await self._write(lambda: programs.set_note(scope, key, value))

    async def notes_in(self, scope: str) -> dict[str, str]:
        return await self._read(lambda: programs.notes_in(scope))

    async def drop_notes(self, scope: str, keys: Sequence[str]) -> None:
        if keys:
            await self._write(lambda: programs.drop_notes(scope, keys))

    async def ping(self) -> None:
        await self._read(programs.ping)

    async def close(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
            self._renewing = None
        if self._joined:
            self._joined = False
            me = self.instance_id
            try:
                left = await asyncio.wait_for(self._write(lambda: programs.retire(me)), RETIRE_WAIT_S)
            except Exception as exc:  # noqa: BLE001 - the lease runs out by itself and others recover
                log.warning(
                    "cannot release this instance's claims; they lapse with its lease", error=str(exc)
                )
            else:
                if left:
                    log.warning("sends cut short by the stop recorded unknown", count=left)
        await self._disconnect()


def answer_all(program: Program[T], run: Callable[[Any], Any]) -> T:
    """Run a program to its end with `run(step) -> answer` (synchronous drivers)."""
    answer: Any = None
    while True:
        try:
            step = program.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        answer = run(step)

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from connector.errors import LedgerUnavailable
from connector.ledger import decisions, lists, programs, views
from connector.ledger import gates as gates_program
from connector.ledger.base import (
    Claim,
    Claimed,
    Counts,
    Delivery,
    Entry,
    Instance,
    Ledger,
    Refusal,
    State,
    Transition,
)
from connector.ledger.batches import Factory, Together
from connector.ledger.claims import claim as claim_program
from connector.ledger.decisions import Decision, Resolution, Step
from connector.ledger.schema import COUNTED_INDEX
from connector.policy import Gate

log = structlog.get_logger(__name__)
T = TypeVar("T")

DEFAULT_LEASE_S = 30.0
INTAKE_WAIT_S = 10.0  # a webhook delivery waits this long for its claims to commit, then gets 503
RETIRE_WAIT_S = 10.0  # a stop through a ledger outage does not wait for ever: the lease lapses instead


def new_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def this_place() -> str:
    """Where pids mean the same thing: this host, this boot, this pid namespace (a container
    sharing the host's name has its own pids, and a reboot starts them again)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(str(Path("/proc/self/ns/pid").readlink()))
    return "|".join(parts)


def gone(pid: int) -> bool:
    """Whether no process of this place has this pid (any doubt counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists but is not ours to signal
        return False
    return False


class SqlLedger(Ledger, abc.ABC):
    def __init__(self) -> None:
        self.instance_id = new_instance_id()
        self.place = this_place()
        self.lease = DEFAULT_LEASE_S
        self._mine: list[str] = [self.instance_id]  # every id this process had: outcomes of each are ours
        self._joined = False
        self._renewing: asyncio.Task[None] | None = None
        self.renewed = 0.0  # time.monotonic() of the last renewal that held
        self.held: dict[str, int] = {}  # hold name -> epoch, as this process last took it

    # -- the driver -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def _write(self, work: Factory[T] | Together[Any]) -> T:
        """In a write transaction, group-committed; a `Together` shares one program with the jobs
        of its kind in the same batch."""

    @abc.abstractmethod
    async def _read(self, factory: Factory[T]) -> T: ...

    @abc.abstractmethod
    async def _disconnect(self) -> None: ...

    # -- joining: an instance with a lease ------------------------------------------------------

    async def join(self, lease: float = DEFAULT_LEASE_S) -> None:
        """Register this process and keep its lease renewed (every third of it) until `close`."""
        self.lease = lease
        await self._register()
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
        await self._register()
        self.renewed = time.monotonic()
        return False

    async def _register(self) -> None:
        me, place, lease = self.instance_id, self.place, self.lease
        await self._write(lambda: programs.register(me, socket.gethostname(), place, os.getpid(), lease))

    @property
    def lease_left(self) -> float:
        """Seconds of lease this process can count on, by its own clock."""
        return max(0.0, self.renewed + self.lease - time.monotonic()) if self._joined else 0.0

    # -- sends --------------------------------------------------------------------------------------

    async def claim(self, claims: Sequence[Claim], delivery: Delivery | None = None) -> Claimed:
        me = self.instance_id
        claimed = self._write(lambda: claim_program(claims, me, delivery))
        if delivery is None:
            return await claimed
        try:  # a sender waits on this answer: through an outage it had better retry (503)
            return await asyncio.wait_for(claimed, INTAKE_WAIT_S)
        except TimeoutError:
            # The claim may still commit; the sender's retry then gets that first answer.
            raise LedgerUnavailable(f"the ledger did not answer within {INTAKE_WAIT_S:g}s") from None

    async def mark_sending(self, keys: Sequence[str]) -> None:
        await self._write(Together("mark_sending", (keys, self.instance_id), programs.mark_sending_all))

    async def record(self, transitions: Sequence[Transition]) -> float:
        mine = tuple(self._mine)
        at: float = await self._write(Together("record", (transitions, mine), programs.record_all))
        return at

    async def take_pending(self, sinks: Sequence[str], limit: int) -> list[Entry]:
        me = self.instance_id
        return await self._write(lambda: programs.take_pending(sinks, limit, me)) if sinks else []

    async def next_wake(self) -> float | None:
        return await self._read(programs.next_wake)

    async def idle_pending(self, sinks: Sequence[str], limit: int, idle: float) -> list[Entry]:
        me = self.instance_id
        return await self._read(lambda: programs.idle_pending(sinks, limit, me, idle)) if sinks else []

    async def release(self, keys: Sequence[str]) -> None:
        me = self.instance_id
        if keys:
            await self._write(lambda: programs.release(keys, me))

    async def recover(self) -> int:
        # Beside this process a dead one is known at once, not only when its lease lapses: a
        # restart after kill -9 carries on with what the dead process had claimed straight away.
        local = await self._read(lambda: programs.neighbours(self.place))
        dead = [i for i, pid in local if i not in self._mine and gone(pid)]
        if dead:
            log.info("instances of this host whose process is gone: released now", instances=dead)
            await self._write(lambda: programs.expire(dead))
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

    async def admit(self, gates: Sequence[Gate]) -> dict[str, Refusal]:
        return await self._write(lambda: gates_program.admit(gates)) if gates else {}

    async def count_by_number(self) -> None:
        """The index frequency caps count with (made only when a rule has a cap: every send would
        otherwise pay for an index nothing reads)."""
        await self._write(lambda: programs.run_ddl(COUNTED_INDEX))

    async def spent(self, day: str) -> dict[str, int]:
        return await self._read(lambda: gates_program.spent(day))

    async def optout_add(self, numbers: Sequence[str], note: str = "") -> int:
        return await self._write(lambda: lists.optout_add(numbers, note)) if numbers else 0

    async def optout_remove(self, numbers: Sequence[str]) -> int:
        return await self._write(lambda: lists.optout_remove(numbers)) if numbers else 0

    async def optouts(self) -> list[tuple[str, float, str]]:
        return await self._read(lists.optouts)

    # -- reading and notes ---------------------------------------------------------------------------

    async def entries(self, keys: Sequence[str]) -> list[Entry]:
        return await self._read(lambda: programs.entries(keys)) if keys else []

    async def counts(self) -> list[Counts]:
        return await self._read(programs.counts)

    async def recent(self, states: Sequence[State], limit: int) -> list[Entry]:
        return await self._read(lambda: programs.recent(states, limit))

    async def history(self, key: str) -> list[Step]:
        return await self._read(lambda: decisions.history(key))

    # -- the status page (views.py) ----------------------------------------------------------------

    async def overview(
        self, search: str, after: views.Cursor | None, limit: int, day: str | None
    ) -> views.Overview:
        return await self._read(lambda: views.overview(search, after, limit, day))

    async def record_page(self, key: str) -> tuple[Entry, list[Step]] | None:
        # Not `record`: that name writes outcomes (above); a second one would replace it.
        return await self._read(lambda: views.record(key))

    async def counts_aside(self) -> list[Counts]:
        """`counts`, read where it holds up nothing else: it scans every row."""
        return await self._read_aside(programs.counts)

    async def _read_aside(self, factory: Factory[T]) -> T:
        """A long read off the path of the writes, where the driver has one (SQLite: its own
        connection, a snapshot of the WAL, instead of the writer's thread)."""
        return await self._read(factory)

    async def unknown_keys(
        self, sources: Sequence[str] = (), rules: Sequence[str] = (), limit: int = 100_000
    ) -> list[str]:
        return await self._read(lambda: decisions.unknown_keys(sources, rules, limit))

    async def full_keys(self, prefixes: Sequence[str]) -> dict[str, list[str]]:
        return await self._read(lambda: decisions.full_keys(prefixes)) if prefixes else {}

    async def resolve(self, keys: Sequence[str], decision: Decision) -> list[Resolution]:
        """A person's decision on these messages (see decisions.py for what is refused)."""
        me = self.instance_id
        return await self._write(lambda: decisions.resolve(keys, decision, me)) if keys else []

    async def get_note(self, scope: str, key: str) -> str | None:
        return await self._read(lambda: lists.get_note(scope, key))

    async def set_note(self, scope: str, key: str, value: str) -> None:
        await self._write(lambda: lists.set_note(scope, key, value))

    async def notes_in(self, scope: str) -> dict[str, str]:
        return await self._read(lambda: lists.notes_in(scope))

    async def drop_notes(self, scope: str, keys: Sequence[str]) -> None:
        if keys:
            await self._write(lambda: lists.drop_notes(scope, keys))

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

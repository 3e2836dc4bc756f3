"""Group commit, for any database: one writer thread, one connection, one transaction per batch.

Every call is queued; the thread takes everything queued, runs it in ONE transaction, commits once
and answers all callers, one wake-up of each caller's loop per batch. Thirty-two concurrent sends
marking themselves `sending` therefore cost one commit, and with `batches.Together` one statement,
while each caller still gets "durable" before its request leaves.

The thread keeps the writes off the event loop: a statement's round trip never waits behind HTTP
and rule rendering (on a busy loop that lag was worth more than the round trip itself).

A batch runs without savepoints first; only if one of its programs fails is it rolled back and run
again with a savepoint per unit, so that one caller's failure never undoes another's work. A
database that goes away (`Session.outage`) pauses the writer: the batch is run again on a new
connection, with a growing back-off, until it answers or the ledger closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import structlog

from connector.errors import LedgerUnavailable
from connector.ledger.batches import Unit, Work, answered, units
from connector.ledger.steps import Insert, Lock, Now, Program, Rows, RowsIn, Run, RunIn, RunMany, Step

log = structlog.get_logger(__name__)
T = TypeVar("T")

FIRST_WAIT_S = 0.2
LONGEST_WAIT_S = 5.0


class Session(Protocol):
    """One connection as the writer drives it."""

    def begin(self, write: bool) -> float:
        """Start a transaction; the ledger's clock for it (the database's own where it has one)."""

    def step(self, now: float, step: Step) -> Any: ...
    def savepoint(self) -> None: ...
    def rollback_to_savepoint(self) -> None: ...
    def release_savepoint(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...
    def plain(self, error: Exception) -> Exception:
        """The error as a caller should see it."""


class Verbs:
    """What SQLite and PostgreSQL sessions spell alike, on their DB-API `conn`: the transaction
    verbs and the plain steps. A session says its `dialect` and answers the `bulk` steps."""

    conn: Any

    def dialect(self, sql: str) -> str:
        raise NotImplementedError

    def bulk(self, step: RowsIn | RunIn | Insert) -> Any:
        raise NotImplementedError

    def step(self, now: float, step: Step) -> Any:
        if isinstance(step, Rows):
            return self.conn.execute(self.dialect(step.sql), step.params).fetchall()
        if isinstance(step, Run):
            return self.conn.execute(self.dialect(step.sql), step.params).rowcount
        if isinstance(step, RunMany):
            cursor = self.conn.cursor()
            try:
                cursor.executemany(self.dialect(step.sql), step.params)
            finally:
                cursor.close()
            return None
        if isinstance(step, Now):
            return now
        if isinstance(step, Lock):
            return self.lock(step.prefix, step.keys)
        return self.bulk(step)

    def lock(self, prefix: str, keys: Sequence[str]) -> None:
        return None  # one writer at a time already

    def savepoint(self) -> None:
        self.conn.execute("SAVEPOINT unit")

    def rollback_to_savepoint(self) -> None:
        self.conn.execute("ROLLBACK TO SAVEPOINT unit")

    def release_savepoint(self) -> None:
        self.conn.execute("RELEASE SAVEPOINT unit")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


@dataclass(slots=True)
class _Job(Generic[T]):
    work: Work
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop
    write: bool


_Answer = tuple[_Job[Any], Any, BaseException | None]


def _resolve_all(answers: list[_Answer]) -> None:
    for job, result, error in answers:
        if job.future.done():  # the caller gave up waiting; the work is committed all the same
            continue
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)


def run(session: Session, now: float, program: Program[T]) -> T:
    answer: Any = None
    while True:
        try:
            step = program.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        answer = session.step(now, step)


class Writer:
    """`outage(error)` says whether an error means the database is away for now (gone, or locked by
    another process): the work waits and is run again. At the start it is waited out for up to
    `patience` seconds, then it is the opener's error."""

    def __init__(
        self,
        connect: Callable[[], Session],
        outage: Callable[[BaseException], bool],
        *,
        patience: float = 0.0,
        name: str = "ledger-writer",
    ) -> None:
        self._connect = connect
        self._outage = outage
        self._patience = patience
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._open_error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.outage_since: float | None = None  # time.monotonic() when the database went away

    async def start(self) -> None:
        """Connect (and migrate) in the thread; raises what stopped it."""
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._open_error is not None:
            raise self._open_error

    async def call(self, work: Work, *, write: bool) -> Any:
        if self._closing.is_set():
            raise RuntimeError("the ledger is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put(_Job(work, future, loop, write))
        return await future

    async def stop(self, patience: float) -> None:
        """Finish what is queued (through an outage, for up to `patience` seconds), then close."""
        if self._thread.ident is None:  # never started
            return
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join, patience)
        self._closing.set()  # an outage still going on: give up the batch in hand
        await asyncio.to_thread(self._thread.join)

    # -- the thread ----------------------------------------------------------------------------

    def _first_session(self) -> Session:
        deadline = time.monotonic() + self._patience
        wait = FIRST_WAIT_S
        while True:
            try:
                return self._connect()
            except Exception as exc:
                if not self._outage(exc) or time.monotonic() > deadline or self._closing.is_set():
                    raise
                if wait == FIRST_WAIT_S:
                    log.warning("waiting for the ledger", error=str(exc), up_to_s=self._patience)
                self._closing.wait(wait)
                wait = min(wait * 2, LONGEST_WAIT_S)

    def _serve(self) -> None:
        try:
            session = self._first_session()
        except BaseException as exc:  # noqa: BLE001 - handed to the opener, which raises it
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is None:
                break
            batch: list[_Job[Any]] = [first]
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            session = self._settle(session, batch)
        with contextlib.suppress(Exception):
            session.close()

    def _settle(self, session: Session, batch: list[_Job[Any]]) -> Session:
        """Run the batch, through an outage if need be; answer every caller. The session to go on with."""
        wait = FIRST_WAIT_S
        while True:
            try:
                answers = self._run_batch(session, batch)
            except Exception as exc:  # noqa: BLE001 - an outage, or the database failing the commit
                if not self._outage(exc):
                    log.error("ledger commit failed", error=str(exc), jobs=len(batch))
                    failed = LedgerUnavailable(f"the ledger failed: {exc}")
                    self._answer([(job, None, failed) for job in batch])
                    return session
                session = self._reconnect(session, exc, wait)
                wait = min(wait * 2, LONGEST_WAIT_S)
                if self._closing.is_set():
                    gone = LedgerUnavailable("the ledger closed while unreachable")
                    self._answer([(job, None, gone) for job in batch])
                    return session
                continue
            if self.outage_since is not None:
                log.warning("ledger reachable again; sending resumes")
                self.outage_since = None
            self._answer(answers)
            return session

    def _reconnect(self, session: Session, error: BaseException, wait: float) -> Session:
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            log.error("ledger unavailable: sending paused until it answers", error=str(error))
        with contextlib.suppress(Exception):
            session.close()
        while not self._closing.is_set():
            self._closing.wait(wait * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not secrecy
            try:
                return self._connect()
            except Exception as exc:  # noqa: BLE001 - still down: wait longer
                log.debug("ledger still unreachable", error=str(exc))
                wait = min(wait * 2, LONGEST_WAIT_S)
        return session

    def _run_batch(self, session: Session, batch: list[_Job[Any]]) -> list[_Answer]:
        plan = units(batch, lambda job: job.work)
        now = session.begin(any(job.write for job in batch))
        try:
            answers = [a for unit in plan for a in answered(unit, run(session, now, unit.program()))]
        except Exception as exc:
            if self._outage(exc):
                raise
            session.rollback()
            if len(plan) == 1:  # nothing else to save: that caller gets the error
                return [(job, None, session.plain(exc)) for job in plan[0].jobs]
            now = session.begin(any(job.write for job in batch))
            answers = [a for unit in plan for a in self._guarded(session, now, unit)]
        session.commit()
        return answers

    def _guarded(self, session: Session, now: float, unit: Unit[_Job[Any]]) -> list[_Answer]:
        """One unit in a savepoint: its failure is its callers' only."""
        session.savepoint()
        try:
            result = answered(unit, run(session, now, unit.program()))
        except Exception as exc:
            if self._outage(exc):
                raise
            session.rollback_to_savepoint()
            result = [(job, None, session.plain(exc)) for job in unit.jobs]
        session.release_savepoint()
        return result

    def _answer(self, answers: list[_Answer]) -> None:
        # One wake-up of each caller's loop per batch, not one per job: each costs a write to the
        # loop's self-pipe and a round of the GIL.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for answer in answers:
            by_loop.setdefault(answer[0].loop, []).append(answer)
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed meanwhile
                loop.call_soon_threadsafe(_resolve_all, settled)

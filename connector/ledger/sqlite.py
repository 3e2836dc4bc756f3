"""The default ledger: one SQLite file in WAL mode, written by one thread with group commit.

Every call is queued to the writer thread; the thread takes everything queued, runs it in ONE
transaction, commits once and answers all callers. Thirty-two concurrent sends marking
themselves `sending` therefore cost one fsync, not thirty-two, while each caller still gets
"durable" before its request leaves.

Several processes may share the file (a `run` and a cron `once`, a new process starting while the
old one drains): WAL lets them read while one writes, a write transaction takes the write lock at
its start (`BEGIN IMMEDIATE`, so two writers never deadlock upgrading a read), and the busy
timeout makes a writer wait its turn, which is at most one transaction of the other process.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

from connector.errors import LedgerUnavailable
from connector.ledger import schema
from connector.ledger.batches import Factory, Together, Work, answered, units
from connector.ledger.checkpoint import Checkpointer
from connector.ledger.front import SqlLedger, answer_all
from connector.ledger.steps import Now, Program, Rows, Run, RunMany, Step

log = structlog.get_logger(__name__)
T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000


@dataclass(slots=True)
class _Job(Generic[T]):
    work: Work
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop
    write: bool


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the work is committed all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_Answer = tuple[_Job[Any], Any, BaseException | None]


def _resolve_all(answers: list[_Answer]) -> None:
    for job, result, error in answers:
        _resolve(job.future, result, error)


@lru_cache(maxsize=256)
def _dialect(sql: str) -> str:
    # The writer holds the only write lock: nothing to skip, nothing to lock.
    return sql.replace("{skip_locked}", "").replace("{for_update}", "")


def _step(conn: sqlite3.Connection, now: float, step: Step) -> Any:
    if isinstance(step, Rows):
        return conn.execute(_dialect(step.sql), step.params).fetchall()
    if isinstance(step, Run):
        return conn.execute(_dialect(step.sql), step.params).rowcount
    if isinstance(step, RunMany):
        conn.executemany(_dialect(step.sql), step.params)
        return None
    assert isinstance(step, Now)
    return now


def _run(conn: sqlite3.Connection, now: float, program: Program[T]) -> T:
    return answer_all(program, lambda step: _step(conn, now, step))


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed `sending` survives power loss too, not only a killed process.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # done by the Checkpointer, off this thread
    return conn


class SqliteLedger(SqlLedger):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="ledger-writer", daemon=True)
        self._closed = False
        self._checkpoints = Checkpointer(path)

    @classmethod
    async def open(cls, path: Path) -> SqliteLedger:
        ledger = cls(path)
        ledger._thread.start()
        await asyncio.to_thread(ledger._ready.wait)
        if ledger._open_error is not None:
            raise ledger._open_error
        ledger._checkpoints.start()
        return ledger

    # -- the writer thread -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        try:
            conn.execute("BEGIN IMMEDIATE")  # one migration at a time, whichever process starts first
            try:
                answer_all(schema.migrate(), lambda step: _step(conn, time.time(), step))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve(self) -> None:
        try:
            conn = self._connect()
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
            self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job[Any]]) -> None:
        answers: list[_Answer] = []
        try:
            # A batch that writes takes the lock at its start: taking it later, on the first write,
            # could fail at once with SQLITE_BUSY when another process wrote in between.
            conn.execute("BEGIN IMMEDIATE" if any(job.write for job in batch) else "BEGIN")
            now = time.time()
            plan = units(batch, lambda job: job.work)
            if len(plan) == 1:
                # Alone in its transaction, a unit needs no savepoint: two statements fewer, and
                # each statement hands the GIL to the event loop and has to win it back.
                try:
                    answers += answered(plan[0], _run(conn, now, plan[0].program()))
                except Exception as exc:  # noqa: BLE001 - handed back to those callers
                    conn.execute("ROLLBACK")
                    answers += [(job, None, exc) for job in plan[0].jobs]
            else:
                for unit in plan:
                    # A savepoint per unit: one caller's failure never undoes another's work.
                    conn.execute("SAVEPOINT job")
                    try:
                        answers += answered(unit, _run(conn, now, unit.program()))
                    except Exception as exc:  # noqa: BLE001 - handed back to those callers
                        conn.execute("ROLLBACK TO job")
                        answers += [(job, None, exc) for job in unit.jobs]
                    conn.execute("RELEASE job")
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            log.error("ledger commit failed", error=str(exc), jobs=len(batch))
            answers = [(job, None, LedgerUnavailable(f"the ledger failed: {exc}")) for job in batch]
        # One wake-up of each caller's loop per batch, not one per job: each costs a write to the
        # loop's self-pipe and a round of the GIL.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for answer in answers:
            by_loop.setdefault(answer[0].loop, []).append(answer)
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_resolve_all, settled)

    async def _call(self, work: Work, write: bool) -> T:
        if self._closed:
            raise RuntimeError("the ledger is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(work, future, loop, write))
        return await future

    async def _write(self, work: Factory[T] | Together[Any]) -> T:
        return await self._call(work, True)

    async def _read(self, factory: Factory[T]) -> T:
        return await self._call(factory, False)

    async def _disconnect(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._checkpoints.stop)
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)


def schema_version(path: Path) -> int:
    """The version of the ledger file without changing it (`connector check`); 0 when empty."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        tables = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchall()
        if not tables:
            return 0
        return answer_all(schema.version(), lambda step: _step(conn, time.time(), step))
    finally:
        conn.close()

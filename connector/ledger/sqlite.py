"""The default ledger: one SQLite file in WAL mode, written by one thread with group commit.

Every call is queued to the writer thread; the thread takes everything queued, runs it in ONE
transaction, commits once and answers all callers. Thirty-two concurrent sends marking
themselves `sending` therefore cost one fsync, not thirty-two, while each caller still gets
"durable" before its request leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

from connector.ledger.base import (
    Claim,
    ClaimResult,
    Counts,
    Entry,
    Ledger,
    Remember,
    State,
    Transition,
)
from connector.ledger.checkpoint import Checkpointer
from connector.ledger.claims import COLUMNS, LOOKUP_CHUNK, claim_all, entry_of

log = structlog.get_logger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sends (
    key        TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    rule       TEXT NOT NULL,
    sink       TEXT NOT NULL,
    origin     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    text       TEXT NOT NULL,
    state      TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    attempts   INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL
);
-- Only held messages are indexed by state: every send passes through three states, and indexing
-- all of them tripled the index writes for the one query (retry what is pending) that needs it.
-- (WITHOUT ROWID was tried: random hash keys into a clustered tree of wide rows were 40% slower.)
CREATE INDEX IF NOT EXISTS sends_pending ON sends (sink, created_at) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS notes (
    scope TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema', '1');
"""


@dataclass(slots=True)
class _Job(Generic[T]):
    work: Callable[[sqlite3.Connection], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop


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


def _run_alone(conn: sqlite3.Connection, job: _Job[Any]) -> _Answer:
    try:
        result = job.work(conn)
    except Exception as exc:  # noqa: BLE001 - handed back to that caller
        conn.execute("ROLLBACK")
        return job, None, exc
    return job, result, None


class SqliteLedger(Ledger):
    def __init__(self, path: Path) -> None:
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
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed `sending` survives power loss too, not only a killed process.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # done by the Checkpointer, off this thread
        conn.executescript(SCHEMA)
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
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:
                # Alone in its transaction, a job needs no savepoint: two statements fewer, and each
                # statement hands the GIL to the event loop and has to win it back.
                answers.append(_run_alone(conn, batch[0]))
            else:
                for job in batch:
                    # A savepoint per job: one caller's bad input never undoes another's work.
                    conn.execute("SAVEPOINT job")
                    try:
                        result = job.work(conn)
                    except Exception as exc:  # noqa: BLE001 - handed back to that caller
                        conn.execute("ROLLBACK TO job")
                        answers.append((job, None, exc))
                    else:
                        answers.append((job, result, None))
                    conn.execute("RELEASE job")
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            log.error("ledger commit failed", error=str(exc), jobs=len(batch))
            answers = [(job, None, exc) for job in batch]
        # One wake-up of each caller's loop per batch, not one per job: each costs a write to the
        # loop's self-pipe and a round of the GIL.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for answer in answers:
            by_loop.setdefault(answer[0].loop, []).append(answer)
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_resolve_all, settled)

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError("the ledger is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(work, future, loop))
        return await future

    # -- the interface -----------------------------------------------------------------------

    async def claim(
        self, claims: Sequence[Claim], remember: Remember | None = None
    ) -> list[tuple[ClaimResult, Entry]]:
        now = time.time()

        def work(conn: sqlite3.Connection) -> list[tuple[ClaimResult, Entry]]:
            answers = claim_all(conn, claims, now) if claims else []
            if remember is not None:
                _set_note(conn, *remember(answers))
            return answers

        return await self._call(work)

    async def mark_sending(self, keys: Sequence[str]) -> None:
        now = time.time()

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE sends SET state = 'sending', attempts = attempts + 1, updated_at = ? WHERE key = ?",
                [(now, k) for k in keys],
            )

        await self._call(work)

    async def record(self, transitions: Sequence[Transition]) -> None:
        now = time.time()

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE sends SET state = ?, detail = ?, updated_at = ? WHERE key = ?",
                [(t.state.value, t.detail, now, t.key) for t in transitions],
            )

        await self._call(work)

    async def recover(self) -> int:
        now = time.time()

        def work(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE sends SET state = 'unknown', updated_at = ?, "
                "detail = 'the process stopped while the provider had the request; not resent' "
                "WHERE state = 'sending'",
                (now,),
            )
            return cursor.rowcount

        return await self._call(work)

    async def pending(self, sinks: Sequence[str], limit: int, claimed_before: float) -> list[Entry]:
        marks = ",".join("?" for _ in sinks)

        def work(conn: sqlite3.Connection) -> list[Entry]:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM sends WHERE state = 'pending' AND sink IN ({marks}) "  # noqa: S608 - placeholders only
                "AND (detail != '' OR created_at < ?) ORDER BY created_at LIMIT ?",
                [*sinks, claimed_before, limit],
            ).fetchall()
            return [entry_of(r) for r in rows]

        return await self._call(work) if sinks else []

    async def entries(self, keys: Sequence[str]) -> list[Entry]:
        def work(conn: sqlite3.Connection) -> list[Entry]:
            found: list[Entry] = []
            for start in range(0, len(keys), LOOKUP_CHUNK):
                part = list(keys[start : start + LOOKUP_CHUNK])
                marks = ",".join("?" * len(part))
                rows = conn.execute(f"SELECT {COLUMNS} FROM sends WHERE key IN ({marks})", part)  # noqa: S608
                found.extend(entry_of(r) for r in rows)
            return found

        return await self._call(work) if keys else []

    async def counts(self) -> list[Counts]:
        def work(conn: sqlite3.Connection) -> list[Counts]:
            rows = conn.execute(
                "SELECT source, rule, state, count(*) FROM sends GROUP BY source, rule, state "
                "ORDER BY source, rule, state"
            ).fetchall()
            return [Counts(r[0], r[1], State(r[2]), r[3]) for r in rows]

        return await self._call(work)

    async def recent(self, states: Sequence[State], limit: int) -> list[Entry]:
        marks = ",".join("?" for _ in states)

        def work(conn: sqlite3.Connection) -> list[Entry]:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM sends WHERE state IN ({marks}) "  # noqa: S608 - placeholders only
                "ORDER BY updated_at DESC LIMIT ?",
                [*(s.value for s in states), limit],
            ).fetchall()
            return [entry_of(r) for r in rows]

        return await self._call(work)

    async def get_note(self, scope: str, key: str) -> str | None:
        def work(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM notes WHERE scope = ? AND key = ?", (scope, key)).fetchone()
            return None if row is None else str(row[0])

        return await self._call(work)

    async def set_note(self, scope: str, key: str, value: str) -> None:
        await self._call(lambda conn: _set_note(conn, scope, key, value))

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._checkpoints.stop)
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)


def _set_note(conn: sqlite3.Connection, scope: str, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO notes VALUES (?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
        (scope, key, value),
    )

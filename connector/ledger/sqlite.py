"""The default ledger: one SQLite file in WAL mode, written by one thread with group commit
(connector/ledger/writer.py); reads go through the same thread.

Several processes may share the file (a `run` and a cron `once`, a new process starting while the
old one drains): WAL lets them read while one writes, a write transaction takes the write lock at
its start (`BEGIN IMMEDIATE`, so two writers never deadlock upgrading a read), and the busy
timeout makes a writer wait its turn, which is at most one transaction of the other process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from connector.ledger import schema
from connector.ledger.batches import Factory, Together
from connector.ledger.checkpoint import Checkpointer
from connector.ledger.front import SqlLedger
from connector.ledger.steps import Insert, Program, RowsIn, RunIn, chunks, marks
from connector.ledger.writer import Verbs, Writer, run

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
# Another process can hold the write lock for as long as it is frozen (SIGSTOP, a stopped VM):
# SQLite cannot take it from it. Waited out like an outage, at the start too, for this long.
START_PATIENCE_S = 600.0
INSERT_ROWS = 200  # rows per multi-row INSERT: far below SQLite's bound on parameters


@lru_cache(maxsize=256)
def _dialect(sql: str) -> str:
    # The writer holds the only write lock: nothing to skip, nothing to lock.
    return sql.replace("{skip_locked}", "").replace("{for_update}", "")


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


def locked(error: BaseException) -> bool:
    """SQLITE_BUSY beyond the busy timeout: another process holds the write lock; later it may not."""
    return isinstance(error, sqlite3.OperationalError) and any(
        word in str(error) for word in ("database is locked", "database is busy")
    )


class SqliteSession(Verbs):
    """The writer's connection (writer.Session)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = connect(path)
        try:
            self.conn.execute("BEGIN IMMEDIATE")  # one migration at a time, whichever process starts first
            try:
                run(self, time.time(), schema.migrate())
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.close()
            raise

    def begin(self, write: bool) -> float:
        # A batch that writes takes the lock at its start: taking it later, on the first write,
        # could fail at once with SQLITE_BUSY when another process wrote in between.
        self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        return time.time()

    def dialect(self, sql: str) -> str:
        return _dialect(sql)

    def bulk(self, step: RowsIn | RunIn | Insert) -> Any:
        if isinstance(step, Insert):
            return self._insert(step)
        found: list[Any] = []
        changed = 0
        for part in chunks(step.values):
            cursor = self.conn.execute(
                _dialect(step.sql).replace("{in}", marks(len(part))), [*step.before, *part]
            )
            if isinstance(step, RowsIn):
                found += cursor.fetchall()
            else:
                changed += cursor.rowcount
        return found if isinstance(step, RowsIn) else changed

    def _insert(self, step: Insert) -> list[Any]:
        row = f"({marks(len(step.columns))})"
        inserted: list[Any] = []
        for part in chunks(step.rows, INSERT_ROWS):
            sql = (
                f"INSERT INTO {step.table} ({', '.join(step.columns)}) VALUES {','.join([row] * len(part))} "
                f"ON CONFLICT ({step.conflict}) DO NOTHING RETURNING {step.conflict}"
            )
            inserted += [r[0] for r in self.conn.execute(sql, [v for values in part for v in values])]
        return inserted

    def plain(self, error: Exception) -> Exception:
        return error


class SqliteReader(SqliteSession):
    """A read-only connection of its own, for a read too long for the writer's thread (a count over
    every row): in WAL mode it reads a snapshot while the writer carries on committing."""

    def __init__(self, path: Path) -> None:  # no migration: the writer has made the tables
        uri = path.absolute().as_uri() + "?mode=ro"
        self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)

    def read(self, program: Program[T]) -> T:
        try:
            self.conn.execute("BEGIN")
            return run(self, time.time(), program)
        finally:
            self.conn.close()


class SqliteLedger(SqlLedger):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._writer = Writer(lambda: SqliteSession(path), locked, patience=START_PATIENCE_S)
        self._checkpoints = Checkpointer(path)
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> SqliteLedger:
        ledger = cls(path)
        await ledger._writer.start()
        ledger._checkpoints.start()
        return ledger

    async def _write(self, work: Factory[T] | Together[Any]) -> T:
        result: T = await self._writer.call(work, write=True)
        return result

    async def _read(self, factory: Factory[T]) -> T:
        result: T = await self._writer.call(factory, write=False)
        return result

    async def _read_aside(self, factory: Factory[T]) -> T:
        return await asyncio.to_thread(lambda: SqliteReader(self.path).read(factory()))

    async def _disconnect(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._checkpoints.stop)
        await self._writer.stop(patience=60.0)


def schema_version(path: Path) -> int:
    """The version of the ledger file without changing it (`connector check`); 0 when empty."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        tables = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchall()
        if not tables:
            return 0
        found = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchall()
        return int(found[0][0]) if found else 0
    finally:
        conn.close()

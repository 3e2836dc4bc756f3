"""The ledger on PostgreSQL, for several instances on several hosts (psycopg 3).

Writes are group-committed by the writer thread (connector/ledger/writer.py) on a connection of
its own, kept off the event loop: on a busy loop every round trip also waited its turn among the
HTTP and rule work, which cost more than the round trip. Reads run beside it on an async
`psycopg_pool` pool, in the loop.

Leases are rows with an expiry judged by the database's clock (one clock for every host), never
session advisory locks: those break behind PgBouncer's transaction pooling and carry no fencing
token. The only advisory lock is transaction-scoped, around the schema migration.

An outage pauses the ledger instead of failing it: a write batch whose connection breaks is run
again on a new connection, with a growing back-off, until the database answers. Nothing is sent
meanwhile (no `sending` can be made durable), `/healthz` answers 503, and nothing is lost: every
program is idempotent when run again after a commit whose answer was lost.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from connector.errors import LedgerUnavailable
from connector.ledger import schema
from connector.ledger.batches import Factory, Together
from connector.ledger.front import SqlLedger
from connector.ledger.steps import Insert, Now, Program, Rows, RowsIn, RunIn
from connector.ledger.writer import Verbs, Writer, run
from connector.redact import Redactor

log = structlog.get_logger(__name__)
T = TypeVar("T")

POOL_SIZE = 3  # reads beside the writer's own connection
CONNECT_TIMEOUT_S = 5.0
CLOSE_WAIT_S = 10.0  # for the last writes at a stop, through an outage
MIGRATION_LOCK = 0x534D53  # any constant: only migrations take it, and only for their transaction
_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"
_GONE = (psycopg.OperationalError, psycopg.InterfaceError)  # the connection or the server went away


@lru_cache(maxsize=256)
def _dialect(sql: str) -> str:
    sql = sql.replace("%", "%%").replace("IN ({in})", "= ANY(?)").replace("?", "%s")
    return sql.replace("{skip_locked}", "FOR UPDATE SKIP LOCKED").replace("{for_update}", "FOR UPDATE")


@lru_cache(maxsize=16)
def _insert_sql(table: str, columns: tuple[str, ...], types: tuple[str, ...], conflict: str) -> str:
    # One array per column: one short statement, parsed and planned once, whatever the row count.
    arrays = ", ".join(f"%s::{kind}[]" for kind in types)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {conflict}"
    )


def gone(error: BaseException) -> bool:
    """The connection or the server went away (not a refusal of the statement)."""
    return isinstance(error, _GONE)


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class PgSession(Verbs):
    """The writer's connection (writer.Session): autocommit off by hand, so that BEGIN and the
    clock travel together in one round trip."""

    def __init__(self, url: str, *, migrate: bool) -> None:
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S))
        if migrate:
            try:
                with self.conn.transaction():
                    self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
                    found = run(self, self._clock(), schema.migrate())
            except BaseException:
                self.conn.close()
                raise
            if found != schema.VERSION:
                log.info("ledger schema created or migrated", found=found, now=schema.VERSION)

    def _clock(self) -> float:
        row = self.conn.execute(_NOW).fetchone()
        assert row is not None
        return float(row[0])

    def begin(self, write: bool) -> float:
        with self.conn.pipeline():
            self.conn.execute("BEGIN")
            return self._clock()

    def dialect(self, sql: str) -> str:
        return _dialect(sql)

    def lock(self, prefix: str, keys: Sequence[str]) -> None:
        # In order, so that two transactions locking overlapping numbers never deadlock.
        self.conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s || n, 0)) "
            "FROM (SELECT unnest(%s::text[]) AS n ORDER BY 1) s",
            [prefix, list(keys)],
        )

    def bulk(self, step: RowsIn | RunIn | Insert) -> Any:
        if isinstance(step, Insert):
            sql = _insert_sql(step.table, step.columns, step.types, step.conflict)
            columns = [list(column) for column in zip(*step.rows, strict=True)]
            return [r[0] for r in self.conn.execute(sql, columns)]
        cursor = self.conn.execute(_dialect(step.sql), [*step.before, list(step.values)])
        return cursor.fetchall() if isinstance(step, RowsIn) else cursor.rowcount

    def plain(self, error: Exception) -> Exception:
        if isinstance(error, psycopg.Error):
            return LedgerUnavailable(f"the ledger refused a write: {error.sqlstate}: {error}")
        return error


async def _read_program(conn: psycopg.AsyncConnection[Any], program: Program[T]) -> T:
    """A read-only program on a pooled async connection (the same steps, awaited)."""
    answer: Any = None
    while True:
        try:
            step = program.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(step, Now):
            row = await (await conn.execute(_NOW)).fetchone()
            assert row is not None
            answer = float(row[0])
        elif isinstance(step, RowsIn):
            answer = await (
                await conn.execute(_dialect(step.sql), [*step.before, list(step.values)])
            ).fetchall()
        elif isinstance(step, Rows):
            answer = await (await conn.execute(_dialect(step.sql), step.params)).fetchall()
        else:
            raise TypeError(f"a read cannot write: {type(step).__name__}")


class PostgresLedger(SqlLedger):
    def __init__(self, url: str, *, migrate: bool = True) -> None:
        super().__init__()
        self.url = url
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            timeout=CONNECT_TIMEOUT_S,
            check=AsyncConnectionPool.check_connection,
            kwargs={"connect_timeout": int(CONNECT_TIMEOUT_S), "autocommit": True},
        )
        self._writer = Writer(lambda: PgSession(url, migrate=migrate), gone)
        password = psycopg.conninfo.conninfo_to_dict(url).get("password")
        self._redact = Redactor([str(password)] if password else []).text

    @property
    def writable(self) -> bool:
        return self._writer.outage_since is None

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> PostgresLedger:
        ledger = cls(url, migrate=migrate)
        try:
            await ledger._writer.start()  # connects, and migrates, first: reads need the tables
            await ledger._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except (psycopg.Error, PoolTimeout) as exc:
            await ledger._close_all()
            raise LedgerUnavailable(
                f"cannot reach the ledger at {shown(url)}: {ledger._redact(str(exc))}"
            ) from exc
        except BaseException:
            await ledger._close_all()
            raise
        return ledger

    async def schema_version(self) -> int:
        async with self._pool.connection() as conn:
            exists = await (await conn.execute("SELECT to_regclass('meta')")).fetchone()
            if exists is None or exists[0] is None:
                return 0
            found = await (await conn.execute("SELECT value FROM meta WHERE name = 'schema'")).fetchone()
            return int(found[0]) if found else 0

    async def _write(self, work: Factory[T] | Together[Any]) -> T:
        result: T = await self._writer.call(work, write=True)
        return result

    async def _read(self, factory: Factory[T]) -> T:
        try:
            async with self._pool.connection() as conn:
                return await _read_program(conn, factory())
        except (*_GONE, PoolTimeout) as exc:
            raise LedgerUnavailable(f"the ledger is unreachable: {self._redact(str(exc))}") from exc

    async def _disconnect(self) -> None:
        await self._close_all()

    async def _close_all(self) -> None:
        await self._writer.stop(CLOSE_WAIT_S)
        await self._pool.close()

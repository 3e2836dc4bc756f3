"""The ledger on PostgreSQL, for several instances on several hosts (psycopg 3, async, pooled).

Writes are group-committed like SQLite's: one writer task takes every job queued, runs them in ONE
transaction (a savepoint each, so one caller's refusal never undoes another's work), commits once
and answers all callers. Reads run on their own pooled connections, beside the writer.

Leases are rows with an expiry judged by the database's clock (one clock for every host), never
session advisory locks: those break behind PgBouncer's transaction pooling and carry no fencing
token. The only advisory lock is transaction-scoped, around the schema migration.

An outage pauses the ledger instead of failing it: a write batch whose connection breaks is run
again, on a new connection, with a growing back-off, until the database answers. Nothing is sent
meanwhile (no `sending` can be made durable), `/healthz` answers 503 (reads fail at once), and
nothing is lost: every program is idempotent when run again after a commit whose answer was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from connector.errors import LedgerUnavailable
from connector.ledger import schema
from connector.ledger.batches import Factory, Together, Work, answered, units
from connector.ledger.front import SqlLedger
from connector.ledger.steps import Now, Program, Rows, Run, RunMany, Step
from connector.redact import Redactor

log = structlog.get_logger(__name__)
T = TypeVar("T")

POOL_SIZE = 4  # the writer's connection, and reads beside it
CONNECT_TIMEOUT_S = 5.0
CLOSE_WAIT_S = 10.0  # for the last writes at a stop, through an outage
FIRST_WAIT_S = 0.2
LONGEST_WAIT_S = 10.0
MIGRATION_LOCK = 0x534D53  # any constant: only migrations take it, and only for their transaction
_OUTAGE = (psycopg.OperationalError, PoolTimeout)
_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"


@dataclass(slots=True)
class _Job(Generic[T]):
    work: Work
    future: asyncio.Future[T]


@lru_cache(maxsize=256)
def _dialect(sql: str) -> str:
    sql = sql.replace("%", "%%").replace("?", "%s")
    return sql.replace("{skip_locked}", "FOR UPDATE SKIP LOCKED").replace("{for_update}", "FOR UPDATE")


async def _step(conn: psycopg.AsyncConnection[Any], now: float, step: Step) -> Any:
    if isinstance(step, Now):
        return now
    if isinstance(step, RunMany):
        async with conn.cursor() as cur:
            await cur.executemany(_dialect(step.sql), step.params)
        return None
    cur = await conn.execute(_dialect(step.sql), step.params)
    if isinstance(step, Rows):
        return await cur.fetchall()
    assert isinstance(step, Run)
    return cur.rowcount


async def _run(conn: psycopg.AsyncConnection[Any], now: float, program: Program[T]) -> T:
    answer: Any = None
    while True:
        try:
            step = program.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        answer = await _step(conn, now, step)


async def _now(conn: psycopg.AsyncConnection[Any]) -> float:
    row = await (await conn.execute(_NOW)).fetchone()
    assert row is not None
    return float(row[0])


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class PostgresLedger(SqlLedger):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            timeout=CONNECT_TIMEOUT_S,
            check=AsyncConnectionPool.check_connection,
            kwargs={"connect_timeout": int(CONNECT_TIMEOUT_S)},
        )
        self._jobs: asyncio.Queue[_Job[Any] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.outage_since: float | None = None  # loop time the ledger stopped answering, if it has
        password = psycopg.conninfo.conninfo_to_dict(url).get("password")
        self._redact = Redactor([str(password)] if password else []).text

    @property
    def writable(self) -> bool:
        return self.outage_since is None

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> PostgresLedger:
        ledger = cls(url)
        try:
            await ledger._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            if migrate:
                await ledger._migrate()
        except (*_OUTAGE, psycopg.Error) as exc:
            await ledger._pool.close()
            raise LedgerUnavailable(
                f"cannot reach the ledger at {shown(url)}: {ledger._redact(str(exc))}"
            ) from exc
        except BaseException:
            await ledger._pool.close()
            raise
        ledger._writer = asyncio.create_task(ledger._serve(), name="ledger-writer")
        return ledger

    async def _migrate(self) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            found = await _run(conn, await _now(conn), schema.migrate())
        if found != schema.VERSION:
            log.info("ledger schema created or migrated", found=found, now=schema.VERSION)

    async def schema_version(self) -> int:
        async with self._pool.connection() as conn:
            exists = await (await conn.execute("SELECT to_regclass('meta')")).fetchone()
            if exists is None or exists[0] is None:
                return 0
            return await _run(conn, 0.0, schema.version())

    # -- the writer ------------------------------------------------------------------------------

    async def _serve(self) -> None:
        while True:
            first = await self._jobs.get()
            if first is None:
                return
            batch: list[_Job[Any]] = [first]
            stop = False
            while not self._jobs.empty():
                job = self._jobs.get_nowait()
                if job is None:
                    stop = True
                    break
                batch.append(job)
            await self._commit(batch)
            if stop:
                return

    async def _commit(self, batch: list[_Job[Any]]) -> None:
        """Run the batch in one transaction; through an outage, again and again until it answers."""
        wait = FIRST_WAIT_S
        while True:
            try:
                answers = await self._transaction(batch)
            except _OUTAGE as exc:
                loop = asyncio.get_running_loop()
                if self.outage_since is None:
                    self.outage_since = loop.time()
                    log.error(
                        "ledger unreachable: sending paused until it answers", error=self._redact(str(exc))
                    )
                await asyncio.sleep(wait * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not secrecy
                wait = min(wait * 2, LONGEST_WAIT_S)
                continue
            if self.outage_since is not None:
                log.warning("ledger reachable again; sending resumes")
                self.outage_since = None
            for job, result, error in answers:
                if job.future.done():
                    continue
                if error is not None:
                    job.future.set_exception(error)
                else:
                    job.future.set_result(result)
            return

    async def _transaction(self, batch: list[_Job[Any]]) -> list[tuple[_Job[Any], Any, BaseException | None]]:
        answers: list[tuple[_Job[Any], Any, BaseException | None]] = []
        plan = units(batch, lambda job: job.work)
        async with self._pool.connection() as conn:
            if len(plan) == 1:
                try:
                    async with conn.transaction():
                        answers += answered(plan[0], await _run(conn, await _now(conn), plan[0].program()))
                except _OUTAGE:
                    raise
                except Exception as exc:  # noqa: BLE001 - rolled back, handed back to those callers
                    answers += [(job, None, _plain(exc)) for job in plan[0].jobs]
                return answers
            async with conn.transaction():
                now = await _now(conn)
                for unit in plan:
                    try:
                        async with conn.transaction():  # a savepoint
                            answers += answered(unit, await _run(conn, now, unit.program()))
                    except _OUTAGE:
                        raise
                    except Exception as exc:  # noqa: BLE001 - rolled back to its savepoint
                        answers += [(job, None, _plain(exc)) for job in unit.jobs]
        return answers

    async def _write(self, work: Factory[T] | Together[Any]) -> T:
        if self._writer is None or self._writer.done():
            raise RuntimeError("the ledger is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait(_Job(work, future))
        return await future

    async def _read(self, factory: Factory[T]) -> T:
        try:
            async with self._pool.connection() as conn:
                return await _run(conn, await _now(conn), factory())
        except _OUTAGE as exc:
            raise LedgerUnavailable(f"the ledger is unreachable: {self._redact(str(exc))}") from exc

    async def _disconnect(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            self._jobs.put_nowait(None)
            done, _ = await asyncio.wait({writer}, timeout=CLOSE_WAIT_S)
            if not done:  # still waiting out an outage: what it holds lapses with the lease
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        await self._pool.close()


def _plain(exc: Exception) -> Exception:
    """Database errors handed to callers as the ledger's own (with the SQL state for a person)."""
    if isinstance(exc, psycopg.Error):
        return LedgerUnavailable(f"the ledger refused a write: {exc.sqlstate}: {exc}")
    return exc

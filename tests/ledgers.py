"""Ledgers for tests: a fresh SQLite file or a fresh PostgreSQL database, and raw SQL beside them.

PostgreSQL is the machine's (127.0.0.1:5432, trust auth; CI starts it in `.ci/run`). Each test
gets a database of its own, dropped afterwards. A test that cannot reach PostgreSQL fails: it
never skips, so a broken CI machine cannot pass for a green one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from connector.ledger import SqlLedger, open_ledger

ADMIN_URL = os.environ.get("CONNECTOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """The URL of a new, empty database; dropped (with its connections) at the end."""
    name = f"connector_test_{secrets.token_hex(5)}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def ledger_url(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'ledger.db'}"
    else:
        with fresh_postgres() as url:
            yield url


@contextlib.asynccontextmanager
async def joined(url: str, folder: Path) -> AsyncIterator[SqlLedger]:
    """The ledger at `url`, as one instance with a lease, closed at the end."""
    ledger = await open_ledger(url, folder)
    await ledger.join(lease=30)
    try:
        yield ledger
    finally:
        await ledger.close()


def raw_sql(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """One statement on the ledger's database, outside the product (`?` placeholders): to look at
    what is stored, or to make time pass for a lease."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)) as db, db:
            return db.execute(sql, params).fetchall()
    with psycopg.connect(url, autocommit=True) as db:
        cur = db.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def lapse(url: str, instance: str) -> None:
    """As if `instance` had been silent past its lease (a pause, a stopped VM)."""
    raw_sql(url, "UPDATE instances SET expires_at = 0 WHERE id = ?", [instance])

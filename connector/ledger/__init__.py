"""Durable record of every send: the reason no message goes out twice, whatever the processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from connector.errors import ConfigError, ConfigProblem, Fenced, LedgerUnavailable
from connector.ledger import schema
from connector.ledger.base import (
    Claim,
    Claimed,
    ClaimResult,
    Counts,
    Delivery,
    Entry,
    Instance,
    Ledger,
    Refusal,
    State,
    Transition,
)
from connector.ledger.decisions import Decision, Resolution, Step, Verdict
from connector.ledger.front import DEFAULT_LEASE_S, SqlLedger
from connector.ledger.sqlite import SqliteLedger, schema_version

__all__ = [
    "DEFAULT_LEASE_S",
    "Claim",
    "ClaimResult",
    "Claimed",
    "Counts",
    "Decision",
    "Delivery",
    "Entry",
    "Fenced",
    "Instance",
    "Ledger",
    "LedgerUnavailable",
    "Refusal",
    "Resolution",
    "SqlLedger",
    "State",
    "Step",
    "Transition",
    "Verdict",
    "describe",
    "is_postgres",
    "open_ledger",
    "sqlite_path",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def sqlite_path(url: str, base_dir: Path) -> Path | None:
    """The file behind a sqlite:/// URL (relative to the config's folder), None for other schemes."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = Path(url[len(prefix) :])
    return path if path.is_absolute() else base_dir / path


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


async def describe(url: str, base_dir: Path, *, online: bool) -> str:
    """What `connector check` says of the ledger, changing nothing. Raises LedgerUnavailable when
    it cannot be used: unreachable, or a schema newer than this code."""
    path = sqlite_path(url, base_dir)
    if path is not None:
        if not path.exists():
            return f"{path}: does not exist yet, will be created"
        return _version_line(await asyncio.to_thread(schema_version, path), str(path))
    if not is_postgres(url):
        return "unsupported scheme"  # the loader reports it as a config error
    if not online:
        return "not checked (--offline)"
    from connector.ledger.postgres import PostgresLedger, shown  # noqa: PLC0415 - psycopg only when used

    ledger = await PostgresLedger.open(url, migrate=False)
    try:
        found = await ledger.schema_version()
    finally:
        await ledger.close()
    return _version_line(found, f"{shown(url)}: reachable")


def _version_line(found: int, where: str) -> str:
    if found > schema.VERSION:
        raise LedgerUnavailable(
            f"{where}: schema version {found} is newer than this connector knows ({schema.VERSION})"
        )
    if found == 0:
        return f"{where}, empty: the tables are created at the first start"
    if found < schema.VERSION:
        return f"{where}, schema version {found}: migrated to {schema.VERSION} at the next start"
    return f"{where}, schema version {found}"


async def open_ledger(url: str, base_dir: Path, config_file: str = "config.yaml") -> SqlLedger:
    path = sqlite_path(url, base_dir)
    if path is not None:
        return await SqliteLedger.open(path)
    if is_postgres(url):
        from connector.ledger.postgres import PostgresLedger  # noqa: PLC0415 - psycopg only when used

        return await PostgresLedger.open(url)
    scheme = url.split(":", 1)[0]
    raise ConfigError(
        [
            ConfigProblem(
                config_file,
                None,
                "state",
                f"ledger scheme {scheme!r} is not supported (use sqlite:///FILE or postgresql://user@host/db)",
            )
        ]
    )

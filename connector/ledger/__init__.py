"""Durable record of every send: the reason no message goes out twice, whatever the processes."""

from __future__ import annotations

from pathlib import Path

from connector.errors import ConfigError, ConfigProblem, Fenced, LedgerUnavailable
from connector.ledger.base import (
    Claim,
    Claimed,
    ClaimResult,
    Counts,
    Delivery,
    Entry,
    Instance,
    Ledger,
    State,
    Transition,
)
from connector.ledger.front import DEFAULT_LEASE_S, SqlLedger
from connector.ledger.sqlite import SqliteLedger

__all__ = [
    "DEFAULT_LEASE_S",
    "Claim",
    "ClaimResult",
    "Claimed",
    "Counts",
    "Delivery",
    "Entry",
    "Fenced",
    "Instance",
    "Ledger",
    "LedgerUnavailable",
    "SqlLedger",
    "State",
    "Transition",
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

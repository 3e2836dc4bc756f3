"""Durable record of every send: the reason no message goes out twice."""

from __future__ import annotations

from pathlib import Path

from connector.errors import ConfigError, ConfigProblem
from connector.ledger.base import Claim, ClaimResult, Counts, Entry, Ledger, Remember, State, Transition
from connector.ledger.sqlite import SqliteLedger

__all__ = [
    "Claim",
    "ClaimResult",
    "Counts",
    "Entry",
    "Ledger",
    "Remember",
    "State",
    "Transition",
    "open_ledger",
    "sqlite_path",
]


def sqlite_path(url: str, base_dir: Path) -> Path | None:
    """The file behind a sqlite:/// URL (relative to the config's folder), None for other schemes."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = Path(url[len(prefix) :])
    return path if path.is_absolute() else base_dir / path


async def open_ledger(url: str, base_dir: Path, config_file: str = "config.yaml") -> Ledger:
    path = sqlite_path(url, base_dir)
    if path is not None:
        return await SqliteLedger.open(path)
    scheme = url.split(":", 1)[0]
    raise ConfigError(
        [
            ConfigProblem(
                config_file,
                None,
                "state",
                f"ledger scheme {scheme!r} is not supported yet (use sqlite:///FILE)",
            )
        ]
    )

"""The opt-out list the policies check (policies/optout.py): every `suppress` file and the
ledger's own list (`connector optout add`), as one set of E.164 numbers.

Lookups are set lookups on the loop. Reading is done off it, by the runtime: at the start and at
every sweep, files are read again when their size or time changed (a 100,000-number file takes
seconds to normalise: what a file normalised to is kept in the ledger's notes, by its digest, for
the next start), and the ledger's list is read again (so a number added by
`connector optout add` on any host is honoured within one sweep; `resolve`-style immediacy is not
needed: the check runs again right before each request).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog
from pydantic import BaseModel, Field, field_validator

from connector import phones
from connector.ledger import Ledger
from connector.types import STRICT

log = structlog.get_logger(__name__)

CACHE_SCOPE = "suppress"  # the ledger's notes: list file -> its numbers as last read


class SuppressConfig(BaseModel):
    """One opt-out list file: a CSV whose `column` (default: the first) holds numbers."""

    model_config = STRICT
    path: Path = Field(description="The CSV file, relative to the config file; re-read when it changes.")
    column: str | None = Field(default=None, description="The column of the numbers; default: the first.")
    country: str | None = Field(
        default=None, description="Region of numbers written without a prefix, e.g. RO."
    )

    @field_validator("country")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import phonenumbers  # noqa: PLC0415 - heavy import kept out of the config module's import time

        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a country code that phone numbers know (use RO, PK, ...)")
        return value.upper()


def normalised(numbers: Sequence[str], country: str | None) -> tuple[list[str], list[str]]:
    """(E.164 numbers, the values that are not numbers)."""
    good: list[str] = []
    bad: list[str] = []
    for value in numbers:
        found = phones.listed(value, country)
        if found is None:
            bad.append(value)
        else:
            good.append(found)
    return good, bad


def read_list(path: Path, column: str | None, country: str | None) -> set[str]:
    """The numbers of one list file; a header row is recognised by not being a number."""
    found = _Read.of(path.read_bytes(), column, country)
    found.warn(path)
    return set(found.numbers)


@dataclass(frozen=True, slots=True)
class _Read:
    """One list file as read: its E.164 numbers, and the values that are not numbers."""

    numbers: list[str]
    bad: int = 0
    first_bad: str = ""

    @classmethod
    def of(cls, data: bytes, column: str | None, country: str | None) -> _Read:
        text = data.decode("utf-8-sig", errors="replace")
        try:
            dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        rows = list(csv.reader(io.StringIO(text, newline=""), dialect))
        if not rows:
            return cls([])
        index = 0
        if column is not None:
            header = [cell.strip() for cell in rows[0]]
            if column not in header:
                raise ValueError(f"no column {column!r} (columns: {', '.join(header)})")
            index, rows = header.index(column), rows[1:]
        cells = [row[index].strip() for row in rows if len(row) > index and row[index].strip()]
        good, bad = normalised(cells, country)
        if bad and column is None and bad[0] == cells[0]:
            bad = bad[1:]  # the header
        return cls(good, len(bad), bad[0] if bad else "")

    def warn(self, path: Path) -> None:
        if self.bad:
            log.warning(
                "opt-out list holds values that are not numbers",
                file=str(path),
                count=self.bad,
                first=self.first_bad,
            )


class Notes(Protocol):
    """Where a list's numbers are kept once read (the ledger's notes), for the next start."""

    async def get_note(self, scope: str, key: str) -> str | None: ...
    async def set_note(self, scope: str, key: str, value: str) -> None: ...


def _digest(data: bytes, column: str | None, country: str | None) -> str:
    return hashlib.blake2b(
        b"\x1f".join([data, (column or "").encode(), (country or "").encode()])
    ).hexdigest()


async def _numbers(path: Path, config: SuppressConfig, data: bytes, notes: Notes | None, keep: bool) -> _Read:
    """A list file's numbers: as kept in the ledger when the file is byte for byte the one read
    then (normalising 100,000 numbers takes seconds, at every start of a cron-run `once`), else
    read and normalised now, and kept (`keep`: not by a command that only looks)."""
    digest = _digest(data, config.column, config.country)
    if notes is not None and (kept := await notes.get_note(CACHE_SCOPE, str(path))):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            cached = json.loads(kept)
            if cached["digest"] == digest:
                return _Read(cached["numbers"], cached["bad"], cached["first_bad"])
    found = await asyncio.to_thread(_Read.of, data, config.column, config.country)
    if notes is not None and keep:
        value = {"digest": digest, "numbers": found.numbers, "bad": found.bad, "first_bad": found.first_bad}
        await notes.set_note(CACHE_SCOPE, str(path), json.dumps(value, separators=(",", ":")))
    return found


class OptOuts:
    """What the opt-out policy looks numbers up in (connector.policy.OptOutList)."""

    def __init__(self, lists: Sequence[SuppressConfig] = (), base_dir: Path = Path()) -> None:
        self._lists = [(base_dir / c.path if not c.path.is_absolute() else c.path, c) for c in lists]
        self._seen: dict[Path, tuple[int, int]] = {}
        self._per_file: dict[Path, set[str]] = {}
        self._numbers: frozenset[str] = frozenset()
        self._ledger: frozenset[str] = frozenset()

    def __contains__(self, number: object) -> bool:
        return number in self._ledger or number in self._numbers

    def __len__(self) -> int:
        return len(self._ledger | self._numbers)

    async def refresh(self, ledger: Ledger | None, *, keep: bool = True) -> None:
        """Files read again where they changed, the ledger's list read again. `keep`: a list
        normalised afresh is kept in the ledger for the next start (not by `preview`)."""
        changed = False
        for path, config, stamp, data in await asyncio.to_thread(self._changed_files):
            if data is None:  # gone, or unreadable: nothing of it is suppressed until it is back
                self._per_file[path] = set()
                changed = True
                continue
            try:
                found = await _numbers(path, config, data, ledger, keep)
            except ValueError as exc:
                log.error(
                    "opt-out list cannot be read; its numbers are not suppressed",
                    file=str(path),
                    error=str(exc),
                )
                continue
            found.warn(path)
            self._seen[path] = stamp
            self._per_file[path] = set(found.numbers)
            changed = True
            log.info("opt-out list read", file=str(path), numbers=len(self._per_file[path]))
        if changed:
            self._numbers = frozenset().union(*self._per_file.values())
        if ledger is not None:
            self._ledger = frozenset(number for number, _, _ in await ledger.optouts())

    def _changed_files(self) -> list[tuple[Path, SuppressConfig, tuple[int, int], bytes | None]]:
        """The list files whose size or time changed since they were read, with their bytes (None:
        missing or unreadable, said once)."""
        changed: list[tuple[Path, SuppressConfig, tuple[int, int], bytes | None]] = []
        for path, config in self._lists:
            try:
                st = path.stat()
                stamp = (st.st_size, st.st_mtime_ns)
                if self._seen.get(path) == stamp:
                    continue
                data = path.read_bytes()
            except OSError as exc:
                if self._seen.pop(path, None) is not None or path not in self._per_file:
                    log.error(
                        "opt-out list cannot be read; its numbers are not suppressed",
                        file=str(path),
                        error=exc.strerror,
                    )
                changed.append((path, config, (0, 0), None))
                continue
            changed.append((path, config, stamp, data))
        return changed

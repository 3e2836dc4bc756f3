"""The opt-out list the policies check (policies/optout.py): every `suppress` list and the
ledger's own list (`connector optout add`), as one set of E.164 numbers.

Lookups are set lookups on the loop. Reading is done off it, by the runtime: at the start and at
every sweep, each list is asked whether it changed (a file: its size or time; a list kept
elsewhere, such as a Google Sheet tab, says so itself) and read again if so (a 100,000-number list
takes seconds to normalise: what a list normalised to is kept in the ledger's notes, by its
digest, for the next start), and the ledger's list is read again (so a number added by
`connector optout add` on any host is honoured within one sweep; `resolve`-style immediacy is not
needed: the check runs again right before each request).

A list is a `ListReader`. Files are read here; another kind of list comes with its config model
(its `reader`), from the plug-in that knows how to reach it, so this module imports none of them.
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
from pydantic import Field

from connector import phones
from connector.ledger import Ledger
from connector.optout_lists import ListConfig, ListConfigBase, ListReader, ListUnreadable

log = structlog.get_logger(__name__)

CACHE_SCOPE = "suppress"  # the ledger's notes: list file -> its numbers as last read


class SuppressConfig(ListConfigBase):
    """One opt-out list file: a CSV whose `column` (default: the first) holds numbers."""

    path: Path = Field(description="The CSV file, relative to the config file; re-read when it changes.")

    def describe(self) -> str:
        return str(self.path) + (f" (column {self.column})" if self.column else "")

    def reader(self, base_dir: Path) -> ListReader:
        return FileList(
            self.path if self.path.is_absolute() else base_dir / self.path, self.column, self.country
        )


class FileList:
    """A list file, read again when its size or modification time changed."""

    remote = False
    keeps_last = False  # a file taken away is a list emptied on purpose

    def __init__(self, path: Path, column: str | None, country: str | None) -> None:
        self.path, self.column, self.country = path, column, country
        self.name = str(path)
        self._seen: tuple[int, int] | None = None

    def fetch(self) -> bytes | None:
        try:
            st = self.path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
            if stamp == self._seen:
                return None
            data = self.path.read_bytes()
        except OSError as exc:
            self._seen = None
            raise ListUnreadable(exc.strerror or str(exc)) from None
        self._seen = stamp
        return data


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
    found.warn(str(path))
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

    def warn(self, name: str) -> None:
        if self.bad:
            log.warning(
                "opt-out list holds values that are not numbers",
                list=name,
                count=self.bad,
                first=self.first_bad,
            )


async def probe(config: ListConfig, base_dir: Path, *, online: bool) -> tuple[str, bool]:
    """What `check` says of one list: (summary, usable). A list reached over the network is not
    read `--offline`."""
    reader = config.reader(base_dir)
    if reader.remote and not online:
        return f"{config.describe()}: not read (--offline)", True
    try:
        data = await asyncio.to_thread(reader.fetch)
        found = await asyncio.to_thread(_Read.of, data or b"", reader.column, reader.country)
    except (ListUnreadable, ValueError) as exc:
        return f"{config.describe()}: UNUSABLE: {exc}", False
    bad = f", {found.bad} value(s) that are not numbers (first: {found.first_bad!r})" if found.bad else ""
    return f"{config.describe()}: {len(found.numbers)} number(s){bad}", True


class Notes(Protocol):
    """Where a list's numbers are kept once read (the ledger's notes), for the next start."""

    async def get_note(self, scope: str, key: str) -> str | None: ...
    async def set_note(self, scope: str, key: str, value: str) -> None: ...


def _digest(data: bytes, column: str | None, country: str | None) -> str:
    return hashlib.blake2b(
        b"\x1f".join([data, (column or "").encode(), (country or "").encode()])
    ).hexdigest()


async def _kept(notes: Notes | None, name: str) -> tuple[str, _Read] | None:
    """(digest, numbers) of the list as it was last normalised and kept, if it was."""
    if notes is None or not (kept := await notes.get_note(CACHE_SCOPE, name)):
        return None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        cached = json.loads(kept)
        return str(cached["digest"]), _Read(cached["numbers"], cached["bad"], cached["first_bad"])
    return None


async def _numbers(reader: ListReader, data: bytes, notes: Notes | None, keep: bool) -> _Read:
    """A list's numbers: as kept in the ledger when the list is byte for byte the one read then
    (normalising 100,000 numbers takes seconds, at every start of a cron-run `once`), else read
    and normalised now, and kept (`keep`: not by a command that only looks)."""
    digest = _digest(data, reader.column, reader.country)
    kept = await _kept(notes, reader.name)
    if kept is not None and kept[0] == digest:
        return kept[1]
    found = await asyncio.to_thread(_Read.of, data, reader.column, reader.country)
    if notes is not None and keep:
        value = {"digest": digest, "numbers": found.numbers, "bad": found.bad, "first_bad": found.first_bad}
        await notes.set_note(CACHE_SCOPE, reader.name, json.dumps(value, separators=(",", ":")))
    return found


class OptOuts:
    """What the opt-out policy looks numbers up in (connector.policy.OptOutList)."""

    def __init__(
        self, lists: Sequence[ListConfig] = (), base_dir: Path = Path(), *, offline: bool = False
    ) -> None:
        """`offline`: lists reached over the network are left out (rule tests)."""
        readers = [config.reader(base_dir) for config in lists]
        self._readers = [r for r in readers if not (offline and r.remote)]
        self._per_list: dict[str, set[str]] = {}
        self._failing: set[str] = set()  # said once per failure, not at every sweep
        self._numbers: frozenset[str] = frozenset()
        self._ledger: frozenset[str] = frozenset()

    def __contains__(self, number: object) -> bool:
        return number in self._ledger or number in self._numbers

    def __len__(self) -> int:
        return len(self._ledger | self._numbers)

    async def refresh(self, ledger: Ledger | None, *, keep: bool = True) -> None:
        """Lists read again where they changed, the ledger's list read again. `keep`: a list
        normalised afresh is kept in the ledger for the next start (not by `preview`)."""
        changed = False
        for reader in self._readers:
            changed |= await self._refresh_one(reader, ledger, keep)
        if changed:
            self._numbers = frozenset().union(*self._per_list.values())
        if ledger is not None:
            self._ledger = frozenset(number for number, _, _ in await ledger.optouts())

    async def _refresh_one(self, reader: ListReader, ledger: Ledger | None, keep: bool) -> bool:
        name = reader.name
        try:
            data = await asyncio.to_thread(reader.fetch)
            if data is None:
                return False
            found = await _numbers(reader, data, ledger, keep)
        except ListUnreadable as exc:
            return await self._unreadable(reader, ledger, str(exc))
        except ValueError as exc:  # read, but not as configured (its column renamed): keep what it held
            if name not in self._failing:
                self._failing.add(name)
                log.error(
                    "opt-out list cannot be used; its last numbers stay suppressed", list=name, error=str(exc)
                )
            return False
        if name in self._failing:
            self._failing.discard(name)
            log.info("opt-out list readable again", list=name)
        found.warn(name)
        self._per_list[name] = set(found.numbers)
        log.info("opt-out list read", list=name, numbers=len(found.numbers))
        return True

    async def _unreadable(self, reader: ListReader, ledger: Ledger | None, why: str) -> bool:
        """A list file that is gone suppresses nothing until it is back; a list kept elsewhere
        (a sheet) keeps its last numbers, those of the last start if none were read yet: an
        outage of its host must not send to the numbers on it."""
        name = reader.name
        first = name not in self._failing
        self._failing.add(name)
        if reader.keeps_last:
            if name not in self._per_list and (kept := await _kept(ledger, name)) is not None:
                self._per_list[name] = set(kept[1].numbers)
            if first:
                log.error(
                    "opt-out list cannot be read; its last numbers stay suppressed",
                    list=name,
                    error=why,
                    numbers=len(self._per_list.get(name, ())),
                )
            return True
        if first:
            log.error("opt-out list cannot be read; its numbers are not suppressed", list=name, error=why)
        return self._per_list.pop(name, None) is not None

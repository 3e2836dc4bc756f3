"""What a source harness provides: one registered source inside a real runtime.

Every source harness runs the same orders through the real engine, the SQLite ledger and a
`dry_run` sink, wired by `Runtime.open(load_config(config.yaml))` as `connector once` (or, for
sources served over HTTP, `connector run`) wires them. Only the input and the write-back differ.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

from connector.runtime import Runtime
from sources.base import Source
from tests.helpers import ro_mobile

SOURCE = "src"  # the source's name in every harness's config.yaml
LEDGER_FILE = "connector.db"
HEADER = ("Order ID", "Name", "Phone", "Status")
ORDERS: tuple[tuple[str, str, str, str], ...] = (
    ("A-1", "Ana", ro_mobile(1), "Confirmed"),
    ("A-2", "Ion", ro_mobile(2), "Confirmed"),
    ("A-3", "Dan", "12", "Confirmed"),  # the rule wants it, the number is invalid: failed
    ("A-4", "Eva", ro_mobile(4), "Draft"),  # no rule wants it: no status
)
# The first word of the status every record a rule wants must end with, by key.
WANTED = {"A-1": "sent", "A-2": "sent", "A-3": "failed"}
UNWANTED = frozenset({"A-4"})
SENDS = 2  # messages the first pass puts in the outbox

RULE = """rules:
  - name: notify
    source: src
    when: "row['Status'] == 'Confirmed'"
    to: "{{ row['Phone'] }}"
    country: RO
    message: "Hi {{ row['Name'] }}, order {{ row['Order ID'] }} is confirmed."
    sink: out
"""


def config_text(source_yaml: str, extra: str = "") -> str:
    """config.yaml with one source `src` (its YAML indented under it) and the dry-run sink `out`."""
    return (
        f"state: sqlite:///{LEDGER_FILE}\n{extra}sinks:\n  out: {{type: dry_run, path: outbox.jsonl}}\n"
        f"sources:\n  {SOURCE}:\n{source_yaml}{RULE}"
    )


def order_rows() -> list[dict[str, str]]:
    return [dict(zip(HEADER, order, strict=True)) for order in ORDERS]


def files(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a digest of its bytes and its mtime (a file rewritten as it
    was still counts: the CSV source starts settling it again). The ledger's files are left out:
    the running instance renews its lease there; what it records is compared by `ledger_rows`."""
    return {
        str(p.relative_to(folder)): f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_mtime_ns}"
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(LEDGER_FILE)
    }


def ledger_rows(folder: Path) -> list[list[tuple[object, ...]]]:
    """What the ledger records about records: its sends and its notes (not leases and holds)."""
    path = folder / LEDGER_FILE
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() for table in ("sends", "notes")]


def outbox_lines(folder: Path) -> int:
    path = folder / "outbox.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


class SourceRig(abc.ABC):
    """One source in a runtime that is open (or serving) for the length of the harness's block."""

    def __init__(self, runtime: Runtime, folder: Path) -> None:
        self.runtime = runtime
        self.folder = folder

    @property
    def source(self) -> Source:
        return self.runtime.sources[SOURCE]

    def sent(self) -> int:
        return outbox_lines(self.folder)

    @abc.abstractmethod
    async def one_pass(self) -> None:
        """Present ORDERS to the source and let it finish: statuses written, sends done."""

    @abc.abstractmethod
    async def second_pass(self) -> None:
        """Present the same input again (the same file dropped again, the sheet polled again,
        the same delivery again) and let it finish."""

    @abc.abstractmethod
    async def statuses(self) -> dict[str, str]:
        """The status written back for each order key that has one."""

    def snapshot(self) -> dict[str, Any]:
        """Everything `preview` must leave as it was."""
        return {"files": files(self.folder), "ledger": ledger_rows(self.folder)}

    def sensitive(self) -> list[str]:
        """Secret values the source handles that its config does not hold (a key file's key)."""
        return []

    async def force_failure(self) -> None:  # noqa: B027 - a source without a failure to force has none
        """Make the next pass meet failures, so their reasons are logged."""


class SourceHarness(abc.ABC):
    type_name: ClassVar[str]
    secrets: ClassVar[tuple[str, ...]] = ()  # values this harness puts in the config's secret fields
    previewed: ClassVar[int]  # records `preview` shows before the first pass

    @abc.abstractmethod
    def rig(self, tmp_path: Path) -> contextlib.AbstractAsyncContextManager[SourceRig]:
        """The runtime with this source, for the length of the block."""


def dump(value: object) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=str)

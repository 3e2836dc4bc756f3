"""What the status page reads (`GET /`, `GET /records/{id}`), as read programs: each page view is
one read, and none of them reads more than a page of rows, whatever the size of the ledger.

- The latest failures and unknowns come from the partial index `sends_attention` (schema.py), newest
  first, a page at a time (keyset: the last row's `(updated_at, key)`, never OFFSET). The states are
  written as literals: neither SQLite nor PostgreSQL can prove that a partial index's
  `WHERE state IN ('failed', 'unknown')` holds when the states arrive as parameters, and then scan
  the whole table instead.
- A search filters within that set (an id prefix, a source or rule name prefix, the last digits of
  a number). Ids are also looked up over every state through the primary key, as a range
  (`key >= ? AND key < ?`), which any collation orders the same for hex digits.
- The counts by state are not here: they scan every row (see connector/page/counts.py).
- Instances and holds are read without `programs.instances`, which counts each instance's open
  messages with a scan of the whole table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from connector.ledger import gates
from connector.ledger.base import Entry, Instance
from connector.ledger.claims import COLUMNS, entry_of
from connector.ledger.decisions import Step, history
from connector.ledger.keys import is_id_prefix, key_range
from connector.ledger.steps import Program, Rows

ATTENTION = "state IN ('failed', 'unknown')"  # literal, so that `sends_attention` is used
ID_SEARCH_MIN = 6  # hex digits before an id search looks beyond the attention set (few rows then)
ID_MATCHES = 10


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page of the attention list ends: the next page starts after this row."""

    at: float
    key: str

    def __str__(self) -> str:
        return f"{self.at!r}:{self.key}"

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        """None for anything that is not one (a hand-edited or stale link shows the first page)."""
        at, _, key = text.partition(":")
        try:
            value = float(at)
        except ValueError:
            return None
        if not key or math.isnan(value) or len(key) > 128:
            return None
        return cls(value, key)


@dataclass(frozen=True, slots=True)
class Holder:
    """A hold in the ledger (a CSV file being taken, a sheet's poll, the sweeper) and its instance."""

    name: str
    owner: str
    taken_at: float


@dataclass(frozen=True, slots=True)
class Overview:
    attention: list[Entry]  # failed and unknown, newest first, those the search matches
    more: Cursor | None  # the next page starts after this; None: this was the last page
    by_id: list[Entry]  # any state, whose id starts with the search (long enough hex searches only)
    holders: list[Holder]
    instances: list[Instance]  # what each holds is in `holders`
    spent: dict[str, int]  # by sink, on the day asked for


def _search(text: str) -> tuple[str, list[Any]]:
    """The condition (and its parameters) a search adds within the attention set."""
    if not text:
        return "", []
    ors = ["substr(source, 1, ?) = ?", "substr(rule, 1, ?) = ?"]
    params: list[Any] = [len(text), text, len(text), text]
    lowered = text.lower()
    if is_id_prefix(lowered):
        low, high = key_range(lowered)
        ors.append("(key >= ? AND key < ?)" if high is not None else "key >= ?")
        params += [low, high] if high is not None else [low]
    if text.isdigit():  # digits only: no LIKE wildcard of the search's own
        # A message that failed before it had a recipient quotes the number as it was written.
        ors.append("recipient LIKE ? OR (recipient = '' AND detail LIKE ?)")
        params += [f"%{text}", f"%{text}%"]
    return f" AND ({' OR '.join(ors)})", params


def attention(search: str, after: Cursor | None, limit: int) -> Program[tuple[list[Entry], Cursor | None]]:
    """A page of failed and unknown messages, newest first; and where the next page starts."""
    where, params = _search(search.strip())
    if after is not None:
        # `updated_at <= ?` keeps the index range; the rest of the tie is a filter on those rows.
        where += " AND updated_at <= ? AND NOT (updated_at = ? AND key >= ?)"
        params += [after.at, after.at, after.key]
    rows = yield Rows(
        f"SELECT {COLUMNS} FROM sends WHERE {ATTENTION}{where} ORDER BY updated_at DESC, key DESC LIMIT ?",
        [*params, limit + 1],
    )
    entries = [entry_of(row) for row in rows[:limit]]
    more = Cursor(entries[-1].updated_at, entries[-1].key) if len(rows) > limit else None
    return entries, more


def by_id(prefix: str) -> Program[list[Entry]]:
    """Messages of any state whose id starts with `prefix`, through the primary key."""
    prefix = prefix.strip().lower()
    if len(prefix) < ID_SEARCH_MIN or not is_id_prefix(prefix):
        return []
    low, high = key_range(prefix)
    bounds, params = ("key >= ? AND key < ?", [low, high]) if high is not None else ("key >= ?", [low])
    rows = yield Rows(
        f"SELECT {COLUMNS} FROM sends WHERE {bounds} ORDER BY key LIMIT ?", [*params, ID_MATCHES]
    )
    return [entry_of(row) for row in rows]


def holders() -> Program[list[Holder]]:
    rows = yield Rows("SELECT name, owner, taken_at FROM holds WHERE owner IS NOT NULL ORDER BY name")
    return [Holder(str(r[0]), str(r[1]), float(r[2])) for r in rows]


def running() -> Program[list[Instance]]:
    """The instances alone: the page shows holds apart, and needs no count of their messages."""
    rows = yield Rows(
        "SELECT id, host, pid, started_at, renewed_at, expires_at FROM instances ORDER BY started_at"
    )
    return [Instance(str(r[0]), str(r[1]), int(r[2]), float(r[3]), float(r[4]), float(r[5])) for r in rows]


def overview(search: str, after: Cursor | None, limit: int, day: str | None) -> Program[Overview]:
    """Everything `GET /` shows but the counts, in one read. `day`: the budgets' day, if any."""
    listed, more = yield from attention(search, after, limit)
    return Overview(
        attention=listed,
        more=more,
        by_id=(yield from by_id(search)) if after is None else [],
        holders=(yield from holders()),
        instances=(yield from running()),
        spent=(yield from gates.spent(day)) if day is not None else {},
    )


def record(key: str) -> Program[tuple[Entry, list[Step]] | None]:
    """One message as it stands and the states it passed through (None: no such message)."""
    rows = yield Rows(f"SELECT {COLUMNS} FROM sends WHERE key = ?", [key])
    if not rows:
        return None
    return entry_of(rows[0]), (yield from history(key))


def plan_sql(search: str = "", after: Cursor | None = None, limit: int = 50) -> tuple[str, Sequence[Any]]:
    """The attention query as `attention` sends it (for EXPLAIN in the tests and the benchmark)."""
    program = attention(search, after, limit)
    step = next(program)
    program.close()
    assert isinstance(step, Rows)
    return step.sql, step.params

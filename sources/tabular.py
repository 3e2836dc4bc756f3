"""What the tabular sources (CSV files, sheets) share: how a header row becomes column names, and
how a row of cells becomes a record."""

from __future__ import annotations

from collections.abc import Sequence

from connector.errors import SourceError
from connector.events import Record


class DuplicateColumn(SourceError):
    def __init__(self, name: str, where: str) -> None:
        super().__init__(f"duplicate column {name!r} in {where}")
        self.name = name


def column_names(cells: Sequence[str], where: str = "header") -> tuple[str, ...]:
    """Header cells as names: stripped, a blank one named `column N`; a name twice is refused,
    because a row could then not say which cell it means."""
    names = tuple(cell.strip() or f"column {i}" for i, cell in enumerate(cells, start=1))
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DuplicateColumn(name, where)
        seen.add(name)
    return names


def tabular_record(
    source: str,
    row: dict[str, str],
    origin: str,
    *,
    key_column: str | None,
    status_column: str | None,
    where: str = "",
    problem: str | None = None,
) -> Record:
    """A row (column name -> cell text) as a record: its key from `key_column` (an empty one is the
    row's problem), its status from `status_column` when the row has that column. The CSV files'
    rows are made here, and so are `connector test`'s rows for a tabular source."""
    key = None
    if key_column is not None:
        key = row.get(key_column, "").strip() or None
        if key is None and problem is None:
            problem = f"empty key column {key_column!r}"
    status = row.get(status_column, "").strip() if status_column is not None else ""
    return Record(source, row, origin, key=key, status=status, problem=problem, where=where)

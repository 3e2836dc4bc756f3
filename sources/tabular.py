"""What the tabular sources (CSV files, sheets) share: how a header row becomes column names."""

from __future__ import annotations

from collections.abc import Sequence

from connector.errors import SourceError


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

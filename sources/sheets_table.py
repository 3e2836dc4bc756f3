"""One read of a worksheet as the Google Sheets source sees it: which rows are due, and where every
row's status goes. Plain functions over the cells gspread returned; no I/O.

A row's identity is its key (`key_column`) or a fingerprint of its cells without the status cell;
identical rows without a key get an occurrence number. A row is due when its status cell is empty,
says `resend`, or says `pending` (the ledger may know better now).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from connector.errors import SourceError
from connector.events import Record
from connector.status import is_resend, state_word
from sources.sheets_client import Block, Grid
from sources.tabular import column_names


class TableLayout(Protocol):
    """What reading a table needs of the source's config (`GoogleSheetsConfig` has it)."""

    @property
    def header_row(self) -> int: ...
    @property
    def key_column(self) -> str | None: ...
    @property
    def status_column(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SheetRow:
    number: int  # 1-based row in the sheet
    origin: str
    cell: str  # the status cell exactly as it stands
    record: Record


@dataclass(slots=True)
class Table:
    """One read of the worksheet: its layout and the rows that need the engine."""

    grid: Grid
    names: tuple[str, ...] = ()
    status_col: int = 0  # 1-based; one past the used width when the column is missing
    status_exists: bool = False
    key_col: int = 0  # 1-based; 0 without key_column
    due: list[SheetRow] = field(default_factory=list)
    rows_by_origin: dict[str, list[int]] = field(default_factory=dict)  # every data row, for locating
    duplicates: set[str] = field(default_factory=set)  # origins shared by rows with one key


def rows_by_number(block: Block) -> dict[int, list[str]]:
    """Rows by sheet number, each padded on the left so that index 0 is column A."""
    pad = [""] * (block.col - 1)
    return {block.row + i: pad + cells for i, cells in enumerate(block.values)}


def _fingerprint(cells: Sequence[str], status_index: int) -> str:
    kept = [c for i, c in enumerate(cells) if i != status_index]
    while kept and not kept[-1]:
        kept.pop()
    digest = hashlib.blake2b("\x1f".join(kept).encode("utf-8", "surrogatepass"), digest_size=12)
    return digest.hexdigest()


def _rows_text(numbers: Sequence[int]) -> str:
    listed = [str(n) for n in numbers]
    return listed[0] if len(listed) == 1 else f"{', '.join(listed[:-1])} and {listed[-1]}"


def read_table(source: str, config: TableLayout, grid: Grid, block: Block) -> Table:
    """The records of one read; only rows that need the engine become records."""
    table = Table(grid)
    rows = rows_by_number(block)
    header_cells = rows.get(config.header_row, [])
    data = {n: cells for n, cells in rows.items() if n > config.header_row and any(c.strip() for c in cells)}
    if not any(c.strip() for c in header_cells):
        if data:
            raise SourceError(f"header row {config.header_row} of {grid.title!r} is empty")
        return table  # an empty sheet: nothing to do
    names = column_names(header_cells, "the header row")
    key_index: int | None = None
    if config.key_column is not None:
        if config.key_column not in names:
            raise SourceError(
                f"key column {config.key_column!r} not in the header row of {grid.title!r}: "
                + ", ".join(names)
            )
        key_index = names.index(config.key_column)
        table.key_col = key_index + 1
    table.names = names
    table.status_exists = config.status_column in names
    width = max([len(names), *(len(cells) for cells in data.values())])
    status_index = names.index(config.status_column) if table.status_exists else width
    table.status_col = status_index + 1
    prefix = f"sheet:{grid.spreadsheet_id}:{grid.sheet_id}:"

    keyed: dict[int, str] = {}
    origins: dict[int, str] = {}
    seen: Counter[str] = Counter()
    rows_of_key: dict[str, list[int]] = defaultdict(list)
    for number, cells in data.items():
        key = cells[key_index].strip() if key_index is not None and key_index < len(cells) else ""
        if key:
            keyed[number] = key
            rows_of_key[key].append(number)
            origins[number] = f"{prefix}key:{key}"
        else:
            # Identical rows get an occurrence number: the same origin twice would look to the
            # ledger like one record read twice, and both would be sent.
            digest = _fingerprint(cells, status_index)
            seen[digest] += 1
            origins[number] = f"{prefix}row:{digest}" + (f"#{seen[digest]}" if seen[digest] > 1 else "")
        table.rows_by_origin.setdefault(origins[number], []).append(number)

    for number, cells in data.items():
        cell = cells[status_index] if status_index < len(cells) else ""
        status = cell.strip()
        if status and not is_resend(status) and state_word(status) != "pending":
            continue
        problem: str | None = None
        row_key = keyed.get(number)
        if key_index is not None and row_key is None:
            problem = f"empty key column {config.key_column!r}"
        elif row_key is not None and len(rows_of_key[row_key]) > 1:
            problem = f"duplicate key {row_key!r} (rows {_rows_text(rows_of_key[row_key])})"
            table.duplicates.add(origins[number])
        row = {name: (cells[i] if i < len(cells) else "") for i, name in enumerate(names)}
        record = Record(
            source=source,
            row=row,
            origin=origins[number],
            key=row_key,
            # `pending` goes to the engine as empty: the ledger answers how the send stands now.
            status=status if is_resend(status) else "",
            problem=problem,
            where=f"{grid.title} row {number}",
        )
        table.due.append(SheetRow(number, origins[number], cell, record))
    return table

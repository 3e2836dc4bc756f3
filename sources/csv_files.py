"""The file-format half of the CSV drop folder: encoding, delimiter, rows read in chunks, results files.

Plain blocking file work with no asyncio: `csv_folder` calls it through `asyncio.to_thread`. Nothing
here holds a whole file in memory; every pass streams.

Line numbers are physical lines, as an editor shows them: a row's number is the line it starts on
(the header is line 1, or line 2 below Excel's `sep=` line). The results file keeps every row on the
same line as in the original (the cell texts are unchanged, so embedded line breaks are too, and a
`sep=` line is copied through as it was), which is how a status update that names
`<file id>:<line>` finds its row again. How bytes become text lives in `csv_text`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from connector.events import Record
from sources.csv_names import file_identity, free_names, is_candidate, reason_name, results_name
from sources.csv_text import BadFile, detect_encoding, excel_sep_line
from sources.tabular import DuplicateColumn, column_names, tabular_record

__all__ = [  # BadFile is raised in csv_text; csv_folder takes the whole file format from here
    "BadFile",
    "Layout",
    "ResultsFormat",
    "ResultsWriter",
    "Row",
    "RowReader",
    "file_identity",
    "free_names",
    "inspect",
    "is_candidate",
    "place_status",
    "reason_name",
    "results_name",
    "rewrite_statuses",
    "sniff_delimiter",
]

DELIMITERS = ",;\t"
SAMPLE_CHARS = 64 * 1024  # read to find the header row and the line ending
SNIFF_LINES, SNIFF_CHARS = 20, 4096
# -- layout ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultsFormat:
    """How a results file is written; kept in the source's notes so write_back can rewrite it."""

    results: str  # file name in processed/
    delimiter: str
    newline: str
    status_index: int
    sep_line: bool = False  # the first line is Excel's `sep=` line (notes written before it lack this)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ResultsFormat:
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class Row:
    """One row as read: the cells exactly as written, and its record (None for the header and blank rows)."""

    line_no: int
    cells: list[str]
    record: Record | None = None
    header: bool = False


@dataclass(frozen=True, slots=True)
class Layout:
    """What one pass over a file learnt: how to read it and where its status cells go."""

    encoding: str
    delimiter: str
    newline: str
    names: tuple[str, ...]  # column names: header cells stripped, blank ones named `column N`
    status_name: str
    status_index: int  # the status column's position in the results
    status_existing: bool  # the file already had the status column
    key_name: str | None
    data_rows: int  # non-blank rows after the header, for progress logs
    sep_line: str = ""  # Excel's `sep=` line with its line break, as written; "" when there is none

    @property
    def excel_bom(self) -> bool:
        """Results get a BOM when the input had one or was Windows-1252 or UTF-16, so Excel reads UTF-8."""
        return self.encoding != "utf-8"

    def record(self, source: str, origin: str, cells: Sequence[str], where: str = "") -> Record:
        width, fields = len(self.names), len(cells)
        row = dict(zip(self.names, cells, strict=False))
        for name in self.names[fields:]:
            row[name] = ""
        problem = None if fields == width else f"row has {fields} fields, header has {width}"
        status = self.status_name if self.status_existing else None
        return tabular_record(
            source, row, origin, key_column=self.key_name, status_column=status, where=where, problem=problem
        )

    def result_cells(self, row: Row, status: str | None) -> list[str]:
        """The row as the results file writes it; `status` None keeps the status cell as it stands."""
        if not row.cells:
            return []  # a blank line stays blank
        if row.header:
            status = None if self.status_existing else self.status_name
        return place_status(row.cells, self.status_index, status, replace=self.status_existing)

    def results_format(self, results: str) -> ResultsFormat:
        return ResultsFormat(results, self.delimiter, self.newline, self.status_index, bool(self.sep_line))


def place_status(cells: Sequence[str], index: int, status: str | None, *, replace: bool) -> list[str]:
    out = list(cells)
    if len(out) < index:  # a short row is padded so that its status sits under the status header
        out.extend([""] * (index - len(out)))
    if len(out) == index:
        out.append(status or "")
    elif replace:
        if status is not None:
            out[index] = status
    else:  # a long ragged row keeps its extra cells, after the status
        out.insert(index, status or "")
    return out


def inspect(path: Path, *, key_column: str | None, status_column: str) -> Layout:
    """Read the whole file once, streaming, and decide how to read it; BadFile says why it cannot be."""
    encoding = detect_encoding(path)
    with path.open(encoding=encoding, newline="") as f:
        sample = f.read(SAMPLE_CHARS)
        more = bool(f.read(1))
    if more:  # sniff whole lines only
        sample = sample[: max(sample.rfind("\n"), sample.rfind("\r")) + 1] or sample
    sep_line, delimiter = excel_sep_line(sample) or ("", "")
    if sep_line:  # it names the delimiter, and the header is on the next line
        sample = sample[len(sep_line) :] + sep_line  # for the rows' line break, else the sep line's
    else:
        delimiter = sniff_delimiter(sample)
    header: list[str] | None = None
    data_rows = 0
    with path.open(encoding=encoding, newline="") as f:
        _, first_line = _read_sep_line(f, bool(sep_line))
        for _, cells in _rows(f, delimiter, first_line):
            if _blank(cells):
                continue
            if header is None:
                header = cells
            else:
                data_rows += 1
    if header is None:
        raise BadFile("empty file")
    try:
        names = column_names(header)
    except DuplicateColumn as e:
        raise BadFile(str(e)) from None
    seen = set(names)
    if key_column is not None and key_column not in seen:
        raise BadFile(f"key column {key_column!r} not in header: {', '.join(names)}")
    existing = status_column in seen
    return Layout(
        encoding=encoding,
        delimiter=delimiter,
        newline=_newline(sample),
        names=names,
        status_name=status_column,
        status_index=names.index(status_column) if existing else len(names),
        status_existing=existing,
        key_name=key_column,
        data_rows=data_rows,
        sep_line=sep_line,
    )


def sniff_delimiter(sample: str) -> str:
    """`,` `;` or tab. The sniffer judges consistency across lines; the header line has the last word."""
    widths = {d: len(_first_row(sample, d)) for d in DELIMITERS}
    best = max(widths.values())
    if best <= 1:
        return ","  # one column: any delimiter reads it, the results join with a comma
    try:
        sniffed = csv.Sniffer().sniff(_sniff_lines(sample), delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = ""
    if widths.get(sniffed) == best:
        return sniffed
    return next(d for d in DELIMITERS if widths[d] == best)  # counting fallback, in preference order


def _sniff_lines(sample: str) -> str:
    """The first lines, at most SNIFF_CHARS: the sniffer's time grows with the square of its input."""
    lines = sample.splitlines(keepends=True)[:SNIFF_LINES]
    while len(lines) > 1 and sum(map(len, lines)) > SNIFF_CHARS:
        lines.pop()
    return "".join(lines)[:SNIFF_CHARS]


def _first_row(sample: str, delimiter: str) -> list[str]:
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    try:
        for cells in reader:
            if not _blank(cells):
                return cells
    except csv.Error:  # a sample cut inside a quoted field
        return []
    return []


def _newline(sample: str) -> str:
    at = next((i for i, ch in enumerate(sample) if ch in "\r\n"), -1)
    if at < 0:
        return "\r\n"
    if sample[at] == "\r":
        return "\r\n" if sample[at + 1 : at + 2] == "\n" else "\r"
    return "\n"


def _blank(cells: Sequence[str]) -> bool:
    return all(not cell.strip() for cell in cells)


def _read_sep_line(f: IO[str], present: bool) -> tuple[str, int]:
    """The `sep=` line, read as text and never parsed (its quotes need not balance), and the next line."""
    return (f.readline(), 2) if present else ("", 1)


def _rows(f: IO[str], delimiter: str, first_line: int = 1) -> Iterator[tuple[int, list[str]]]:
    """(line the row starts on, cells). Strict quoting: a quote never closed is an error, not a lost file."""
    reader = csv.reader(f, delimiter=delimiter, strict=True)
    start = first_line
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise BadFile(f"line {start}: malformed CSV ({e})") from e
        yield start, cells
        start = first_line + reader.line_num


# -- reading rows ---------------------------------------------------------------------------------------


class RowReader:
    """Rows of one file in chunks, for one consumer that may call from different threads in turn."""

    def __init__(self, path: Path, layout: Layout, *, source: str, file_id: str, chunk_rows: int) -> None:
        self._file = path.open(encoding=layout.encoding, newline="")
        self._name = path.name
        _, first_line = _read_sep_line(self._file, bool(layout.sep_line))
        self._rows = _rows(self._file, layout.delimiter, first_line)
        self._layout = layout
        self._source = source
        self._file_id = file_id
        self._chunk_rows = chunk_rows
        self._seen_header = False
        self._lock = threading.Lock()

    def next_chunk(self) -> list[Row]:
        """Up to `chunk_rows` rows; an empty list at the end of the file."""
        with self._lock:
            if self._file.closed:
                return []
            chunk: list[Row] = []
            for line_no, cells in self._rows:
                chunk.append(self._row(line_no, cells))
                if len(chunk) >= self._chunk_rows:
                    break
            return chunk

    def _row(self, line_no: int, cells: list[str]) -> Row:
        if _blank(cells):
            return Row(line_no, cells)
        if not self._seen_header:
            self._seen_header = True
            return Row(line_no, cells, header=True)
        origin = f"{self._file_id}:{line_no}"
        where = f"{self._name} line {line_no}"
        return Row(line_no, cells, self._layout.record(self._source, origin, cells, where))

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- writing results ------------------------------------------------------------------------------------


class ResultsWriter:
    """Writes `<name>.part` as rows complete; `commit` makes it the results file in one rename."""

    def __init__(self, part: Path, layout: Layout) -> None:
        self.part = part
        self._layout = layout
        encoding = "utf-8-sig" if layout.excel_bom else "utf-8"
        self._file = part.open("w", encoding=encoding, newline="")
        self._file.write(layout.sep_line)  # keeps every row on its line, and Excel still reads the delimiter
        self._writer = csv.writer(self._file, delimiter=layout.delimiter, lineterminator=layout.newline)

    def write_chunk(self, rows: Sequence[Row], statuses: Sequence[str | None]) -> int:
        """Write rows in order; `statuses` holds one entry per row that has a record. Returns records."""
        answers = iter(statuses)
        done = 0
        for row in rows:
            status = None
            if row.record is not None:
                status = next(answers)
                done += 1
            self._writer.writerow(self._layout.result_cells(row, status))
        return done

    def commit(self, final: Path) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.part.replace(final)

    def discard(self) -> None:
        self._file.close()
        self.part.unlink(missing_ok=True)


def rewrite_statuses(path: Path, fmt: ResultsFormat, updates: Mapping[int, str]) -> int:
    """Replace the status cells of the rows starting on the given lines; a copy then one rename."""
    with path.open("rb") as probe:
        bom = probe.read(3) == codecs.BOM_UTF8
    part = path.with_name(path.name + ".part")
    changed = 0
    with (
        path.open(encoding="utf-8-sig", newline="") as src,
        part.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as dst,
    ):
        writer = csv.writer(dst, delimiter=fmt.delimiter, lineterminator=fmt.newline)
        sep_line, first_line = _read_sep_line(src, fmt.sep_line)
        dst.write(sep_line)  # untouched, as it is in the original
        for line_no, cells in _rows(src, fmt.delimiter, first_line):
            status = updates.get(line_no)
            if status is not None and cells:
                changed += 1
                writer.writerow(place_status(cells, fmt.status_index, status, replace=True))
            else:
                writer.writerow(cells)
        dst.flush()
        os.fsync(dst.fileno())
    part.replace(path)
    return changed

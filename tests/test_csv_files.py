"""The CSV file format: encodings, delimiters, rows, problems, results files (sources/csv_files.py,
sources/csv_text.py)."""

from __future__ import annotations

import codecs
import csv
import io
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sources.csv_files import (
    BadFile,
    Layout,
    ResultsFormat,
    ResultsWriter,
    Row,
    RowReader,
    file_identity,
    free_names,
    inspect,
    is_candidate,
    reason_name,
    results_name,
    rewrite_statuses,
)
from sources.csv_text import CHUNK_BYTES, detect_encoding

# As SAP and Excel's "Unicode Text" write it: UTF-16 with a BOM, tab-separated, CRLF.
SAP = (
    "Name\tPhone\tCity\r\n"
    "Ștefan Ţăran\t0740\tCluj\r\n"
    "Łukasz Wójcik\t0741\tKraków\r\n"
    "山田 太郎\t0742\t東京\r\n"
)
SAP_ROWS = [
    {"Name": "Ștefan Ţăran", "Phone": "0740", "City": "Cluj"},
    {"Name": "Łukasz Wójcik", "Phone": "0741", "City": "Kraków"},
    {"Name": "山田 太郎", "Phone": "0742", "City": "東京"},
]
UTF16 = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}


def utf16(text: str, codec: str = "utf-16-le") -> bytes:
    return UTF16[codec] + text.encode(codec)


def drop(tmp_path: Path, data: bytes | str, name: str = "x.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def layout_of(path: Path, key_column: str | None = None, status_column: str = "SMS Status") -> Layout:
    return inspect(path, key_column=key_column, status_column=status_column)


def rows_of(path: Path, layout: Layout | None = None, chunk_rows: int = 3) -> list[Row]:
    layout = layout or layout_of(path)
    rows: list[Row] = []
    with RowReader(path, layout, source="erp", file_id="f1", chunk_rows=chunk_rows) as reader:
        while chunk := reader.next_chunk():
            assert len(chunk) <= chunk_rows
            rows.extend(chunk)
    return rows


def data_rows(path: Path, layout: Layout | None = None) -> list[dict[str, str]]:
    return [dict(row.record.row) for row in rows_of(path, layout) if row.record is not None]


def write_results(path: Path, layout: Layout, status: str | None = "sent") -> Path:
    """Results with one status for every record, through the real writer."""
    out = path.with_name("out.csv")
    writer = ResultsWriter(path.with_name("out.csv.part"), layout)
    rows = rows_of(path, layout)
    writer.write_chunk(rows, [status for row in rows if row.record is not None])
    writer.commit(out)
    assert not path.with_name("out.csv.part").exists()
    return out


# -- encodings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "encoding", "name"),
    [
        ("Name,Phone\nȘtefan Ţăran €,0740\n".encode(), "utf-8", "Ștefan Ţăran €"),
        (codecs.BOM_UTF8 + "Name,Phone\nȘtefan €,0740\n".encode(), "utf-8-sig", "Ștefan €"),
        ("Name,Phone\nRené 5 €,0740\n".encode("cp1252"), "cp1252", "René 5 €"),
        (b"Name,Phone\nPlain,0740\n", "utf-8", "Plain"),
    ],
    ids=["utf-8", "utf-8-bom", "cp1252", "ascii"],
)
def test_each_encoding_reads_the_right_text(tmp_path: Path, data: bytes, encoding: str, name: str) -> None:
    path = drop(tmp_path, data)
    assert detect_encoding(path) == encoding
    assert data_rows(path) == [{"Name": name, "Phone": "0740"}]


def test_the_whole_file_is_checked_not_only_its_start(tmp_path: Path) -> None:
    # An Excel export whose only non-ASCII byte sits beyond the first megabyte is still cp1252.
    filler = b"Name,Phone\n" + b"Ana,0740\n" * (CHUNK_BYTES // 9 + 10)
    path = drop(tmp_path, filler + "Cafée,0741\n".encode("cp1252"))
    assert detect_encoding(path) == "cp1252"
    assert data_rows(path)[-1] == {"Name": "Cafée", "Phone": "0741"}


def test_a_character_split_across_read_chunks_is_still_utf8(tmp_path: Path) -> None:
    head = b"Name,Phone\n"
    pad = b"a" * (CHUNK_BYTES - len(head) - 1)  # the 2-byte "ș" straddles the 1 MiB boundary
    path = drop(tmp_path, head + pad + "ș,1\n".encode())
    assert detect_encoding(path) == "utf-8"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_a_bom_is_read_in_either_byte_order(tmp_path: Path, codec: str) -> None:
    path = drop(tmp_path, utf16(SAP, codec))
    assert detect_encoding(path) == "utf-16"
    layout = layout_of(path)
    assert (layout.delimiter, layout.newline, layout.names) == ("\t", "\r\n", ("Name", "Phone", "City"))
    rows = rows_of(path, layout)
    assert [(r.line_no, r.record.problem) for r in rows if r.record] == [(2, None), (3, None), (4, None)]
    assert data_rows(path, layout) == SAP_ROWS


def test_utf16_is_checked_to_the_end_and_a_pair_may_straddle_chunks(tmp_path: Path) -> None:
    head = utf16("Name\tPhone\n")
    lines, odd = divmod((CHUNK_BYTES - 2 - len(head)) // 2, 6)
    pad = ("Ana\t1\n" * lines + "x" * odd).encode("utf-16-le")
    good = head + pad + "𝐀\t1\n".encode("utf-16-le")  # its surrogate pair straddles the first 1 MiB read
    assert len(head + pad) == CHUNK_BYTES - 2
    path = drop(tmp_path, good)
    assert detect_encoding(path) == "utf-16"
    assert data_rows(path)[-1]["Name"] == "x" * odd + "𝐀"
    broken = drop(tmp_path, good + b"\x00\xdc" + "\t2\n".encode("utf-16-le"), "broken.csv")
    with pytest.raises(BadFile, match=rf"illegal encoding: bytes 0x00dc at offset {len(good)}\)"):
        detect_encoding(broken)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"  \r\n\t\n   \n", "empty file"),
        (b",,,\r\n,,\r\n", "empty file"),
        (b"Name,Phone\x00\x01\x02\n", "binary file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        (
            utf16("Name\tPhone\r\nA") + b"\x00\xd8" + "b\t1\r\n".encode("utf-16-le"),
            "not valid UTF-16 text (illegal UTF-16 surrogate: bytes 0x00d8 at offset 28): "
            "the file is damaged or cut short",
        ),
        (
            utf16("Name\tPhone\r\nAna\t1\r\n") + b"\x0a",
            "not valid UTF-16 text (truncated data: bytes 0x0a at offset 40): "
            "the file is damaged or cut short",
        ),
        (utf16("Name\tPhone\nA", "utf-16-be") + b"\xdc\x00", "not valid UTF-16 text (illegal encoding"),
        (
            "Name\tPhone\r\nAna\t0740\r\n".encode("utf-16-le"),
            "binary file: looks like UTF-16 text without a byte order mark; "
            'save it as "CSV UTF-8" or as "Unicode Text"',
        ),
        ("Name;Phone\nȘtefan;0740\n".encode("utf-16-be"), "binary file: looks like UTF-16 text without a"),
        (utf16("Name\0Phone\n"), "binary file"),
        (codecs.BOM_UTF16_LE, "empty file"),
        ("Name,Phone\n".encode("utf-32"), 'UTF-32 text is not supported: save it as "CSV UTF-8"'),
        (b"Name,Phone\nA\x81b,1\n", "not UTF-8 or Windows-1252 text (byte 0x81 at offset 12)"),
        (codecs.BOM_UTF8 + b"Name,Phone\nCaf\xe9,1\n", "not UTF-8 or Windows-1252 text"),
        (b'Name,Phone\nAna,1\n"Ion,2\nDan,3\n', "line 3: malformed CSV"),
        (b'sep=;\nName;Phone\nAna;1\n"Ion;2\n', "line 4: malformed CSV"),
        (b"Name,Phone,Name\nAna,1,2\n", "duplicate column 'Name' in header"),
        (b" Phone ,Phone\n1,2\n", "duplicate column 'Phone' in header"),
    ],
    ids=[
        "empty",
        "whitespace-only",
        "only-delimiters",
        "nul-bytes",
        "png",
        "utf-16-broken-surrogate",
        "utf-16-odd-trailing-byte",
        "utf-16be-lone-low-surrogate",
        "utf-16-without-bom",
        "utf-16be-without-bom",
        "utf-16-nul-character",
        "utf-16-bom-only",
        "utf-32",
        "undefined-in-cp1252",
        "bom-but-not-utf8",
        "unterminated-quote",
        "unterminated-quote-below-sep-line",
        "duplicate-header",
        "duplicate-after-strip",
    ],
)
def test_files_that_cannot_be_read_say_why(tmp_path: Path, data: bytes, reason: str) -> None:
    path = drop(tmp_path, data)
    with pytest.raises(BadFile) as caught:
        layout_of(path)
    assert str(caught.value).startswith(reason)


def test_missing_key_column_names_the_header(tmp_path: Path) -> None:
    path = drop(tmp_path, "Name,Phone\nAna,1\n")
    with pytest.raises(BadFile, match=r"^key column 'Order ID' not in header: Name, Phone$"):
        layout_of(path, key_column="Order ID")


# -- delimiters, quoting, line numbers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        ('Name,Phone,Note\nAna,0740,"Hi; there"\nIon,0741,ok\n', ","),
        ("Name;Phone;Note\nAna;0740;Hi, there, again\nIon;0741;a,b\n", ";"),
        ("Name\tPhone\tNote\nAna\t0740\tHi, there; you\nIon\t0741\t,\n", "\t"),
        ('"Name";"Phone";"Note"\n"Ana";"0740";"x,y,z,w"\n', ";"),
    ],
    ids=["comma", "semicolon", "tab", "semicolon-quoted"],
)
def test_each_delimiter_is_sniffed(tmp_path: Path, text: str, delimiter: str) -> None:
    path = drop(tmp_path, text)
    layout = layout_of(path)
    assert layout.delimiter == delimiter
    assert layout.names == ("Name", "Phone", "Note")
    rows = data_rows(path, layout)
    assert rows[0]["Phone"] == "0740"
    assert all(row.record is None or row.record.problem is None for row in rows_of(path, layout))


@pytest.mark.parametrize(
    ("data", "delimiter"),
    [
        (b"sep=;\r\nName;Phone;Note\r\nAna;0740;Hi, there, you\r\nIon;0741;a,b\r\n", ";"),
        (codecs.BOM_UTF8 + b"sep=,\nName,Phone,Note\nAna,0740,a;b;c\nIon,0741,d;e\n", ","),
        (b'"sep=;"\nName;Phone;Note\nAna;0740;x,y\nIon;0741;z\n', ";"),
        (b"sep=\t\nName\tPhone\tNote\nAna\t0740\ta;b\nIon\t0741\tc,d\n", "\t"),
        (b"SEP=|\nName|Phone|Note\nAna|0740|a;b\nIon|0741|c,d\n", "|"),
        (b"sep=;;;\nName;Phone;Note\nAna;0740;x,y\nIon;0741;z\n", ";"),
        (b'"sep=;\nName;Phone;Note\nAna;0740;x,y\nIon;0741;z\n', ";"),
        ("sep=,\nName,Phone,Note\nAna,0740,René;x\nIon,0741,€\n".encode("cp1252"), ","),
        (utf16("sep=\t\r\nName\tPhone\tNote\r\nAna\t0740\tȘ;t\r\nIon\t0741\t山田\r\n"), "\t"),
    ],
    ids=[
        "semicolon",
        "comma-after-utf8-bom",
        "quoted",
        "tab",
        "pipe-upper-case",
        "trailing-empty-cells",
        "unclosed-quote",
        "cp1252",
        "utf-16",
    ],
)
def test_excels_sep_line_names_the_delimiter_and_is_not_the_header(
    tmp_path: Path, data: bytes, delimiter: str
) -> None:
    # Each data row also splits on another delimiter, so sniffing alone would not read it right.
    path = drop(tmp_path, data)
    layout = layout_of(path)
    assert (layout.delimiter, layout.names, layout.data_rows) == (delimiter, ("Name", "Phone", "Note"), 2)
    assert layout.sep_line.lower().lstrip('"').startswith("sep=")
    rows = rows_of(path, layout)
    assert [(r.line_no, r.header) for r in rows] == [(2, True), (3, False), (4, False)]  # physical lines
    assert [(r.record.row["Phone"], r.record.problem, r.record.origin) for r in rows if r.record] == [
        ("0740", None, "f1:3"),
        ("0741", None, "f1:4"),
    ]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("sep=;Phone\n1;2\n", ("sep=", "Phone")),  # more than the sep line on line 1: a header
        ("sep=a\n1\n", ("sep=a",)),  # a letter is no delimiter
        ("Name;Phone\nsep=,\n", ("Name", "Phone")),  # only the first line can be one
    ],
)
def test_a_line_that_only_looks_like_a_sep_line_is_data(
    tmp_path: Path, text: str, names: tuple[str, ...]
) -> None:
    layout = layout_of(drop(tmp_path, text))
    assert (layout.names, layout.sep_line) == (names, "")


def test_ragged_rows_below_a_sep_line_are_problems_on_their_physical_lines(tmp_path: Path) -> None:
    path = drop(tmp_path, 'sep=;\nName;Phone;City\nAna;1;Cluj;extra\n\nIon;2\nEd;"3\n4";Iasi\nDan;5;Arad\n')
    records = [row.record for row in rows_of(path) if row.record is not None]
    assert [(r.where, r.problem) for r in records] == [
        ("x.csv line 3", "row has 4 fields, header has 3"),
        ("x.csv line 5", "row has 2 fields, header has 3"),
        ("x.csv line 6", None),
        ("x.csv line 8", None),  # the quoted line break above counts as a line
    ]


def test_quoted_newlines_and_delimiters_stay_in_their_cell(tmp_path: Path) -> None:
    text = 'Name,Phone,Note\r\nAna,0740,"line one\r\nline, two\r\nthree"\r\nIon,0741,"say ""hi"""\r\n'
    path = drop(tmp_path, text)
    rows = [row for row in rows_of(path) if row.record is not None]
    assert rows[0].record is not None and rows[1].record is not None
    assert rows[0].record.row["Note"] == "line one\r\nline, two\r\nthree"
    assert rows[1].record.row["Note"] == 'say "hi"'
    # Line numbers are where a row starts, as an editor shows it.
    assert [(r.line_no, r.record.origin, r.record.where) for r in rows if r.record] == [
        (2, "f1:2", "x.csv line 2"),
        (5, "f1:5", "x.csv line 5"),
    ]


def test_blank_lines_are_no_records_and_blank_header_cells_get_names(tmp_path: Path) -> None:
    path = drop(tmp_path, "Name,,Phone\n\nAna,x,1\n  \n,,\nIon,y,2\n")
    layout = layout_of(path)
    assert layout.names == ("Name", "column 2", "Phone")
    assert layout.data_rows == 2
    rows = rows_of(path, layout)
    assert [r.line_no for r in rows if r.record is not None] == [3, 6]
    assert data_rows(path, layout)[0] == {"Name": "Ana", "column 2": "x", "Phone": "1"}


def test_ragged_rows_are_records_with_a_problem(tmp_path: Path) -> None:
    path = drop(tmp_path, "Name,Phone,City,Note\nAna,1,Cluj,hi,extra\nIon,2\nDan,3,Iasi,ok\n")
    records = [row.record for row in rows_of(path) if row.record is not None]
    assert [r.problem for r in records] == [
        "row has 5 fields, header has 4",
        "row has 2 fields, header has 4",
        None,
    ]
    assert records[1].row == {"Name": "Ion", "Phone": "2", "City": "", "Note": ""}


def test_key_and_status_cells(tmp_path: Path) -> None:
    text = "Order ID,Phone,SMS Status\n A-1 ,1,\n,2,\nA-3,3, sent 2026-11-01T10:00:00Z 77 \nA-4,4,resend\n"
    path = drop(tmp_path, text)
    layout = layout_of(path, key_column="Order ID")
    records = [row.record for row in rows_of(path, layout) if row.record is not None]
    assert [(r.key, r.status, r.problem) for r in records] == [
        ("A-1", "", None),
        (None, "", "empty key column 'Order ID'"),
        ("A-3", "sent 2026-11-01T10:00:00Z 77", None),
        ("A-4", "resend", None),
    ]
    assert layout.status_existing and layout.status_index == 2


# -- results ----------------------------------------------------------------------------------------------


def test_results_keep_every_cell_and_append_the_status(tmp_path: Path) -> None:
    text = 'Name;Phone;Note\r\nAna;0740;"a;b\r\nc"\r\n\r\nIon;1\r\nDan;2;x;surplus\r\n"Ed ""E""";3;\r\n'
    path = drop(tmp_path, text)
    out = write_results(path, layout_of(path), status="sent 1")
    raw = out.read_bytes()
    assert not raw.startswith(codecs.BOM_UTF8)  # plain UTF-8 in, plain UTF-8 out
    assert b"\r\n\r\n" in raw  # the blank line is still there
    cells = list(csv.reader(io.StringIO(raw.decode(), newline=""), delimiter=";"))
    assert cells == [
        ["Name", "Phone", "Note", "SMS Status"],
        ["Ana", "0740", "a;b\r\nc", "sent 1"],
        [],
        ["Ion", "1", "", "sent 1"],  # short row: padded so its status sits under the header
        ["Dan", "2", "x", "sent 1", "surplus"],  # long row: its extra cell is kept, after the status
        ['Ed "E"', "3", "", "sent 1"],
    ]


def test_results_replace_an_existing_status_column(tmp_path: Path) -> None:
    path = drop(tmp_path, "SMS Status,Phone\nsent earlier,1\n,2\n")
    layout = layout_of(path)
    writer = ResultsWriter(tmp_path / "out.part", layout)
    rows = rows_of(path, layout)
    writer.write_chunk(rows, [None, "sent now"])  # None: no rule wanted it, the cell stays as it was
    writer.commit(tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == "SMS Status,Phone\nsent earlier,1\nsent now,2\n"


@pytest.mark.parametrize(
    ("data", "bom"),
    [
        ("Name,Phone\nRené €,1\n".encode("cp1252"), True),
        (codecs.BOM_UTF8 + "Name,Phone\nRené €,1\n".encode(), True),
        ("Name,Phone\nRené €,1\n".encode(), False),
        (utf16("Name,Phone\nRené €,1\n"), True),
        (utf16("Name,Phone\nRené €,1\n", "utf-16-be"), True),
    ],
    ids=["cp1252", "utf-8-bom", "utf-8", "utf-16-le", "utf-16-be"],
)
def test_results_are_utf8_with_a_bom_when_excel_needs_one(tmp_path: Path, data: bytes, bom: bool) -> None:
    path = drop(tmp_path, data)
    out = write_results(path, layout_of(path))
    raw = out.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8) is bom
    assert raw.decode("utf-8-sig") == "Name,Phone,SMS Status\nRené €,1,sent\n"


def test_header_only_file_gives_header_plus_status(tmp_path: Path) -> None:
    path = drop(tmp_path, "Name\tPhone\r\n")
    layout = layout_of(path)
    assert layout.data_rows == 0
    assert write_results(path, layout).read_bytes() == b"Name\tPhone\tSMS Status\r\n"


def test_rewrite_changes_only_the_named_rows(tmp_path: Path) -> None:
    path = drop(tmp_path, 'Name;Note\nAna;"two\nlines"\nIon;x\nDan;y\n')
    layout = layout_of(path)
    out = write_results(path, layout, status="pending")
    fmt = layout.results_format(out.name)
    assert rewrite_statuses(out, fmt, {4: "sent 2026-11-22T04:20:00Z 9", 99: "nothing there"}) == 1
    assert out.read_text().splitlines() == [
        "Name;Note;SMS Status",
        'Ana;"two',
        'lines";pending',
        "Ion;x;sent 2026-11-22T04:20:00Z 9",
        "Dan;y;pending",
    ]
    assert not out.with_name(out.name + ".part").exists()


def test_rewrite_keeps_the_bom(tmp_path: Path) -> None:
    path = drop(tmp_path, "Name,Phone\nRené,1\n".encode("cp1252"))
    layout = layout_of(path)
    out = write_results(path, layout, status="pending")
    rewrite_statuses(out, layout.results_format(out.name), {2: "sent"})
    assert out.read_bytes() == codecs.BOM_UTF8 + "Name,Phone,SMS Status\nRené,1,sent\n".encode()


@pytest.mark.parametrize(
    "sep_line",
    [b"sep=;\r\n", b'"SEP=;";;\r\n', codecs.BOM_UTF8 + b"sep=;\r\n"],
    ids=["plain", "quoted", "bom"],
)
def test_a_sep_line_goes_through_to_the_results_and_their_rewrites(tmp_path: Path, sep_line: bytes) -> None:
    path = drop(tmp_path, sep_line + b'Name;Note\r\nAna;"two\r\nlines"\r\nIon;x\r\nDan;y\r\n')
    layout = layout_of(path)
    out = write_results(path, layout, status="pending")
    expected = (
        sep_line + b'Name;Note;SMS Status\r\nAna;"two\r\nlines";pending\r\nIon;x;pending\r\nDan;y;pending\r\n'
    )
    assert out.read_bytes() == expected  # every row on its original line, under the same sep line
    fmt = ResultsFormat.from_json(layout.results_format(out.name).to_json())  # as the ledger's notes keep it
    assert fmt.sep_line
    # Line 1 is the sep line: not a row, so an update naming it changes nothing.
    assert rewrite_statuses(out, fmt, {1: "x", 5: "sent 2026-11-22T04:20:00Z 9"}) == 1
    assert out.read_bytes() == expected.replace(b"Ion;x;pending", b"Ion;x;sent 2026-11-22T04:20:00Z 9")


def test_rows_keep_their_line_break_when_the_sep_line_has_another(tmp_path: Path) -> None:
    # A script that put `sep=;` with a Unix line break on top of an Excel (CRLF) export.
    path = drop(tmp_path, b"sep=;\nName;Phone\r\nAna;1\r\n")
    layout = layout_of(path)
    assert layout.newline == "\r\n"
    out = write_results(path, layout, status="pending")
    rewrite_statuses(out, layout.results_format(out.name), {3: "sent"})
    assert out.read_bytes() == b"sep=;\nName;Phone;SMS Status\r\nAna;1;sent\r\n"


def test_utf16_results_are_utf8_with_a_bom_and_rewrite_one_row(tmp_path: Path) -> None:
    path = drop(tmp_path, utf16(SAP, "utf-16-be"))
    layout = layout_of(path)
    out = write_results(path, layout, status="pending")
    lines = [
        "Name\tPhone\tCity\tSMS Status",
        "Ștefan Ţăran\t0740\tCluj\tpending",
        "Łukasz Wójcik\t0741\tKraków\tpending",
        "山田 太郎\t0742\t東京\tpending",
    ]
    assert out.read_bytes() == codecs.BOM_UTF8 + "".join(f"{line}\r\n" for line in lines).encode()
    assert rewrite_statuses(out, layout.results_format(out.name), {3: "failed: invalid number"}) == 1
    lines[2] = "Łukasz Wójcik\t0741\tKraków\tfailed: invalid number"
    assert out.read_bytes() == codecs.BOM_UTF8 + "".join(f"{line}\r\n" for line in lines).encode()


def test_a_results_format_noted_by_an_older_version_still_loads(tmp_path: Path) -> None:
    note = '{"results": "x.results.csv", "delimiter": ";", "newline": "\\r\\n", "status_index": 2}'
    fmt = ResultsFormat.from_json(note)
    assert fmt == ResultsFormat("x.results.csv", ";", "\r\n", 2, sep_line=False)
    out = drop(tmp_path, "Name;Phone;SMS Status\r\nAna;1;pending\r\n")
    assert rewrite_statuses(out, fmt, {2: "sent"}) == 1
    assert out.read_bytes() == b"Name;Phone;SMS Status\r\nAna;1;sent\r\n"


# -- names and identity -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("orders.csv", True),
        ("ORDERS.CSV", True),
        ("orders.results.csv", True),
        ("orders.txt", False),
        (".orders.csv", False),
        (".~lock.orders.csv#", False),
        ("~$orders.csv", False),
        ("orders.csv.part", False),
        ("orders.csv.tmp", False),
        ("orders.tmp", False),
    ],
)
def test_which_names_are_taken(name: str, taken: bool) -> None:
    assert is_candidate(name, "*.csv") is taken


def test_free_names_never_overwrite(tmp_path: Path) -> None:
    now = datetime(2026, 11, 22, 4, 20, tzinfo=UTC)
    assert free_names(tmp_path, "x.csv", results_name, now) == (
        tmp_path / "x.csv",
        tmp_path / "x.results.csv",
    )
    (tmp_path / "x.results.csv").touch()  # only the companion exists: both names move on
    first = free_names(tmp_path, "x.csv", results_name, now)
    assert first == (tmp_path / "x-20261122T042000Z.csv", tmp_path / "x-20261122T042000Z.results.csv")
    first[0].touch()
    assert free_names(tmp_path, "x.csv", results_name, now)[0].name == "x-20261122T042000Z-2.csv"
    assert free_names(tmp_path, "y.csv", reason_name, now)[1].name == "y.csv.reason.txt"


def test_file_identity_survives_a_reread_but_not_a_new_copy(tmp_path: Path) -> None:
    path = drop(tmp_path, "Name\nAna\n")
    first = file_identity(path.name, path.stat())
    assert file_identity(path.name, path.stat()) == first
    copy = drop(tmp_path, "Name\nAna\n", "copy.csv")
    os.utime(copy, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    assert file_identity(path.name, copy.stat()) != first  # another inode: another drop

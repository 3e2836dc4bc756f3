"""The CSV drop folder source: watching, settling, processing, moving, write-back (sources/csv_folder.py)."""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from connector.errors import SourceError
from connector.events import Record
from sources import SOURCE_TYPES
from sources.base import SourceContext, StatusUpdate
from sources.csv_folder import CsvFolderConfig, CsvFolderSource
from tests.helpers import MemoryNotes

SENT = "sent 2026-11-22T04:20:00Z"


class FakeEngine:
    """Answers like the engine: `bad` phones fail, `ignore` wants no status, settled rows keep theirs."""

    def __init__(self) -> None:
        self.seen: list[Record] = []
        self.calls = 0
        self.entered = asyncio.Event()  # a call is waiting at `gate`
        self.gate: asyncio.Event | None = None  # when set up, call number `gate_call` waits for it
        self.gate_call = 1
        self.on_call: Callable[[int], None] | None = None

    async def process(self, records: Sequence[Record]) -> list[str | None]:
        self.calls += 1
        call = self.calls
        if self.on_call is not None:
            self.on_call(call)
        if self.gate is not None and call == self.gate_call:
            self.entered.set()
            await self.gate.wait()
        self.seen.extend(records)
        return [self.answer(r) for r in records]

    @staticmethod
    def answer(record: Record) -> str | None:
        if record.problem:
            return f"failed: {record.problem}"
        if record.status and record.status != "resend":
            return record.status
        phone = record.row.get("Phone")
        if phone == "ignore":
            return None
        if phone == "bad":
            return "failed: invalid number"
        return f"{SENT} id-{phone}"


class Folder:
    """One source over tmp_path/inbox with its fake engine and notes."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.engine = FakeEngine()
        self.notes = MemoryNotes()
        self.stopping = asyncio.Event()
        self.inbox = tmp_path / "inbox"
        self.inbox.mkdir(exist_ok=True)
        settings: dict[str, Any] = {"type": "csv_folder", "path": "inbox", "settle": "0s", **config}
        self.ctx = SourceContext(self.engine.process, self.notes, tmp_path, self.stopping)
        self.source = CsvFolderSource("erp", CsvFolderConfig.model_validate(settings), self.ctx)

    def drop(self, name: str, data: str | bytes) -> Path:
        path = self.inbox / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def results(self, name: str = "x.results.csv", delimiter: str = ",") -> list[list[str]]:
        text = (self.inbox / "processed" / name).read_bytes().decode("utf-8-sig")
        return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))

    def listing(self) -> list[str]:
        return sorted(str(p.relative_to(self.inbox)) for p in self.inbox.rglob("*"))


async def eventually(condition: Callable[[], bool], task: asyncio.Task[None] | None = None) -> None:
    """Wait for `condition`; a source task that ends meanwhile shows its error instead of a timeout."""
    async with asyncio.timeout(15):
        while not condition():
            if task is not None and task.done():
                task.result()
                raise AssertionError("the source stopped before the condition held")
            await asyncio.sleep(0.02)


def count_calls(source: CsvFolderSource, name: str) -> list[int]:
    """Count calls of one of the source's methods (a spy; the method still runs)."""
    calls = [0]
    method = getattr(source, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return method(*args, **kwargs)

    setattr(source, name, spy)
    return calls


ORDERS = "Name,Phone\nAna,0740\nIon,bad\nDan,ignore\n"


def test_the_source_is_registered() -> None:
    assert SOURCE_TYPES["csv_folder"] is CsvFolderSource


async def test_once_processes_a_file_moves_it_and_keeps_results(tmp_path: Path) -> None:
    f = Folder(tmp_path)
    original = f.drop("x.csv", ORDERS)
    before = original.read_bytes()
    await f.source.once()
    assert f.listing() == ["failed", "processed", "processed/x.csv", "processed/x.results.csv"]
    assert (f.inbox / "processed" / "x.csv").read_bytes() == before  # moved unchanged
    assert f.results() == [
        ["Name", "Phone", "SMS Status"],
        ["Ana", "0740", f"{SENT} id-0740"],
        ["Ion", "bad", "failed: invalid number"],
        ["Dan", "ignore", ""],
    ]
    file_id = f.engine.seen[0].origin.split(":")[0]
    assert [r.origin for r in f.engine.seen] == [f"{file_id}:2", f"{file_id}:3", f"{file_id}:4"]
    assert f.notes.notes[("csv:erp", file_id)].startswith('{"results": "x.results.csv"')


async def test_rows_that_already_have_a_status_are_passed_with_it(tmp_path: Path) -> None:
    f = Folder(tmp_path, key_column="Order ID")
    f.drop("x.csv", f"Order ID;Phone;SMS Status\nA1;0740;{SENT} id-old\nA2;0741;resend\nA3;0742;\n")
    await f.source.once()
    assert [(r.key, r.status) for r in f.engine.seen] == [
        ("A1", f"{SENT} id-old"),
        ("A2", "resend"),
        ("A3", ""),
    ]
    text = (f.inbox / "processed" / "x.results.csv").read_text()
    assert text == (
        f"Order ID;Phone;SMS Status\nA1;0740;{SENT} id-old\nA2;0741;{SENT} id-0741\nA3;0742;{SENT} id-0742\n"
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b" \r\n \r\n", "empty file"),
        (b"\x00\x01\x02binary", "binary file"),
        (b"Name,Phone\nA\x90,1\n", "not UTF-8 or Windows-1252 text"),
        (b"Name,Phone,Name\nA,1,2\n", "duplicate column 'Name' in header"),
        (b"Name,Phone\nA,1\n", "key column 'Order ID' not in header: Name, Phone"),
        (
            codecs.BOM_UTF16_LE + "Order ID\tPhone\r\nA1\t1\r\n".encode("utf-16-le") + b"\x00",
            "not valid UTF-16 text (truncated data",
        ),
        (
            "Order ID\tPhone\r\nA1\t1\r\n".encode("utf-16-le"),
            "binary file: looks like UTF-16 text without a byte order mark",
        ),
    ],
    ids=[
        "empty",
        "whitespace",
        "binary",
        "undecodable",
        "duplicate-header",
        "missing-key-column",
        "utf-16-cut-short",
        "utf-16-without-bom",
    ],
)
async def test_unreadable_files_go_to_failed_with_their_reason(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    f = Folder(tmp_path, key_column="Order ID")
    f.drop("x.csv", data)
    await f.source.once()
    assert f.listing() == ["failed", "failed/x.csv", "failed/x.csv.reason.txt", "processed"]
    assert (f.inbox / "failed" / "x.csv").read_bytes() == data
    assert (f.inbox / "failed" / "x.csv.reason.txt").read_text().startswith(reason)
    assert f.engine.calls == 0


async def test_a_file_without_read_permission_goes_to_failed(tmp_path: Path) -> None:
    f = Folder(tmp_path)
    path = f.drop("x.csv", ORDERS)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip(
                "running as root: file modes do not stop reads, so the file cannot be made unreadable"
            )
        await f.source.once()
    finally:
        path.chmod(0o644) if path.exists() else None
    assert (f.inbox / "failed" / "x.csv.reason.txt").read_text() == "cannot be read: Permission denied\n"
    assert f.engine.calls == 0


async def test_a_read_refused_by_the_system_goes_to_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same path as above, reachable as root too: the refusal is injected where the file is opened.
    f = Folder(tmp_path)
    f.drop("x.csv", ORDERS)
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "x.csv" and self.parent == f.inbox:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    await f.source.once()
    assert (f.inbox / "failed" / "x.csv.reason.txt").read_text() == "cannot be read: Permission denied\n"
    assert (f.inbox / "failed" / "x.csv").read_text() == ORDERS
    assert f.engine.calls == 0


async def test_a_file_that_cannot_even_be_moved_is_reported_once_and_waits_for_a_change(
    tmp_path: Path,
) -> None:
    f = Folder(tmp_path, rescan="50ms")
    scans = count_calls(f.source, "_scan")
    with capture_logs() as logs:
        task = asyncio.create_task(f.source.run())
        await eventually(lambda: scans[0] >= 1, task)
        (f.inbox / "failed").rmdir()
        (f.inbox / "failed").write_text("in the way")  # moving into failed/ now fails
        path = f.drop("x.csv", b"\x00binary")
        await eventually(lambda: any(e["log_level"] == "error" for e in logs), task)
        seen = scans[0]
        await eventually(lambda: scans[0] >= seen + 5, task)  # rescans see the same unchanged file
        errors = [e for e in logs if e["log_level"] == "error"]
        assert [e["event"] for e in errors] == [
            "csv file unreadable and cannot be moved to failed/; left until it changes"
        ]
        assert errors[0]["reason"] == "binary file"
        (f.inbox / "failed").unlink()
        (f.inbox / "failed").mkdir()
        with path.open("ab") as out:
            out.write(b"\x00")  # a change: it is tried again, and now it moves
        await eventually((f.inbox / "failed" / "x.csv").exists, task)
        f.stopping.set()
        await task
    assert not path.exists()


async def test_a_second_drop_of_the_same_name_gets_a_timestamped_name(tmp_path: Path) -> None:
    f = Folder(tmp_path)
    f.drop("x.csv", "Name,Phone\nAna,0740\n")
    await f.source.once()
    f.drop("x.csv", "Name,Phone\nIon,0741\n")
    await f.source.once()
    names = f.listing()
    stamped = [n for n in names if re.fullmatch(r"processed/x-\d{8}T\d{6}Z\.csv", n)]
    assert len(stamped) == 1
    stem = stamped[0].removesuffix(".csv")
    assert sorted(names) == sorted(
        [
            "failed",
            "processed",
            "processed/x.csv",
            "processed/x.results.csv",
            stamped[0],
            f"{stem}.results.csv",
        ]
    )
    assert f.results(f"{Path(stem).name}.results.csv")[1] == ["Ion", "0741", f"{SENT} id-0741"]
    assert f.results()[1] == ["Ana", "0740", f"{SENT} id-0740"]
    assert f.engine.seen[0].origin.split(":")[0] != f.engine.seen[1].origin.split(":")[0]


async def test_results_appear_only_when_every_row_has_a_status(tmp_path: Path) -> None:
    f = Folder(tmp_path)
    f.source.chunk_rows = 2
    f.engine.gate, f.engine.gate_call = asyncio.Event(), 2
    f.drop("x.csv", "Name,Phone\n" + "".join(f"P{i},07{i:02}\n" for i in range(10)))
    task = asyncio.create_task(f.source.once())
    await asyncio.wait_for(f.engine.entered.wait(), 15)
    processed = f.inbox / "processed"
    assert [p.name for p in processed.glob("x.results.csv*.part")] == ["x.results.csv.1.part"]  # hold epoch
    assert not (processed / "x.results.csv").exists()
    assert (f.inbox / "x.csv").exists()
    f.engine.gate.set()
    await task
    assert not list(processed.glob("*.part"))
    assert len(f.results()) == 11
    assert not (f.inbox / "x.csv").exists()


async def test_chunks_answered_out_of_order_are_written_in_order(tmp_path: Path) -> None:
    f = Folder(tmp_path)
    f.source.chunk_rows = 1
    f.drop("x.csv", "Name,Phone\n" + "".join(f"P{i},{i}\n" for i in range(12)))
    answered: list[str] = []
    plain = f.engine.process

    async def later_first(records: Sequence[Record]) -> list[str | None]:
        # Within each window of in-flight chunks, the later chunk answers first.
        await asyncio.sleep(0.05 * (3 - int(records[0].row["Phone"]) % 4))
        answered.append(records[0].row["Phone"])
        return await plain(records)

    f.ctx.process = later_first
    await f.source.once()
    assert answered != sorted(answered, key=int)  # the answers did come back out of order
    assert [row[0] for row in f.results()[1:]] == [f"P{i}" for i in range(12)]
    assert all(row[2] == f"{SENT} id-{row[1]}" for row in f.results()[1:])


async def test_a_status_change_while_the_file_is_in_hand_reaches_the_results(tmp_path: Path) -> None:
    f = Folder(tmp_path)
    f.source.chunk_rows = 1
    f.engine.gate, f.engine.gate_call = asyncio.Event(), 2
    f.drop("x.csv", "Name,Phone\nAna,0740\nIon,0741\n")
    task = asyncio.create_task(f.source.once())
    await asyncio.wait_for(f.engine.entered.wait(), 15)
    first = f.engine.seen[0].origin
    await f.source.write_back([StatusUpdate(first, "sent later 42")])
    f.engine.gate.set()
    await task
    assert f.results()[1:] == [["Ana", "0740", "sent later 42"], ["Ion", "0741", f"{SENT} id-0741"]]


async def test_a_status_from_another_instance_for_a_file_still_in_hand_reaches_the_results(
    tmp_path: Path,
) -> None:
    # Two instances on one ledger (one notes store) and one shared folder: the first is taking
    # x.csv; the second sends one of its held messages and writes the status back meanwhile.
    f = Folder(tmp_path)
    other = CsvFolderSource("erp", f.source.config, f.ctx)
    f.source.chunk_rows = 1
    f.engine.gate, f.engine.gate_call = asyncio.Event(), 2
    f.drop("x.csv", "Name,Phone\nAna,0740\nIon,0741\n")
    task = asyncio.create_task(f.source.once())
    await asyncio.wait_for(f.engine.entered.wait(), 15)
    await other.write_back([StatusUpdate(f.engine.seen[0].origin, "sent by the other one")])
    assert any(scope.endswith(":late:" + f.engine.seen[0].origin.split(":")[0]) for scope, _ in f.notes.notes)
    f.engine.gate.set()
    await task
    assert f.results()[1:] == [["Ana", "0740", "sent by the other one"], ["Ion", "0741", f"{SENT} id-0741"]]
    assert not [key for key in f.notes.notes if ":late:" in key[0]]  # written, then forgotten


async def test_write_back_rewrites_one_status(tmp_path: Path) -> None:
    f = Folder(tmp_path)
    f.drop("x.csv", 'Name;Phone;Note\r\nAna;0740;"two\r\nlines"\r\n\r\nIon;0741;x\r\nDan;0742;y\r\n')
    await f.source.once()
    ion = next(r for r in f.engine.seen if r.row["Name"] == "Ion")
    assert ion.origin.endswith(":5")
    await f.source.write_back(
        [StatusUpdate(ion.origin, "failed: refused later"), StatusUpdate("0123456789ab:2", "sent")]
    )
    raw = (f.inbox / "processed" / "x.results.csv").read_bytes().decode()
    assert raw == (
        "Name;Phone;Note;SMS Status\r\n"
        f'Ana;0740;"two\r\nlines";{SENT} id-0740\r\n'
        "\r\n"
        "Ion;0741;x;failed: refused later\r\n"
        f"Dan;0742;y;{SENT} id-0742\r\n"
    )


async def test_sap_utf16_and_excel_sep_files_get_their_statuses_on_their_rows(tmp_path: Path) -> None:
    f = Folder(tmp_path)
    # SAP's export (UTF-16LE with a BOM, tabs) and a Windows-1252 file with Excel's sep= line.
    sap = "".join(
        f"{line}\r\n"
        for line in [
            "Name\tPhone\tCity",
            "Ștefan\t0740\tCluj",
            "Łukasz\tbad\tKraków",
            "山田\tignore\t東京",
            "山本\t0743\t大阪",
        ]
    )
    f.drop("sap.csv", codecs.BOM_UTF16_LE + sap.encode("utf-16-le"))
    excel = 'sep=;\r\nName;Phone;Note\r\nAna;0740;"a, b"\r\n\r\nIon;bad;c,d\r\nDan;0742\r\nEd;0743;René\r\n'
    f.drop("excel.csv", excel.encode("cp1252"))
    await f.source.once()
    assert f.listing() == [
        "failed",
        "processed",
        "processed/excel.csv",
        "processed/excel.results.csv",
        "processed/sap.csv",
        "processed/sap.results.csv",
    ]
    assert f.results("sap.results.csv", "\t") == [
        ["Name", "Phone", "City", "SMS Status"],
        ["Ștefan", "0740", "Cluj", f"{SENT} id-0740"],
        ["Łukasz", "bad", "Kraków", "failed: invalid number"],
        ["山田", "ignore", "東京", ""],
        ["山本", "0743", "大阪", f"{SENT} id-0743"],
    ]
    assert (f.inbox / "processed" / "sap.results.csv").read_bytes().startswith(codecs.BOM_UTF8)
    assert f.results("excel.results.csv", ";") == [
        ["sep=", ""],  # the sep line, as Excel needs it, read here as the plain CSV it also is
        ["Name", "Phone", "Note", "SMS Status"],
        ["Ana", "0740", "a, b", f"{SENT} id-0740"],
        [],
        ["Ion", "bad", "c,d", "failed: invalid number"],
        ["Dan", "0742", "", "failed: row has 2 fields, header has 3"],
        ["Ed", "0743", "René", f"{SENT} id-0743"],
    ]
    lines = {r.row["Name"]: int(r.origin.rpartition(":")[2]) for r in f.engine.seen}
    assert lines == {"Ștefan": 2, "Łukasz": 3, "山田": 4, "山本": 5, "Ana": 3, "Ion": 5, "Dan": 6, "Ed": 7}
    # A later status names `<file id>:<line>`: the results file's same physical line changes, only it.
    paths = {name: f.inbox / "processed" / f"{name}.results.csv" for name in ("excel", "sap")}
    before = {name: path.read_bytes() for name, path in paths.items()}
    assert before["excel"].startswith(codecs.BOM_UTF8 + b"sep=;\r\nName;Phone;Note;SMS Status\r\n")
    late = [r for r in f.engine.seen if r.row["Name"] in ("Ed", "山本")]
    await f.source.write_back([StatusUpdate(r.origin, "failed: refused later") for r in late])
    after = {name: path.read_bytes().decode("utf-8-sig") for name, path in paths.items()}
    assert after["excel"] == before["excel"].decode("utf-8-sig").replace(
        f"René;{SENT} id-0743", "René;failed: refused later"
    )
    assert after["excel"].split("\r\n")[lines["Ed"] - 1] == "Ed;0743;René;failed: refused later"
    assert after["sap"] == before["sap"].decode("utf-8-sig").replace(
        f"大阪\t{SENT} id-0743", "大阪\tfailed: refused later"
    )
    assert after["sap"].split("\r\n")[lines["山本"] - 1] == "山本\t0743\t大阪\tfailed: refused later"


async def test_preview_reads_every_file_and_changes_nothing(tmp_path: Path) -> None:
    f = Folder(tmp_path, settle="1h")
    f.drop("x.csv", ORDERS)
    f.drop("y.csv", "Name;Phone\nZoe;0799;extra\n")
    f.drop("z.csv", b"\x00binary")
    f.drop("notes.txt", "not a csv")
    before = {p: p.stat().st_mtime_ns for p in f.inbox.iterdir()}
    records = await asyncio.to_thread(lambda: list(f.source.preview()))
    assert [(r.row["Name"], r.problem) for r in records] == [
        ("Ana", None),
        ("Ion", None),
        ("Dan", None),
        ("Zoe", "row has 3 fields, header has 2"),
    ]
    assert {p: p.stat().st_mtime_ns for p in f.inbox.iterdir()} == before
    assert f.engine.calls == 0
    # What preview shows is what processing will see: the same origins.
    f.source.config = f.source.config.model_copy(update={"settle": 0.0})
    await f.source.once()
    assert [r.origin for r in f.engine.seen] == [r.origin for r in records]


async def test_once_leaves_a_young_file_for_the_next_pass_and_ignores_temporary_ones(
    tmp_path: Path,
) -> None:
    f = Folder(tmp_path, settle="1h")
    young = f.drop("x.csv", ORDERS)
    temporary = ["~$x.csv", ".~lock.x.csv#", "x.csv.part", "y.tmp", ".hidden.csv"]
    for name in temporary:
        f.drop(name, ORDERS)
    (f.inbox / "sub").mkdir()
    f.drop("sub/deeper.csv", ORDERS)
    # A file written a moment ago with `settle: 1h`: the pass returns at once and leaves it.
    await asyncio.wait_for(f.source.once(), timeout=30)
    assert young.exists() and not (f.inbox / "processed" / "x.results.csv").exists()
    assert f.engine.seen == []
    # An hour later (its mtime says so) the next pass takes it.
    an_hour_ago = time.time() - 3601
    os.utime(young, (an_hour_ago, an_hour_ago))
    f.source = CsvFolderSource(f.source.name, f.source.config, f.source.ctx)
    await f.source.once()
    assert (f.inbox / "processed" / "x.results.csv").exists()
    assert sorted(p.name for p in f.inbox.iterdir() if p.is_file()) == sorted(temporary)
    assert (f.inbox / "sub" / "deeper.csv").exists()
    assert len(f.engine.seen) == 3


async def test_a_header_only_file_is_processed(tmp_path: Path) -> None:
    f = Folder(tmp_path)
    f.drop("x.csv", codecs.BOM_UTF8 + b"Name;Phone\r\n")
    await f.source.once()
    assert (
        f.inbox / "processed" / "x.results.csv"
    ).read_bytes() == codecs.BOM_UTF8 + b"Name;Phone;SMS Status\r\n"
    assert f.engine.calls == 0


async def test_an_engine_error_leaves_the_file_in_the_inbox(tmp_path: Path) -> None:
    f = Folder(tmp_path)
    f.drop("x.csv", ORDERS)

    async def broken(records: Sequence[Record]) -> list[str | None]:
        return [None]  # one status for three records: a contract breach

    f.ctx.process = broken
    with pytest.raises(SourceError, match=r"could not finish x\.csv"):
        await f.source.once()
    assert f.listing() == ["failed", "processed", "x.csv"]


async def test_run_picks_up_files_dropped_after_start(tmp_path: Path) -> None:
    f = Folder(tmp_path, settle="100ms", rescan="1h")  # no rescan: only watchdog can tell
    scans = count_calls(f.source, "_scan")
    task = asyncio.create_task(f.source.run())
    await eventually(lambda: scans[0] == 1, task)
    f.drop("x.csv", ORDERS)
    await eventually((f.inbox / "processed" / "x.csv").exists, task)
    hidden = f.drop(".y.csv.tmp", "Name,Phone\nZoe,0799\n")
    hidden.replace(f.inbox / "y.csv")  # moved into the folder, as careful exporters do
    await eventually((f.inbox / "processed" / "y.results.csv").exists, task)
    f.stopping.set()
    await asyncio.wait_for(task, 15)
    assert scans[0] == 1
    assert [r.row["Name"] for r in f.engine.seen] == ["Ana", "Ion", "Dan", "Zoe"]


async def test_a_file_still_being_written_is_taken_only_once_it_settles(tmp_path: Path) -> None:
    f = Folder(tmp_path, settle="1s", rescan="1h")
    scans = count_calls(f.source, "_scan")
    task = asyncio.create_task(f.source.run())
    await eventually(lambda: scans[0] == 1, task)
    path = f.inbox / "x.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write("Name,Phone\n")
        out.flush()
        for i in range(40):
            out.write(f"P{i},07{i:02}\n")
            out.flush()
            await asyncio.sleep(0.05)
    assert f.engine.calls == 0  # never quiet for a whole second while it grew
    await eventually((f.inbox / "processed" / "x.csv").exists, task)
    f.stopping.set()
    await asyncio.wait_for(task, 15)
    assert [r.row["Name"] for r in f.engine.seen] == [f"P{i}" for i in range(40)]
    assert len({r.origin.split(":")[0] for r in f.engine.seen}) == 1


async def test_stopping_midway_leaves_the_file_for_the_next_start(tmp_path: Path) -> None:
    f = Folder(tmp_path, rescan="1h")
    f.source.chunk_rows = 2
    f.drop("x.csv", "Name,Phone\n" + "".join(f"P{i},07{i:02}\n" for i in range(20)))

    def stop_on_second(call: int) -> None:
        if call == 2:
            f.stopping.set()

    f.engine.on_call = stop_on_second
    await asyncio.wait_for(f.source.run(), 15)
    assert f.listing() == ["failed", "processed", "x.csv"]  # no results, no part file
    first_run = [r.origin for r in f.engine.seen]
    assert 2 <= len(first_run) < 20

    again = Folder(tmp_path)  # the next start re-reads it: same file, same origins
    await again.source.once()
    second_run = [r.origin for r in again.engine.seen]
    assert len(second_run) == 20
    assert second_run[: len(first_run)] == first_run
    assert len(again.results()) == 21


async def test_check_summarises_the_folder(tmp_path: Path) -> None:
    f = Folder(tmp_path)
    f.drop("a.csv", ORDERS)
    f.drop("b.csv", ORDERS)
    f.drop("~$b.csv", ORDERS)
    assert await f.source.check() == "./inbox: 2 files waiting"
    missing = CsvFolderSource("erp", CsvFolderConfig(type="csv_folder", path=Path("later/inbox")), f.ctx)
    assert await missing.check() == "./later/inbox: does not exist yet, will be created"
    assert not (tmp_path / "later").exists()
    (tmp_path / "file").write_text("")
    not_a_folder = CsvFolderSource("erp", CsvFolderConfig(type="csv_folder", path=tmp_path / "file"), f.ctx)
    with pytest.raises(SourceError, match="is not a folder"):
        await not_a_folder.check()

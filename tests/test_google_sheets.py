"""The Google Sheets source against the Sheets emulator, through real gspread and google-auth on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account
from gspread.exceptions import APIError
from pydantic import ValidationError
from structlog.testing import capture_logs

from connector.config import RuleConfig
from connector.engine import Engine
from connector.errors import SourceError
from connector.events import Record
from connector.ledger import Ledger, open_ledger
from connector.rules import compile_rules
from sinks.dry_run import DryRunConfig, DryRunSink
from sources import SOURCE_TYPES
from sources.base import SourceContext, StatusUpdate
from sources.google_sheets import GoogleSheetsConfig, GoogleSheetsSource
from sources.sheets_client import SCOPES, retry_after
from tests.emulators.base import Fault
from tests.emulators.keys import service_account_file
from tests.emulators.server import EmulatorServer
from tests.emulators.sheets import SheetsEmulator
from tests.helpers import MemoryNotes, ro_mobile
from tests.recording_proxy import RecordingProxy, settle

SID = "1SheetKey_abc-123"
TAB = "Orders"
HEADER = ["Order ID", "Name", "Phone", "Status", "SMS Status"]
STATUS_COL = 5
SENT = "sent 2026-11-22T04:20:00Z"


def order(i: int, status: str = "") -> list[str]:
    return [f"A-{i}", f"Customer {i}", ro_mobile(i), "Confirmed", status]


def sheet(n: int, start: int = 1) -> list[list[str]]:
    return [HEADER] + [order(i) for i in range(start, start + n)]


class FakeEngine:
    """Answers like the engine: `bad` phones fail, `ignore` wants no status, settled rows keep theirs."""

    def __init__(self) -> None:
        self.seen: list[Record] = []
        self.calls = 0
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None  # when set, every call waits for it

    async def process(self, records: Sequence[Record]) -> list[str | None]:
        self.calls += 1
        if self.gate is not None:
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
        phone = str(record.row.get("Phone"))
        if phone == "ignore":
            return None
        if phone == "bad":
            return "failed: invalid number"
        if phone.startswith("="):
            return phone  # a status that looks like a formula
        return f"{SENT} id-{phone}"


@pytest.fixture
def emulator() -> SheetsEmulator:
    return SheetsEmulator()


@pytest.fixture
def base_url(emulator: SheetsEmulator) -> Iterator[str]:
    with EmulatorServer(emulator) as url:
        yield url


class Sheet:
    """One source over the emulator's spreadsheet SID, with a fake engine and notes."""

    def __init__(
        self,
        tmp_path: Path,
        base_url: str,
        emulator: SheetsEmulator,
        *,
        process: Callable[[Sequence[Record]], Any] | None = None,
        **config: Any,
    ) -> None:
        self.emulator = emulator
        self.engine = FakeEngine()
        self.notes = MemoryNotes()
        self.stopping = asyncio.Event()
        key = service_account_file(tmp_path / "keys", f"{base_url}/token")
        settings: dict[str, Any] = {
            "type": "google_sheets",
            "spreadsheet": SID,
            "worksheet": TAB,
            "credentials": str(key.relative_to(tmp_path)),
            "key_column": "Order ID",
            "api_url": base_url,
            "timeout": "5s",
            "max_retry_time": "3s",
            **config,
        }
        self.ctx = SourceContext(process or self.engine.process, self.notes, tmp_path, self.stopping)
        self.source = GoogleSheetsSource("orders", GoogleSheetsConfig.model_validate(settings), self.ctx)
        self.source.client.backoff_base = 0.05  # keep retries without Retry-After short

    def values(self) -> list[list[str]]:
        return self.emulator.values(SID, TAB)

    def status(self, row: int) -> str:
        cells = self.values()[row - 1]
        return cells[STATUS_COL - 1] if len(cells) >= STATUS_COL else ""

    def statuses_by_key(self) -> dict[str, str]:
        return {r[0]: (r[STATUS_COL - 1] if len(r) >= STATUS_COL else "") for r in self.values()[1:]}


def expected(i: int) -> str:
    return f"{SENT} id-{ro_mobile(i)}"


# -- configuration ----------------------------------------------------------------------------------


def test_the_source_is_registered() -> None:
    assert SOURCE_TYPES["google_sheets"] is GoogleSheetsSource


def test_config_takes_a_url_and_checks_schedules() -> None:
    url = f"https://docs.google.com/spreadsheets/d/{SID}/edit#gid=0"
    cfg = GoogleSheetsConfig.model_validate({"type": "google_sheets", "spreadsheet": url})
    assert cfg.spreadsheet == SID
    assert cfg.max_retry_time == 120.0 and cfg.timeout == 30.0
    for bad in (
        {"spreadsheet": "https://example.com/not-a-sheet"},
        {"spreadsheet": SID, "cron": "every monday"},
        {"spreadsheet": SID, "cron": "*/5 * * * *", "every": "1m"},
        {"spreadsheet": SID, "header_row": 0},
        {"spreadsheet": SID, "timeout": "0s"},
    ):
        with pytest.raises(ValidationError):
            GoogleSheetsConfig.model_validate({"type": "google_sheets", **bad})


# -- one poll ---------------------------------------------------------------------------------------


async def test_a_poll_sends_due_rows_and_writes_statuses_in_one_batch(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    rows = sheet(3)
    rows[2][STATUS_COL - 1] = "failed: earlier"  # settled: left alone
    rows.append(["A-9", "Bad", "bad", "Confirmed"])  # short row: no status cell at all
    rows.append(["A-10", "Ign", "ignore", "Confirmed"])
    emulator.add_spreadsheet(SID, {TAB: rows, "Other": [["x"]]})
    s = Sheet(tmp_path, base_url, emulator)
    assert await s.source.poll() == 3
    assert s.statuses_by_key() == {
        "A-1": expected(1),
        "A-2": "failed: earlier",
        "A-3": expected(3),
        "A-9": "failed: invalid number",
        "A-10": "",
    }
    seen = {r.key: r for r in s.engine.seen}
    assert set(seen) == {"A-1", "A-3", "A-9", "A-10"}
    first = seen["A-1"]
    assert first.row == dict(zip(HEADER, order(1), strict=True))
    assert first.where == f"{TAB} row 2"
    assert first.origin.startswith(f"sheet:{SID}:") and first.origin.endswith(":key:A-1")
    assert seen["A-9"].row["SMS Status"] == ""  # short rows are padded
    assert emulator.counts["values.batchUpdate"] == 1
    assert emulator.counts["values.get"] == 2
    assert emulator.counts["allowedLocations"] == 0  # no boundary lookup, at Google or here
    assert {w["valueInputOption"] for w in emulator.writes} == {"RAW"}


async def test_ten_thousand_rows_cost_three_requests_and_one_when_nothing_is_due(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    emulator.add_spreadsheet(SID, {TAB: sheet(10_000)})
    s = Sheet(tmp_path, base_url, emulator)
    assert await s.source.poll() == 10_000
    assert emulator.counts["values.get"] + emulator.counts["values.batchUpdate"] == 3
    assert emulator.counts["metadata"] <= 2 and emulator.counts["token"] == 1
    values = s.values()
    assert all(values[i][STATUS_COL - 1] == expected(i) for i in (1, 5_000, 10_000))

    emulator.reset_counts()
    assert await s.source.poll() == 0
    assert +emulator.counts == {"values.get": 1}  # handles cached, nothing due, nothing written

    emulator.set_cell(SID, TAB, 7_001, STATUS_COL, "")  # one row due again
    emulator.reset_counts()
    assert await s.source.poll() == 1
    assert +emulator.counts == {"values.get": 2, "values.batchUpdate": 1}
    assert s.status(7_001) == expected(7_000)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda e: e.insert_rows(SID, TAB, 2, [order(100, "x"), order(101, "y")]), id="insert"),
        pytest.param(lambda e: e.sort_rows(SID, TAB, key=lambda r: r[0], reverse=True), id="sort"),
        pytest.param(lambda e: e.delete_rows(SID, TAB, 2), id="delete"),
    ],
)
@pytest.mark.parametrize("key_column", ["Order ID", None])
async def test_statuses_land_on_their_rows_after_edits_between_read_and_write(
    tmp_path: Path,
    base_url: str,
    emulator: SheetsEmulator,
    edit: Callable[[SheetsEmulator], None],
    key_column: str | None,
) -> None:
    emulator.add_spreadsheet(SID, {TAB: sheet(5)})
    s = Sheet(tmp_path, base_url, emulator, key_column=key_column)
    emulator.between_read_and_write = edit
    with capture_logs() as logs:
        await s.source.poll()
    assert emulator.between_read_and_write is None  # the edit did happen
    by_key = s.statuses_by_key()
    for i in range(1, 6):
        if f"A-{i}" in by_key:
            assert by_key[f"A-{i}"] == expected(i)
    assert by_key.get("A-100", "x") == "x" and by_key.get("A-101", "y") == "y"
    if "A-1" not in by_key:  # deleted: said in the log, nothing written in its place
        assert any(e["event"].startswith("row gone") for e in logs)
    assert emulator.counts["values.get"] == 2 and emulator.counts["values.batchUpdate"] == 1


async def test_two_rows_with_one_key_both_fail_and_neither_is_sent(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    rows = sheet(9)
    rows[9][0] = "A-4"  # row 10 repeats row 5's key
    rows.append(["", "No key", ro_mobile(50), "Confirmed"])
    emulator.add_spreadsheet(SID, {TAB: rows})
    s = Sheet(tmp_path, base_url, emulator)
    await s.source.poll()
    duplicate = "failed: duplicate key 'A-4' (rows 5 and 10)"
    assert s.status(5) == duplicate and s.status(10) == duplicate
    assert s.status(11) == "failed: empty key column 'Order ID'"
    assert s.status(4) == expected(3)
    problems = [r for r in s.engine.seen if r.problem]
    assert len(problems) == 3


async def test_identical_rows_without_a_key_get_distinct_origins(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    emulator.add_spreadsheet(SID, {TAB: [HEADER, order(1), order(1), order(2)]})
    s = Sheet(tmp_path, base_url, emulator, key_column=None)
    await s.source.poll()
    origins = [r.origin for r in s.engine.seen]
    assert len(set(origins)) == 3 and origins[1] == origins[0] + "#2"
    assert [s.status(n) for n in (2, 3, 4)] == [expected(1), expected(1), expected(2)]


async def test_statuses_and_messages_are_never_formulas(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    emulator.add_spreadsheet(SID, {TAB: [HEADER, ["A-1", "=1+1", '=HYPERLINK("x")', "Confirmed"]]})
    s = Sheet(tmp_path, base_url, emulator)
    await s.source.poll()
    assert s.status(2) == '=HYPERLINK("x")'
    assert emulator.formula(SID, TAB, 2, STATUS_COL) is None  # stored as text, not as a formula


async def test_a_missing_status_column_is_added_and_the_grid_widened_once(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    header = HEADER[:4]
    emulator.add_spreadsheet(SID, {TAB: [header, order(1)[:4], order(2)[:4]]}, grid=(50, 4))
    s = Sheet(tmp_path, base_url, emulator)
    await s.source.poll()
    assert emulator.grid(SID, TAB) == (50, 5)
    assert s.values()[0] == HEADER
    assert s.status(2) == expected(1) and s.status(3) == expected(2)
    assert emulator.counts["batchUpdate"] == 1 and emulator.counts["values.batchUpdate"] == 1

    emulator.set_cell(SID, TAB, 4, 1, "A-3")
    emulator.set_cell(SID, TAB, 4, 3, ro_mobile(3))
    emulator.reset_counts()
    await s.source.poll()
    assert s.status(4) == expected(3)
    assert emulator.counts["batchUpdate"] == 0
    assert emulator.counts["values.get"] + emulator.counts["values.batchUpdate"] == 3


async def test_a_spare_column_is_used_without_widening(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    emulator.add_spreadsheet(SID, {TAB: [HEADER[:4], order(1)[:4]]}, grid=(10, 8))
    s = Sheet(tmp_path, base_url, emulator)
    await s.source.poll()
    assert s.values()[0] == HEADER and s.status(2) == expected(1)
    assert emulator.counts["batchUpdate"] == 0 and emulator.grid(SID, TAB) == (10, 8)


async def test_nothing_to_write_makes_no_write_even_without_a_status_column(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    emulator.add_spreadsheet(SID, {TAB: [HEADER[:4], ["A-1", "x", "ignore", "Confirmed"]]}, grid=(10, 4))
    s = Sheet(tmp_path, base_url, emulator)
    assert await s.source.poll() == 0
    assert emulator.counts["batchUpdate"] == 0 and emulator.counts["values.batchUpdate"] == 0
    assert emulator.grid(SID, TAB) == (10, 4)


async def test_header_row_below_the_top(tmp_path: Path, base_url: str, emulator: SheetsEmulator) -> None:
    emulator.add_spreadsheet(SID, {TAB: [["Orders export"], [], HEADER, order(1)]})
    s = Sheet(tmp_path, base_url, emulator, header_row=3)
    await s.source.poll()
    assert s.status(4) == expected(1)
    assert [r.where for r in s.engine.seen] == [f"{TAB} row 4"]


async def test_first_worksheet_by_default_and_held_statuses_written_with_the_next_poll(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    rows = sheet(2)
    rows[1][STATUS_COL - 1] = "pending (paused: no credits)"
    rows[2][STATUS_COL - 1] = "pending (paused: no credits)"
    emulator.add_spreadsheet(SID, {TAB: rows, "Later": [["x"]]})
    s = Sheet(tmp_path, base_url, emulator, worksheet=None)
    # the engine still holds A-1 and has nothing new to say about A-2
    s.engine.answer = lambda r: "pending (paused: no credits)"  # type: ignore[method-assign, assignment]
    await s.source.poll()
    assert emulator.counts["values.batchUpdate"] == 0
    assert [r.status for r in s.engine.seen] == ["", ""]  # pending rows are asked about again
    origin = s.engine.seen[0].origin
    await s.source.write_back([StatusUpdate(origin, f"{SENT} late"), StatusUpdate("csv:x:2", "sent")])
    await s.source.poll()
    assert s.status(2) == f"{SENT} late" and s.status(3) == "pending (paused: no credits)"


# -- through the real engine, ledger and a dry-run sink ---------------------------------------------


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    ledger = await open_ledger("sqlite:///l.db", tmp_path)
    await ledger.join()
    yield ledger
    await ledger.close()


@pytest.fixture
async def real(ledger: Ledger, tmp_path: Path) -> AsyncIterator[tuple[Engine, Path]]:
    """The real engine over the SQLite ledger, into a dry-run outbox; closed after the test."""
    outbox = tmp_path / "outbox.jsonl"
    rule = RuleConfig.model_validate(
        {
            "name": "confirm",
            "source": "orders",
            "when": "row['Status'] == 'Confirmed'",
            "to": "{{ row['Phone'] }}",
            "country": "RO",
            "message": "Hi {{ row['Name'] }}, order {{ row['Order ID'] }} is confirmed.",
            "sink": "out",
        }
    )
    async with httpx.AsyncClient() as client:
        sink = DryRunSink("out", DryRunConfig(type="dry_run", path=outbox), client)
        try:
            yield Engine(compile_rules([rule]), {"out": sink}, ledger), outbox
        finally:
            await sink.aclose()


def sent_lines(outbox: Path) -> list[dict[str, Any]]:
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text().splitlines()]


async def test_cleared_status_is_rewritten_and_resend_sends_exactly_once(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator, real: tuple[Engine, Path]
) -> None:
    engine, outbox = real
    emulator.add_spreadsheet(SID, {TAB: sheet(3)})
    s = Sheet(tmp_path, base_url, emulator, process=engine.process)
    await s.source.poll()
    assert len(sent_lines(outbox)) == 3
    first = s.status(3)
    assert first.startswith("sent ") and first.endswith("dry-run")

    emulator.set_cell(SID, TAB, 3, STATUS_COL, "")  # cleared by hand
    emulator.sort_rows(SID, TAB, key=lambda r: r[0], reverse=True)  # and moved
    await s.source.poll()
    assert len(sent_lines(outbox)) == 3  # no second SMS
    assert s.statuses_by_key()["A-2"] == first

    row = next(i for i, r in enumerate(s.values(), start=1) if r[0] == "A-2")
    emulator.set_cell(SID, TAB, row, STATUS_COL, "resend")
    await s.source.poll()
    assert len(sent_lines(outbox)) == 4
    assert sent_lines(outbox)[-1]["text"] == "Hi Customer 2, order A-2 is confirmed."
    assert s.statuses_by_key()["A-2"].startswith("sent ")
    await s.source.poll()
    assert len(sent_lines(outbox)) == 4


async def test_a_lasting_429_gives_up_in_time_and_the_next_poll_writes_everything(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator, real: tuple[Engine, Path]
) -> None:
    engine, outbox = real
    emulator.add_spreadsheet(SID, {TAB: sheet(4)})
    s = Sheet(tmp_path, base_url, emulator, process=engine.process, max_retry_time="500ms")
    emulator.set_cell(SID, TAB, 3, STATUS_COL, "resend")  # a forced send whose write will fail

    def quota_gone(e: SheetsEmulator) -> None:
        e.inject(*[Fault(status=429) for _ in range(200)])

    emulator.between_read_and_write = quota_gone
    with pytest.raises(SourceError, match="429"):
        await s.source.poll()
    assert len(sent_lines(outbox)) == 4  # sent, but no status could be written
    assert emulator.counts["values.batchUpdate"] == 0
    assert 2 <= emulator.counts["values.get"] < 200  # retried, then gave up within max_retry_time
    assert [s.status(n) for n in (2, 3)] == ["", "resend"]

    emulator.reset()  # the quota is back
    await s.source.poll()
    assert len(sent_lines(outbox)) == 4  # nothing sent twice, not even the `resend` row
    assert all(v.startswith("sent ") for v in s.statuses_by_key().values())


async def test_429_with_retry_after_is_waited_out(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    emulator.add_spreadsheet(SID, {TAB: sheet(2)})
    s = Sheet(tmp_path, base_url, emulator)
    await s.source.check()  # opened: the next request is the poll's read
    emulator.inject(Fault(status=429, headers={"Retry-After": "1"}), Fault(status=503))
    with capture_logs() as logs:
        await s.source.poll()
    retries = [e for e in logs if e["event"] == "sheets call retried"]
    assert [e["status"] for e in retries] == [429, 503]
    assert retries[0]["wait_s"] >= 1.0
    assert s.status(2) == expected(1) and s.status(3) == expected(2)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    class Response:
        def __init__(self, value: str) -> None:
            self.headers = {"Retry-After": value}
            self.status_code = 429

        def json(self) -> Any:
            return {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}

    assert retry_after(APIError(Response("7"))) == 7.0  # type: ignore[arg-type]
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    waited = retry_after(APIError(Response(later)))  # type: ignore[arg-type]
    assert waited is not None and 25 <= waited <= 31
    assert retry_after(APIError(Response("soon"))) is None  # type: ignore[arg-type]


async def test_an_expired_token_is_renewed(tmp_path: Path, base_url: str, emulator: SheetsEmulator) -> None:
    emulator.add_spreadsheet(SID, {TAB: sheet(1)})
    s = Sheet(tmp_path, base_url, emulator)
    await s.source.poll()
    emulator.expire_tokens()
    emulator.set_cell(SID, TAB, 2, STATUS_COL, "")
    await s.source.poll()
    assert emulator.counts["token"] == 2 and s.status(2) == expected(1)


async def test_a_renamed_worksheet_is_reopened(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    emulator.add_spreadsheet(SID, {"First": sheet(1)})
    s = Sheet(tmp_path, base_url, emulator, worksheet=None)
    await s.source.poll()
    emulator.add_spreadsheet(SID, {"Renamed": sheet(2)})  # the cached title no longer parses
    emulator.reset_counts()
    await s.source.poll()
    assert emulator.values(SID, "Renamed")[2][STATUS_COL - 1] == expected(2)
    assert emulator.counts["metadata"] == 2


# -- nothing leaves for Google but the Sheets calls -------------------------------------------------
# google-auth's Regional Access Boundary lookup would GET iamcredentials.googleapis.com on a thread of
# its own: by default on 2.62, on 2.63+ whenever this variable is truthy. The product never wants it.

BOUNDARY_LOOKUP = "GOOGLE_SDK_EXPERIMENTAL_PYTHON_REGIONAL_ACCESS_BOUNDARY_LOOKUP_ENABLED"


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProxy]:
    """What would leave this machine goes to a proxy that records and refuses it; loopback stays direct."""
    with RecordingProxy() as proxy:
        for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.setenv(name, "127.0.0.1,localhost")
        for name in ("ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        yield proxy


@pytest.mark.parametrize("lookup", ["true", None], ids=["lookup-enabled", "lookup-unset"])
async def test_no_request_reaches_google_with_the_boundary_lookup_enabled_or_not(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator, proxy: RecordingProxy,
    monkeypatch: pytest.MonkeyPatch, lookup: str | None,
) -> None:
    if lookup is None:
        monkeypatch.delenv(BOUNDARY_LOOKUP, raising=False)
    else:
        monkeypatch.setenv(BOUNDARY_LOOKUP, lookup)
    emulator.add_spreadsheet(SID, {TAB: sheet(2)})
    s = Sheet(tmp_path, base_url, emulator)
    before = set(threading.enumerate())
    assert await s.source.poll() == 2
    emulator.expire_tokens()  # a renewed token is another chance for google-auth to look up
    emulator.set_cell(SID, TAB, 2, STATUS_COL, "")
    assert await s.source.poll() == 1
    await asyncio.get_running_loop().shutdown_default_executor()  # its idle workers never end by themselves
    settle(before)
    assert [line for line in proxy.requests if "iamcredentials" in line] == []
    assert proxy.requests == []
    assert emulator.counts["allowedLocations"] == 0
    assert emulator.counts["token"] == 2 and s.statuses_by_key() == {"A-1": expected(1), "A-2": expected(2)}


def test_google_auth_alone_would_reach_google_when_the_lookup_is_enabled(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator, proxy: RecordingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the test above keeps out, seen through the same proxy with google-auth's own credentials."""
    monkeypatch.setenv(BOUNDARY_LOOKUP, "true")
    emulator.add_spreadsheet(SID, {TAB: sheet(1)})
    key = service_account_file(tmp_path, f"{base_url}/token")
    plain = service_account.Credentials.from_service_account_file(str(key), scopes=list(SCOPES))  # type: ignore[no-untyped-call]
    before = set(threading.enumerate())
    with AuthorizedSession(plain) as session:  # type: ignore[no-untyped-call]
        assert session.get(f"{base_url}/v4/spreadsheets/{SID}", timeout=5).status_code == 200
        settle(before)
    # urllib3 tries a refused tunnel more than once; each try is the same CONNECT
    tunnels = {tuple(line.split()[:2]) for line in proxy.requests}
    assert tunnels == {("CONNECT", "iamcredentials.googleapis.com:443")}
    assert emulator.counts["allowedLocations"] == 0


# -- check, preview ---------------------------------------------------------------------------------


async def test_check_summarises_a_usable_sheet(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    emulator.add_spreadsheet(SID, {TAB: sheet(2)}, title="Shop")
    s = Sheet(tmp_path, base_url, emulator)
    summary = await s.source.check()
    assert "'Shop' / 'Orders'" in summary and "key 'Order ID'" in summary and "present" in summary
    assert emulator.counts["values.batchUpdate"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"credentials": "missing.json"}, r"credentials .*missing\.json: cannot be read"),
        ({"credentials": "bad.json"}, r"credentials .*bad\.json: not a JSON key file"),
        ({"credentials": "user.json"}, r"not a service-account key"),
        ({"spreadsheet": "nope"}, r"spreadsheet nope not found, or not shared with connector@"),
        ({"worksheet": "Nope"}, r"worksheet 'Nope' not found in spreadsheet 'Test'"),
        ({"key_column": "Order"}, r"key column 'Order' not in the header row of 'Orders'"),
    ],
)
async def test_check_explains_what_is_wrong(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator, change: dict[str, Any], message: str
) -> None:
    emulator.add_spreadsheet(SID, {TAB: sheet(1)})
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "user.json").write_text(json.dumps({"type": "authorized_user"}))
    s = Sheet(tmp_path, base_url, emulator, **change)
    with pytest.raises(SourceError, match=message):
        await s.source.check()


async def test_check_without_any_credentials(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    emulator.add_spreadsheet(SID, {TAB: sheet(1)})
    s = Sheet(tmp_path, base_url, emulator, credentials=None)
    with pytest.raises(SourceError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        await s.source.check()
    key = service_account_file(tmp_path / "env", f"{base_url}/token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    s = Sheet(tmp_path, base_url, emulator, credentials=None)
    assert "'Orders'" in await s.source.check()


async def test_preview_shows_due_rows_and_writes_nothing(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    rows = sheet(3)
    rows[2][STATUS_COL - 1] = SENT
    emulator.add_spreadsheet(SID, {TAB: rows}, grid=(10, 5))
    s = Sheet(tmp_path, base_url, emulator)
    records = await asyncio.to_thread(lambda: list(s.source.preview()))
    assert [r.key for r in records] == ["A-1", "A-3"]
    assert emulator.writes == [] and emulator.counts["batchUpdate"] == 0
    assert s.engine.calls == 0


# -- scheduling -------------------------------------------------------------------------------------


async def test_a_slow_poll_is_never_overlapped_and_run_stops_cleanly(
    tmp_path: Path, base_url: str, emulator: SheetsEmulator
) -> None:
    emulator.add_spreadsheet(SID, {TAB: sheet(2)})
    s = Sheet(tmp_path, base_url, emulator, every="50ms")
    s.engine.gate = asyncio.Event()
    scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone="UTC")
    scheduler.start()
    s.ctx.scheduler = scheduler
    task = asyncio.create_task(s.source.run())
    try:
        async with asyncio.timeout(10):
            await s.engine.entered.wait()
        job = scheduler.get_job(s.source.job_id)
        assert job is not None and job.max_instances == 1 and job.coalesce
        await asyncio.sleep(0.4)  # several intervals pass while the first poll is stuck
        assert s.engine.calls == 1
        assert emulator.counts["values.get"] == 1
        s.engine.gate.set()
        async with asyncio.timeout(10):
            while emulator.counts["values.get"] < 4:  # later polls run again: one read each
                await asyncio.sleep(0.02)
        assert s.status(2) == expected(1)
        assert s.engine.calls == 1  # nothing was due after the first poll
    finally:
        s.stopping.set()
        async with asyncio.timeout(10):
            await task
        scheduler.shutdown(wait=False)
    assert scheduler.get_job(s.source.job_id) is None


async def test_once_polls_once(tmp_path: Path, base_url: str, emulator: SheetsEmulator) -> None:
    emulator.add_spreadsheet(SID, {TAB: sheet(2)})
    s = Sheet(tmp_path, base_url, emulator, cron="*/5 * * * *")
    await s.source.once()
    assert s.engine.calls == 1 and s.status(3) == expected(2)

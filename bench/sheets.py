"""Google Sheets source: API requests per poll, and the time of one poll at 100 ms per request.

1. Requests per steady-state poll (the source opened and polled once, then the measured poll) for
   sheets of 100, 10,000 and 100,000 rows with 0, 1 and all rows due, by kind as the emulator
   counts them; the one-off opening cost is reported apart. Target: 1 request when nothing is due,
   at most 3 otherwise. Beside it, the naive integration: a script that reads the sheet with gspread
   and calls `update_cell` once per due row. It is measured up to 1,000 due rows; beyond that its
   figure is rows + overhead, marked `extrapolated`. The emulator runs in this process here, because
   it is the one that counts (its CPU only slows the run; the figures are counts).
2. One poll of a 10,000-row sheet with 100 ms per API request, the emulator in its own process so
   its CPU stays off the clock: median of 5 polls with nothing due and with all 10,000 due (dry-run
   sink), and, inside the latter, the time spent in the engine (rules, ledger, sends). Target: the
   rest, the API part, under 1 s.

Every poll drives the product's `GoogleSheetsSource` with the real engine, a SQLite ledger and a
dry-run sink, through real gspread and google-auth over loopback.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.common import emulator_process, median, ro_mobile
from connector import logs
from connector.config import RuleConfig
from connector.engine import Engine
from connector.events import Record
from connector.ledger import open_ledger
from connector.rules import compile_rules
from sinks.dry_run import DryRunConfig, DryRunSink
from sources.base import SourceContext
from sources.google_sheets import GoogleSheetsConfig, GoogleSheetsSource
from tests.emulators.keys import service_account_file
from tests.emulators.server import EmulatorServer
from tests.emulators.sheets import SheetsEmulator, gspread_client

SID = "1BenchSheet_key"
TAB = "Orders"
HEADER = ["Order ID", "Name", "Phone", "Status", "SMS Status"]
STATUS_COL = 5
SETTLED = "sent 2026-01-01T00:00:00Z earlier"  # a status from an earlier run: the row is not due
SIZES = (100, 10_000, 100_000)
NAIVE_MEASURED_MAX = 1_000
LATENCY = 0.1
POLLS = 5
TIMED_ROWS = 10_000
QUOTA_WRITES_PER_MINUTE = 60


def rows(n: int, status: str = SETTLED) -> list[list[str]]:
    return [HEADER] + [
        [f"A-{i}", f"Customer {i}", ro_mobile(i), "Confirmed", status] for i in range(1, n + 1)
    ]


class TimedProcess:
    """The engine's `process`, with the time spent inside it added up."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seconds = 0.0
        self.records = 0

    async def __call__(self, records: Sequence[Record]) -> list[str | None]:
        start = time.perf_counter()
        try:
            return await self.engine.process(records)
        finally:
            self.seconds += time.perf_counter() - start
            self.records += len(records)


class Product:
    """One `GoogleSheetsSource` with the real engine, a SQLite ledger and a dry-run sink."""

    def __init__(self, folder: Path, url: str, spreadsheet: str, key: Path) -> None:
        self.folder, self.url, self.spreadsheet, self.key = folder, url, spreadsheet, key
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Product:
        ledger = await open_ledger("sqlite:///ledger.db", self.folder)
        await ledger.join()
        self._stack.push_async_callback(ledger.close)
        client = httpx.AsyncClient()
        self._stack.push_async_callback(client.aclose)
        self.outbox = self.folder / "outbox.jsonl"
        sink = DryRunSink("out", DryRunConfig(type="dry_run", path=self.outbox), client)
        self._stack.push_async_callback(sink.aclose)
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
        self.process = TimedProcess(Engine(compile_rules([rule]), {"out": sink}, ledger))
        config = GoogleSheetsConfig.model_validate(
            {
                "type": "google_sheets",
                "spreadsheet": self.spreadsheet,
                "worksheet": TAB,
                "credentials": str(self.key),
                "key_column": "Order ID",
                "api_url": self.url,
            }
        )
        ctx = SourceContext(self.process, ledger, self.folder, asyncio.Event())
        self.source = GoogleSheetsSource("orders", config, ctx)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def open(self) -> None:
        await asyncio.to_thread(self.source.client.grid)

    def sent(self) -> int:
        if not self.outbox.exists():
            return 0
        with self.outbox.open(encoding="utf-8") as handle:
            return sum(1 for _ in handle)


def _kinds(counts: Any) -> dict[str, int]:
    return {kind: n for kind, n in sorted(counts.items()) if n}


def _duration(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds < 120 else f"{seconds / 60:,.0f} min"


def _text(kinds: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in kinds.items()) or "none"


# -- 1. requests per poll ---------------------------------------------------------------------------


async def _product_poll(emulator: SheetsEmulator, url: str, key: Path, size: int, due: int) -> dict[str, Any]:
    spreadsheet = f"{SID}-{size}-{due}"
    emulator.add_spreadsheet(spreadsheet, {TAB: rows(size)})
    with tempfile.TemporaryDirectory() as tmp:
        async with Product(Path(tmp), url, spreadsheet, key) as product:
            emulator.reset_counts()
            await product.open()
            opening = _kinds(emulator.counts)
            await product.source.poll()  # first poll: nothing is due yet
            first = _kinds(emulator.counts)
            for row in range(2, due + 2):  # a person clears status cells: those rows are due now
                emulator.set_cell(spreadsheet, TAB, row, STATUS_COL, "")
            emulator.reset_counts()
            start = time.perf_counter()
            written = await product.source.poll()
            seconds = time.perf_counter() - start
            kinds = _kinds(emulator.counts)
            sent = product.sent()
    emulator.add_spreadsheet(spreadsheet, {TAB: [["x"]]})  # let the big sheet go
    if written != due or sent != due:
        raise RuntimeError(f"{size} rows, {due} due: {written} statuses written, {sent} sent")
    first_kinds = {k: n - opening.get(k, 0) for k, n in first.items() if n - opening.get(k, 0)}
    return {
        "requests": sum(kinds.values()),
        "by_kind": kinds,
        "opening": opening,
        "first_poll": first_kinds,
        "sent": sent,
        "seconds_in_thread": round(seconds, 3),
    }


def _naive_poll(emulator: SheetsEmulator, url: str, key: Path, size: int, due: int) -> dict[str, Any]:
    """The integration people write first: read everything, then `update_cell` per due row."""
    spreadsheet = f"{SID}-naive-{size}-{due}"
    emulator.add_spreadsheet(spreadsheet, {TAB: rows(size)})
    client = gspread_client(key, url, boundary_lookup=False)
    emulator.reset_counts()
    worksheet = client.open_by_key(spreadsheet).worksheet(TAB)
    opening = _kinds(emulator.counts)
    for row in range(2, due + 2):
        emulator.set_cell(spreadsheet, TAB, row, STATUS_COL, "")
    emulator.reset_counts()
    values = worksheet.get_all_values()
    written = 0
    for number, cells in enumerate(values[1:], start=2):
        status = cells[STATUS_COL - 1] if len(cells) >= STATUS_COL else ""
        if not status and cells[3] == "Confirmed":
            worksheet.update_cell(number, STATUS_COL, f"sent {time.strftime('%Y-%m-%dT%H:%M:%SZ')}")
            written += 1
    kinds = _kinds(emulator.counts)
    emulator.add_spreadsheet(spreadsheet, {TAB: [["x"]]})
    client.http_client.session.close()
    if written != due:
        raise RuntimeError(f"naive: {written} of {due} written")
    return {"requests": sum(kinds.values()), "by_kind": kinds, "opening": opening}


def _naive(emulator: SheetsEmulator, url: str, key: Path, size: int, due: int) -> dict[str, Any]:
    """The naive figures for `due` rows: measured up to NAIVE_MEASURED_MAX, extrapolated beyond."""
    measured_due = min(due, NAIVE_MEASURED_MAX)
    naive = _naive_poll(emulator, url, key, size, measured_due)
    read = naive["by_kind"].get("values.get", 0)
    per_row = (naive["requests"] - read) / measured_due if measured_due else 0.0
    entry: dict[str, Any] = {
        "requests": naive["requests"],
        "by_kind": naive["by_kind"],
        "extrapolated": False,
    }
    measured = f"{naive['requests']:,} request(s) ({_text(naive['by_kind'])})"
    shown = f"{measured} per poll"
    if measured_due != due:
        entry = {
            "requests": read + round(per_row * due),
            "extrapolated": True,
            "measured_due": measured_due,
            "measured_requests": naive["requests"],
            "measured_by_kind": naive["by_kind"],
        }
        shown = (
            f"{entry['requests']:,} request(s) per poll, EXTRAPOLATED as {read} read + {per_row:g} per due "
            f"row; measured with {measured_due:,} due rows: {measured}"
        )
    entry["opening"] = naive["opening"]
    if due:
        # Sheets allows 60 writes a minute per user: no poll of this script can be quicker than this
        quota_seconds = per_row * due * 60 / QUOTA_WRITES_PER_MINUTE
        entry["write_requests_per_due_row"] = per_row
        entry["minutes_at_write_quota"] = round(quota_seconds / 60, 1)
        entry["seconds_at_100ms_latency"] = round((read + per_row * due) * LATENCY, 1)
        shown += f"; >= {_duration(quota_seconds)} at 60 writes/min"
    print(f"  naive update_cell, {size:>7,} rows, {due:>7,} due: {shown}", flush=True)
    return entry


def _requests_per_poll() -> dict[str, Any]:
    emulator = SheetsEmulator(record_requests=False)
    results: dict[str, Any] = {"product": {}, "naive_update_cell": {}}
    with EmulatorServer(emulator) as url, tempfile.TemporaryDirectory() as tmp:
        key = service_account_file(Path(tmp), f"{url}/token")
        for size in SIZES:
            for label, due in (("0_due", 0), ("1_due", 1), ("all_due", size)):
                name = f"{size}_rows_{label}"
                figures = asyncio.run(_product_poll(emulator, url, key, size, due))
                results["product"][name] = figures
                if label == "0_due":
                    print(
                        f"  product, opening the source once ({size:,} rows): "
                        f"{sum(figures['opening'].values())} requests ({_text(figures['opening'])}); "
                        f"first poll {_text(figures['first_poll'])}",
                        flush=True,
                    )
                print(
                    f"  product, {size:>7,} rows, {due:>7,} due: {figures['requests']} request(s) per poll "
                    f"({_text(figures['by_kind'])}); {figures['sent']:,} sent, "
                    f"{figures['seconds_in_thread']:.2f}s in-thread, no latency",
                    flush=True,
                )

                results["naive_update_cell"][name] = _naive(emulator, url, key, size, due)
    results["naive_opening"] = next(iter(results["naive_update_cell"].values()))["opening"]
    return results


# -- 2. time of one poll at 100 ms per request ------------------------------------------------------


def _seed(path: Path) -> None:
    spec = {
        f"{SID}-done": {"title": "Bench", "sheets": {TAB: rows(TIMED_ROWS)}},
        f"{SID}-due": {"title": "Bench", "sheets": {TAB: rows(TIMED_ROWS)}},
    }
    path.write_text(json.dumps(spec), encoding="utf-8")


def _clear_statuses(url: str, key: Path) -> None:
    """A person clears the whole status column (through the API: the emulator is another process)."""
    client = gspread_client(key, url, boundary_lookup=False)
    try:
        client.open_by_key(f"{SID}-due").values_update(
            f"{TAB}!E2:E{TIMED_ROWS + 1}",
            params={"valueInputOption": "RAW"},
            body={"values": [[""] for _ in range(TIMED_ROWS)]},
        )
    finally:
        client.http_client.session.close()


async def _nothing_due(folder: Path, url: str, key: Path) -> list[float]:
    async with Product(folder, url, f"{SID}-done", key) as product:
        await product.open()
        await product.source.poll()  # first poll
        times = []
        for _ in range(POLLS):
            start = time.perf_counter()
            written = await product.source.poll()
            times.append(time.perf_counter() - start)
            if written or product.process.records:
                raise RuntimeError("a poll with nothing due did something")
        return times


async def _all_due(folder: Path, url: str, key: Path) -> tuple[float, float]:
    """One measured poll on a fresh ledger, so that every row really goes through the sink."""
    async with Product(folder, url, f"{SID}-due", key) as product:
        await product.open()
        await product.source.poll()  # first poll: the statuses of the previous round are there
        await asyncio.to_thread(_clear_statuses, url, key)
        start = time.perf_counter()
        written = await product.source.poll()
        seconds = time.perf_counter() - start
        if written != TIMED_ROWS or product.sent() != TIMED_ROWS:
            raise RuntimeError(f"{written} statuses written, {product.sent()} sent of {TIMED_ROWS}")
        return seconds, product.process.seconds


def _poll_time() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        seed = folder / "seed.json"
        _seed(seed)
        with emulator_process("sheets", LATENCY, seed=str(seed)) as url:
            key = service_account_file(folder / "keys", f"{url}/token")
            (folder / "done").mkdir()
            idle = asyncio.run(_nothing_due(folder / "done", url, key))
            busy: list[tuple[float, float]] = []
            for i in range(POLLS):
                run = folder / f"due-{i}"
                run.mkdir()
                busy.append(asyncio.run(_all_due(run, url, key)))
    totals = [t for t, _ in busy]
    engine = [e for _, e in busy]
    api = [t - e for t, e in busy]
    results = {
        "rows": TIMED_ROWS,
        "latency_ms": LATENCY * 1000,
        "nothing_due_s_median": round(median(idle), 3),
        "nothing_due_s_all": [round(t, 3) for t in idle],
        "all_due_s_median": round(median(totals), 3),
        "all_due_engine_s_median": round(median(engine), 3),
        "all_due_api_part_s_median": round(median(api), 3),
        "all_due_s_all": [round(t, 3) for t in totals],
        "target_api_part_s": 1.0,
    }
    print(
        f"  one poll, {TIMED_ROWS:,} rows, {LATENCY * 1000:.0f} ms per request, nothing due: "
        f"{results['nothing_due_s_median']:.3f}s median of {POLLS} (target < 1 s)",
        flush=True,
    )
    print(
        f"  one poll, {TIMED_ROWS:,} rows, {LATENCY * 1000:.0f} ms per request, all due: "
        f"{results['all_due_s_median']:.3f}s median of {POLLS}, of which engine + dry-run sends "
        f"{results['all_due_engine_s_median']:.3f}s and the rest (API, reading, locating, writing) "
        f"{results['all_due_api_part_s_median']:.3f}s (target < 1 s)",
        flush=True,
    )
    return results


def run() -> dict[str, Any]:
    logs.configure("console", "warning")
    return {"requests_per_poll": _requests_per_poll(), "poll_time": _poll_time()}

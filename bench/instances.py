"""The multi-instance ledger: SQLite against PostgreSQL, and three instances on one PostgreSQL.

One run measures, against the RO emulator (its own process, 20 ms per request):
  1. the whole product (`connector once` over one CSV file in a drop folder) at concurrency 8 and
     32, on SQLite and on PostgreSQL. Target: PostgreSQL at least 80% of SQLite's rate.
  2. three `connector once` started together on one PostgreSQL ledger, concurrency 8 each, over
     one shared inbox of many small files (each taken by one instance): the aggregate sends/s
     against 3 x 400/s (target at least 80% of it), and the duplicates at the emulator (must be 0).
  3. claims per second from a 100,000-row CSV into `dry_run` (read + rules + claim + mark
     `sending` + record `sent`), on each ledger, the way `bench.csv_throughput` measures it; and
     beside it the ledger's claim path alone (100 batches of 1,000 claims, 4 in flight, as the
     drop folder hands them over), in this process.
Each pass is timed from the start of the processes to the end of the last one, minus the same
pass over an empty inbox (imports, ledger, scan), as `bench.send_rate` does. The machine's load
average before the run is printed: another busy process on 2 cores moves every figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench.common import (
    DRY_RUN,
    ROOT,
    Timer,
    config_text,
    emulator_process,
    ro_mobile,
    ro_sink,
    write_orders,
)
from connector import logs
from connector.engine import identity_key
from connector.ledger import Claim, open_ledger
from tests.helpers import read_results
from tests.ledgers import ledger_url

LATENCY = 0.02
TOKEN = "bench-token"
BACKENDS = ("sqlite", "postgresql")
PRODUCT_ROWS = {8: 4000, 32: 8000}  # 10 s and 5 s at the bounds
TARGET_RATIO = 0.8
INSTANCES = 3
INSTANCE_CONCURRENCY = 8
SHARED_FILES = 36  # small files: the three finish within about one file of each other
SHARED_ROWS = 400
CLAIM_ROWS = 100_000
CLAIM_BATCH = 1000  # the drop folder's chunk_rows
CLAIMS_IN_FLIGHT = 4  # and its in_flight


@dataclass(frozen=True, slots=True)
class Pass:
    seconds: float  # the pass minus the same pass over an empty inbox
    logs: list[str]  # each process's stderr (JSON lines)


def _folder(root: Path, state: str, sink: str) -> Path:
    inbox = root / "inbox"
    inbox.mkdir()
    text = config_text(sink=sink, inbox=inbox).replace("state: sqlite:///connector.db", f"state: {state}")
    # info: a few lines per file, among them the "csv file processed" that tells who took which file
    (root / "config.yaml").write_text(text.replace("level: warning", "level: info"))
    return inbox


def _start(cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "connector", "once", "-c", "config.yaml"],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _together(cwd: Path, count: int) -> tuple[float, list[str]]:
    """`count` x `connector once` started at once; seconds until the last ends, and their logs."""
    logs = [cwd / f"once-{i}.log" for i in range(count)]
    with Timer() as timer:
        procs = [_start(cwd, log) for log in logs]
        codes = [proc.wait(timeout=600) for proc in procs]
    texts = [log.read_text() for log in logs]
    if any(codes):
        raise RuntimeError(f"once exited {codes}: {texts[codes.index(max(codes))][-2000:]}")
    return timer.seconds, texts


def _timed_pass(cwd: Path, inbox: Path, files: int, rows: int, start: int, count: int = 1) -> Pass:
    """`files` CSV files of `rows` rows each (numbers from `start` on) through `count` processes."""
    startup, _ = _together(cwd, count)
    for n in range(files):
        staged = write_orders(cwd / f".orders-{n:03d}.csv", rows, start=start + n * rows)
        os.replace(staged, inbox / f"orders-{n:03d}.csv")
    seconds, logs = _together(cwd, count)
    return Pass(seconds - startup, logs)


def _events(logs: list[str], event: str) -> list[int]:
    """How many lines of each log are `event`."""
    counts = []
    for text in logs:
        lines = (json.loads(line) for line in text.splitlines() if line.startswith("{"))
        counts.append(sum(1 for line in lines if line.get("event") == event))
    return counts


def _check_sent(inbox: Path, rows: int, done: Pass) -> None:
    """Every row of every file has its results row, and says `sent`."""
    found = [r["SMS Status"] for p in (inbox / "processed").glob("*.results.csv") for r in read_results(p)]
    sent = sum(status.startswith("sent") for status in found)
    if sent != rows:
        raise RuntimeError(f"{sent} of {rows} rows sent ({len(found)} results): {done.logs[0][-2000:]}")


def _accepted(log: Path) -> Counter[str]:
    if not log.exists():
        return Counter()
    return Counter(json.loads(line)["to"] for line in log.read_text().splitlines())


def _product(url: str, backend: str, concurrency: int, start: int) -> float:
    rows = PRODUCT_ROWS[concurrency]
    with tempfile.TemporaryDirectory() as tmp, ledger_url(backend, Path(tmp)) as state:
        inbox = _folder(Path(tmp), state, ro_sink(url, concurrency, TOKEN))
        done = _timed_pass(Path(tmp), inbox, 1, rows, start)
        _check_sent(inbox, rows, done)
        return rows / done.seconds


def _shared(results: dict[str, Any]) -> None:
    rows = SHARED_FILES * SHARED_ROWS
    bound = INSTANCES * INSTANCE_CONCURRENCY / LATENCY
    with tempfile.TemporaryDirectory() as tmp, ledger_url("postgresql", Path(tmp)) as state:
        sent = Path(tmp) / "accepted.jsonl"
        with emulator_process("ro", LATENCY, token=TOKEN, log=str(sent)) as base:
            inbox = _folder(Path(tmp), state, ro_sink(base + "/api/sms/", INSTANCE_CONCURRENCY, TOKEN))
            done = _timed_pass(Path(tmp), inbox, SHARED_FILES, SHARED_ROWS, 5_000_000, INSTANCES)
        to = _accepted(sent)
        _check_sent(inbox, rows, done)
    files = _events(done.logs, "csv file processed")
    rate = rows / done.seconds
    results["three_postgresql_c8"] = round(rate)
    results["three_files_each"] = files
    results["three_duplicates"] = sum(n - 1 for n in to.values())
    print(
        f"  3 x connector once on one PostgreSQL, concurrency {INSTANCE_CONCURRENCY} each: {rate:,.0f}/s "
        f"({rate / bound:.0%} of {bound:,.0f}/s, target {TARGET_RATIO:.0%}); files processed by each "
        f"{files} ({sum(files)} of {SHARED_FILES}); duplicates at the emulator "
        f"{results['three_duplicates']} (must be 0)",
        flush=True,
    )


def _claims(backend: str) -> float:
    with tempfile.TemporaryDirectory() as tmp, ledger_url(backend, Path(tmp)) as state:
        inbox = _folder(Path(tmp), state, DRY_RUN)
        done = _timed_pass(Path(tmp), inbox, 1, CLAIM_ROWS, 0)
        _check_sent(inbox, CLAIM_ROWS, done)
        return CLAIM_ROWS / done.seconds


def _claim(i: int) -> Claim:
    to, text = "+4" + ro_mobile(i), f"Hi Customer {i}, order A-{i} is confirmed."
    return Claim(
        key=identity_key("erp", "confirm", "message", to, text),
        source="erp",
        rule="confirm",
        sink="out",
        origin=f"orders.csv:{i + 2}",
        recipient=to,
        text=text,
        expires_at=time.time() + 86_400,
    )


async def _claim_batches(state: str, folder: Path) -> float:
    batches = [[_claim(i) for i in range(n, n + CLAIM_BATCH)] for n in range(0, CLAIM_ROWS, CLAIM_BATCH)]
    ledger = await open_ledger(state, folder)
    try:
        await ledger.join()
        slots = asyncio.Semaphore(CLAIMS_IN_FLIGHT)

        async def one(batch: list[Claim]) -> int:
            async with slots:
                return len((await ledger.claim(batch)).answers)

        with Timer() as timer:
            done = sum(await asyncio.gather(*(one(b) for b in batches)))
    finally:
        await ledger.close()
    if done != CLAIM_ROWS:
        raise RuntimeError(f"{done} of {CLAIM_ROWS} claims answered")
    return CLAIM_ROWS / timer.seconds


def _claim_path(backend: str) -> float:
    with (
        tempfile.TemporaryDirectory() as tmp,
        ledger_url(backend, Path(tmp)) as state,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,  # the loop `connector` runs on
    ):
        return runner.run(_claim_batches(state, Path(tmp)))


def run() -> dict[str, Any]:
    logs.configure("console", "warning")
    load = round(os.getloadavg()[0], 2)
    results: dict[str, Any] = {"latency_ms": LATENCY * 1000, "load_average_before": load}
    print(f"  machine load average (1 min) before the run: {load} on {os.cpu_count()} cores", flush=True)
    with emulator_process("ro", LATENCY, token=TOKEN) as base:
        url = base + "/api/sms/"
        for n, concurrency in enumerate(PRODUCT_ROWS):
            bound = concurrency / LATENCY
            rates = {}
            for backend in BACKENDS:
                rates[backend] = _product(url, backend, concurrency, start=n * 1_000_000)
                results[f"product_{backend}_c{concurrency}"] = round(rates[backend])
            ratio = rates["postgresql"] / rates["sqlite"]
            results[f"product_ratio_c{concurrency}"] = round(ratio, 2)
            print(
                f"  connector once, concurrency {concurrency}: SQLite {rates['sqlite']:,.0f}/s, "
                f"PostgreSQL {rates['postgresql']:,.0f}/s ({rates['postgresql'] / bound:.0%} of "
                f"{bound:,.0f}/s); PostgreSQL/SQLite {ratio:.0%} (target {TARGET_RATIO:.0%})",
                flush=True,
            )
    _shared(results)
    for name, measure, what in (
        ("claims", _claims, "rows into dry_run (connector once)"),
        (
            "claim_path",
            _claim_path,
            f"claims into the ledger alone, {CLAIMS_IN_FLIGHT} x {CLAIM_BATCH} in flight",
        ),
    ):
        rates = {backend: measure(backend) for backend in BACKENDS}
        for backend, rate in rates.items():
            results[f"{name}_{backend}"] = round(rate)
        print(
            f"  {CLAIM_ROWS:,} {what}: SQLite {rates['sqlite']:,.0f}/s, PostgreSQL "
            f"{rates['postgresql']:,.0f}/s (PostgreSQL/SQLite {rates['postgresql'] / rates['sqlite']:.0%})",
            flush=True,
        )
    return results


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(run(), indent=2))

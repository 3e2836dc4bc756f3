"""The status page at a million ledger rows (issue 11): its response times beside /healthz.

One run:
  1. fills a SQLite ledger with 1,000,000 messages in one transaction (sqlite3 executemany): mostly
     sent, some skipped, a few thousand failed and unknown, some waiting for tomorrow (not due: the
     connector does not send them while measured);
  2. starts `connector run` on it (its own process, a dry_run sink with a daily budget, a CSV and a
     webhook source), waits for the page's first count;
  3. asks in turn, for ~30 s so that the page's background recount (every 20 s) falls inside:
     `/`, `/records/{id}` (failed, unknown and sent ids), `/?q=` (a source, the last digits of a
     number, an id prefix), `/healthz`; and reports the median, p95 and worst of each.
Target: median under 100 ms for `/` and `/records/{id}`. Also shown: the plan of the failures'
query (the partial index, not a scan) and how long one full count takes, which no view waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.common import ROOT, Timer, free_port, median
from connector.ledger import open_ledger
from connector.ledger.views import plan_sql

ROWS = 1_000_000
KEY_STEP = 2**128 // ROWS  # keys are 128-bit digests
SECONDS = 30.0
SOURCES = ("erp", "shop")
RULES = ("confirm", "reminder", "promo")
# state, share of the rows, detail
MIX = (
    ("sent", 0.9445, "id {i:x}"),
    ("skipped", 0.045, "duplicate of a message already sent 2025-01-01T08:00:00Z"),
    ("failed", 0.004, "'+40740{n}' is not a mobile number"),
    ("unknown", 0.0015, "read timeout: the provider may have taken it"),
    ("pending", 0.005, "quiet hours until 2099-01-01T07:00:00Z"),
)
COLUMNS = (
    "key, source, rule, sink, origin, recipient, text, state, detail, attempts, "
    "created_at, updated_at, not_before"
)


def _config(port: int) -> str:
    return f"""
state: sqlite:///connector.db
server: {{host: 127.0.0.1, port: {port}}}
log: {{format: json, level: warning}}
sinks:
  ro: {{type: dry_run, path: outbox.jsonl, daily_budget: 5000}}
sources:
  erp: {{type: csv_folder, path: ./inbox, settle: 1s}}
  shop: {{type: webhook, path: /hooks/shop, auth: none}}
rules:
  - name: confirm
    source: [erp, shop]
    to: "{{{{ row['Phone'] }}}}"
    country: RO
    message: "Hi {{{{ row['Name'] }}}}, order {{{{ row['Order ID'] }}}} is confirmed."
    sink: ro
"""


def fill(path: Path) -> dict[str, int]:
    """The schema by the product itself, then the rows in one transaction; the keys of each state."""

    async def create() -> None:
        await (await open_ledger(f"sqlite:///{path}", path.parent)).close()

    asyncio.run(create())
    chooser = random.Random(11)
    states = [state for state, _, _ in MIX]
    weights = [share for _, share, _ in MIX]
    details = {state: detail for state, _, detail in MIX}
    start = time.time() - ROWS * 0.3  # a message every 0.3 s: about 3.5 days of sending
    counted = dict.fromkeys(states, 0)

    def rows() -> Iterator[tuple[object, ...]]:
        for i in range(ROWS):
            state = chooser.choices(states, weights)[0]
            counted[state] += 1
            at = start + i * 0.3
            number = f"{chooser.randrange(1_000_000):06d}"
            yield (
                f"{i * KEY_STEP + chooser.randrange(KEY_STEP):032x}",  # random, in order: a quick fill
                SOURCES[i % 2],
                RULES[i % 3],
                "ro",
                f"csv:erp:{i // 1000}:{i % 1000}",
                f"+40740{number}",
                f"Hi Customer {i}, order A-{i} is confirmed.",
                state,
                details[state].format(i=i, n=number),
                0 if state in ("pending", "failed") else 1,
                at,
                at + 0.5,
                start + ROWS * 0.3 + 86400 if state == "pending" else None,  # waiting for tomorrow
            )

    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=OFF")
        db.execute("BEGIN")
        db.executemany(f"INSERT INTO sends ({COLUMNS}) VALUES ({','.join('?' * 13)})", rows())
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        plan = " ".join(str(r[-1]) for r in db.execute("EXPLAIN QUERY PLAN " + plan_sql()[0], plan_sql()[1]))
        print(f"  the failures' query: {plan}")
        with Timer() as count:
            db.execute("SELECT source, rule, state, count(*) FROM sends GROUP BY 1, 2, 3").fetchall()
        print(f"  one full count by source, rule and state: {count.seconds * 1000:,.0f} ms (never in a view)")
        picks = {
            state: [r[0] for r in db.execute("SELECT key FROM sends WHERE state = ? LIMIT 200", [state])]
            for state in ("failed", "unknown", "sent")
        }
    finally:
        db.close()
    print("  " + ", ".join(f"{state} {n:,}" for state, n in counted.items()))
    return {"count_ms": round(count.seconds * 1000), "picks": picks}  # type: ignore[dict-item]


@contextlib.contextmanager
def connector_run(folder: Path, port: int) -> Iterator[str]:
    (folder / "config.yaml").write_text(_config(port))
    (folder / "inbox").mkdir(exist_ok=True)
    with (folder / "connector.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "-c", "config.yaml"],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the connector did not start: {(folder / 'connector.log').read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(url: str, picks: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    ids = [key for keys in picks.values() for key in keys]
    failed = picks["failed"][0]
    targets = {
        "/": lambda i: "/",
        "/records/{id}": lambda i: f"/records/{ids[i % len(ids)]}",
        "/?q=": lambda i: "/?q=" + ("shop", failed[:6], "123", "confirm")[i % 4],
        "/healthz": lambda i: "/healthz",
    }
    times: dict[str, list[float]] = {name: [] for name in targets}
    with httpx.Client(base_url=url, timeout=30) as client:
        first = time.monotonic()
        while "Counts as of" not in client.get("/").text:  # the first count: 1M rows, once
            time.sleep(0.2)
        print(f"  first count ready after {time.monotonic() - first:.1f} s")
        end = time.monotonic() + SECONDS
        i = 0
        while time.monotonic() < end:
            for name, path in targets.items():
                started = time.perf_counter()
                answer = client.get(path(i))
                times[name].append(time.perf_counter() - started)
                if answer.status_code != 200:
                    raise RuntimeError(f"{path(i)} answered {answer.status_code}")
            i += 1
    results = {}
    for name, seconds in times.items():
        ordered = sorted(seconds)
        results[name] = {
            "median_ms": round(median(ordered) * 1000, 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2),
            "requests": len(ordered),
        }
        figures = results[name]
        print(
            f"  {name:<14} median {figures['median_ms']:7.2f} ms  p95 {figures['p95_ms']:7.2f} ms  "
            f"max {figures['max_ms']:7.1f} ms  ({len(ordered)} requests)"
        )
    return results


def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with Timer() as filling:
            filled = fill(folder / "connector.db")
        print(f"  {ROWS:,} rows written in {filling.seconds:.1f} s")
        with connector_run(folder, free_port()) as url:
            timings = measure(url, filled.pop("picks"))  # type: ignore[arg-type]
    ok = all(timings[name]["median_ms"] < 100 for name in ("/", "/records/{id}"))
    print(f"  target (median under 100 ms for / and /records/{{id}}): {'met' if ok else 'MISSED'}")
    return {"rows": ROWS, "fill_s": round(filling.seconds, 1), **filled, "timings": timings, "target_met": ok}


if __name__ == "__main__":
    run()

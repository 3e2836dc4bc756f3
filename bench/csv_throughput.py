"""Records per second from a 100,000-row CSV into dry_run: read + render + normalise + ledger.

Target: at least 10,000/s on the 2-core machine. Runs `connector once` in a subprocess, the way
cron would, and times only the pass (the interpreter's start-up is measured and subtracted).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import DRY_RUN, Timer, config_text, connector, median, write_orders

ROWS = 100_000


def run(rows: int = ROWS, repeats: int = 3) -> dict[str, float]:
    rates: list[float] = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            inbox = folder / "inbox"
            inbox.mkdir()
            (folder / "config.yaml").write_text(config_text(sink=DRY_RUN, inbox=inbox))
            with Timer() as startup:  # the same pass over an empty inbox: imports, ledger, scan
                connector("once", "-c", "config.yaml", cwd=folder)
            write_orders(inbox / "orders.csv", rows)
            with Timer() as timer:
                done = connector("once", "-c", "config.yaml", cwd=folder)
            if done.returncode != 0 or not (inbox / "processed" / "orders.results.csv").exists():
                raise RuntimeError(f"once failed: {done.stderr[-2000:]}")
            seconds = timer.seconds - startup.seconds
            rates.append(rows / seconds)
            print(f"  {rows} rows in {seconds:.2f}s: {rows / seconds:,.0f} records/s", flush=True)
    return {"rows": rows, "records_per_s_median": round(median(rates)), "target": 10_000}

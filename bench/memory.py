"""Peak memory (max RSS) of `connector once` on a 1,000,000-row CSV into dry_run. Target < 200 MB."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import DRY_RUN, ROOT, Timer, config_text, write_orders

ROWS = 1_000_000


def run(rows: int = ROWS) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inbox = folder / "inbox"
        inbox.mkdir()
        write_orders(inbox / "big.csv", rows)
        size_mb = (inbox / "big.csv").stat().st_size / 1e6
        (folder / "config.yaml").write_text(config_text(sink=DRY_RUN, inbox=inbox))
        # A fresh child whose max RSS is the only one RUSAGE_CHILDREN sees.
        command = [sys.executable, "-m", "connector", "once", "-c", "config.yaml"]
        code = (
            "import resource, subprocess, sys;"
            f"p = subprocess.run({command!r}, cwd={str(folder)!r});"
            "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        with Timer() as timer:
            out = subprocess.run(
                [sys.executable, "-c", code],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            )
        returncode, max_rss_kb = (int(x) for x in out.stdout.split())
        if returncode != 0:
            raise RuntimeError(f"once failed: {out.stderr[-2000:]}")
        results = inbox / "processed" / "big.results.csv"
        with results.open("rb") as handle:
            lines = sum(1 for _ in handle)
    peak_mb = max_rss_kb / 1024
    print(
        f"  {rows} rows ({size_mb:.0f} MB file) in {timer.seconds:.1f}s, peak RSS {peak_mb:.0f} MB, "
        f"{lines - 1} result rows",
        flush=True,
    )
    return {
        "rows": rows,
        "file_mb": round(size_mb),
        "peak_rss_mb": round(peak_mb),
        "seconds": round(timer.seconds, 1),
        "target_mb": 200,
    }

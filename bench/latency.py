"""Time from a CSV file landing in the watched folder to its first request at the RO emulator.

`connector run` with `settle: 500ms`; target under 1 s. The emulator runs in this process so the
arrival of each request can be timed against the moment the file was closed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, config_text, median, ro_sink, write_orders
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer

TOKEN = "bench-token"


def run(files: int = 7) -> dict[str, Any]:
    emulator = RoEmulator(token=TOKEN)
    delays: list[float] = []
    with EmulatorServer(emulator) as base, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inbox = folder / "inbox"
        inbox.mkdir()
        (folder / "config.yaml").write_text(
            config_text(sink=ro_sink(base + "/api/sms/", 8, TOKEN), inbox=inbox, settle="500ms")
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "-c", "config.yaml"],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(3)  # start-up is not what is measured
            for n in range(files):
                staged = folder / f"batch{n}.csv"
                # Numbers differ per file, or the ledger would rightly skip them as duplicates.
                write_orders(staged, 20, start=n * 100)
                before = len(emulator.requests)
                started = time.perf_counter()
                os.replace(staged, inbox / staged.name)
                while len(emulator.requests) == before:
                    if time.perf_counter() - started > 30:
                        raise RuntimeError("no request within 30 s")
                    time.sleep(0.001)
                delays.append(time.perf_counter() - started)
                print(f"  file {n}: first request after {delays[-1] * 1000:.0f} ms", flush=True)
                time.sleep(1.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            if proc.returncode != 0:
                print(err[-2000:])
    return {
        "settle_ms": 500,
        "first_request_ms_median": round(median(delays) * 1000),
        "first_request_ms_max": round(max(delays) * 1000),
        "target_ms": 1000,
    }

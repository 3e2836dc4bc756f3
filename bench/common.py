"""Shared set-up for the benchmarks: generated CSV files and configs in a temporary folder."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import free_port, ro_mobile, write_orders

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["free_port", "ro_mobile", "write_orders"]  # re-exported: one generator for tests and benchmarks


def config_text(
    *, sink: str, inbox: Path, settle: str = "0ms", key_column: str | None = None, extra_sink: str = ""
) -> str:
    return f"""
state: sqlite:///connector.db
log: {{format: json, level: warning}}
sinks:
  out:
{sink}
{extra_sink}
sources:
  erp:
    type: csv_folder
    path: {inbox}
    settle: {settle}
    key_column: {json.dumps(key_column)}
rules:
  - name: confirm
    source: erp
    when: "row['Status'] == 'Confirmed'"
    to: "{{{{ row['Phone'] }}}}"
    country: RO
    message: "Hi {{{{ row['Name'] }}}}, order {{{{ row['Order ID'] }}}} is confirmed."
    sink: out
"""


DRY_RUN = "    type: dry_run\n"


def ro_sink(url: str, concurrency: int, token: str = "bench-token") -> str:
    return (
        f"    type: robo_sms_ro\n    token: {token}\n    url: {url}\n    concurrency: {concurrency}\n"
        "    timeout: 10s\n"
    )


@contextmanager
def emulator_process(kind: str, latency: float, **options: str) -> Iterator[str]:
    """A provider emulator in its own process, so its CPU does not count against the client's."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "tests.emulators.server",
        kind,
        "--port",
        str(port),
        "--latency",
        str(latency),
    ]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", value]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"emulator did not start: {line!r}")
        yield line.split("listening on", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def connector(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        cwd=cwd,
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


class Timer:
    """Wall time, and the CPU time of the child processes that ended meanwhile (`cpu_seconds`):
    steadier than wall time on a busy machine, for comparing two configurations' cost."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.cpu_start = _children_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = _children_cpu() - self.cpu_start


def wait_healthy(url: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the connector did not start serving")
        time.sleep(0.1)

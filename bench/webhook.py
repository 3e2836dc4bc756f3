"""The 202's latency under signed webhook load while sends back up behind the ledger (issues 4, 7).

One run measures, at 200/s and at 500/s of Standard Webhooks signed deliveries for 12 s:
  - baseline: `bench.webhook_baseline`, the same Starlette/uvicorn stack and signature check with
    no ledger and no sends, the yardstick for what the machine and the stack allow;
  - connector: `connector run` with that webhook source into the RO sink, whose emulator answers
    in 200 ms. Sink concurrency 8 sends 40/s, far below what is offered, so thousands of messages
    are queued by the end (reported: accepted minus what the emulator took).
Each server, the emulator and the open-loop generator (`bench.webhook_load`) run in processes of
their own. Target: the connector's p99 under 50 ms and within 3x the baseline's, at both rates.

`python -m bench.webhook --help` for one-off runs: other rates, a busy machine (`--busy 1` keeps
one core spinning, as on the "mildly busy" machine of issue 7), or a py-spy profile of the
connector under the load. `BENCH_WEBHOOK_BUSY=1 make bench` does the same for `make bench`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, emulator_process, free_port, wait_healthy

SECRET = "whsec_" + base64.b64encode(b"bench secret of thirty-two bytes").decode()
PATH = "/hooks/shop"
RO_TOKEN = "bench-token"
RATES = (200.0, 500.0)
SECONDS = 12.0
CONCURRENCY = 8  # x 5/s at 200 ms = 40 sends/s: the queue grows by (rate - 40)/s
PROVIDER_S = 0.2
WARMUP = 100
TARGET_P99_MS = 50.0
TARGET_TIMES_BASELINE = 3.0


def _config(port: int, ro_url: str, concurrency: int) -> str:
    return f"""
state: sqlite:///connector.db
server: {{host: 127.0.0.1, port: {port}}}
log: {{format: json, level: warning}}
sinks:
  ro:
    type: robo_sms_ro
    token: {RO_TOKEN}
    url: {ro_url}/api/sms/
    concurrency: {concurrency}
    timeout: 10s
sources:
  shop:
    type: webhook
    path: {PATH}
    secret: {SECRET}
rules:
  - name: order
    source: shop
    to: "{{{{ row['phone'] }}}}"
    message: "Hi {{{{ row['name'] }}}}, order {{{{ row['order'] }}}} is on its way."
    sink: ro
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux), to show how busy the server was; 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (Linux), to show how busy it was."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


def _stop(proc: subprocess.Popen[str]) -> None:
    # A connector with thousands queued would drain them on the first SIGTERM; the second one
    # makes it exit without waiting. The ledger of a benchmark is thrown away anyway.
    for _ in range(2):
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def baseline_server() -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.webhook_baseline", "--secret", SECRET, "--path", PATH],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"the baseline server did not start: {line!r}")
        yield line.split("listening on", 1)[1].strip(), proc.pid
    finally:
        _stop(proc)


@contextlib.contextmanager
def connector_server(folder: Path, ro_url: str, concurrency: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    (folder / "config.yaml").write_text(_config(port, ro_url, concurrency))
    with (folder / "connector.log").open("w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "-c", "config.yaml"],
            cwd=folder,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=errors,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            yield url, proc.pid
        finally:
            _stop(proc)


def _load(url: str, rate: float, seconds: float, warmup: int, timeline: Path | None) -> dict[str, Any]:
    extra = ["--timeline", str(timeline)] if timeline is not None else []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.webhook_load",
            url + PATH,
            SECRET,
            str(rate),
            str(seconds),
            "--warmup",
            str(warmup),
            *extra,
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@dataclass(frozen=True)
class Probes:
    """What a one-off run may add: a py-spy profile of the connector, per-request timelines."""

    py_spy: str | None = None  # path of py-spy
    py_spy_args: str = ""  # extra `py-spy record` arguments, e.g. "--gil" or "--idle --threads"
    out: Path | None = None  # folder for profiles and timelines

    def path(self, name: str) -> Path | None:
        if self.out is None:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / name


@contextlib.contextmanager
def _profiler(probes: Probes, pid: int, seconds: float, out: Path | None) -> Iterator[None]:
    if not probes.py_spy or out is None:
        yield
        return
    args = [
        probes.py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds + 1)),
        "--format",
        "raw",
        "-o",
        str(out),
        *shlex.split(probes.py_spy_args),
    ]
    if "--native" not in args:  # py-spy reads native stacks only by pausing the process
        args.append("--nonblocking")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.wait(timeout=60)


def measure(
    server: str,
    rate: float,
    seconds: float,
    concurrency: int,
    probes: Probes = Probes(),
    warmup: int = WARMUP,
) -> dict[str, Any]:
    """One server at one rate; the generator's figures plus the server's CPU and the queue."""
    name = f"{server}-{rate:.0f}"
    with contextlib.ExitStack() as stack:
        log: Path | None = None
        if server == "baseline":
            url, pid = stack.enter_context(baseline_server())
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            log = folder / "emulator.jsonl"
            log.touch()
            ro_url = stack.enter_context(emulator_process("ro", PROVIDER_S, token=RO_TOKEN, log=str(log)))
            url, pid = stack.enter_context(connector_server(folder, ro_url, concurrency))
        cpu_before, wall_before, ticks_before = _cpu_seconds(pid), time.perf_counter(), _machine_ticks()
        profile = probes.path(f"{name}.pyspy.txt") if server == "connector" else None
        with _profiler(probes, pid, seconds, profile):
            result = _load(url, rate, seconds, warmup, probes.path(f"{name}.timeline.txt"))
        result["server_cpu_share"] = round(
            (_cpu_seconds(pid) - cpu_before) / (time.perf_counter() - wall_before), 2
        )
        busy, total = (after - before for after, before in zip(_machine_ticks(), ticks_before, strict=True))
        # In cores: everything running on the machine meanwhile, this benchmark's processes included.
        result["machine_busy_cores"] = round((os.cpu_count() or 1) * busy / total, 2) if total else -1.0
        if log is not None:
            sent = sum(1 for _ in log.open())
            result["sent_at_provider"] = sent
            result["queued"] = result["accepted_202"] + result["warmup_accepted"] - sent
            # Anything the connector logged at error level means the figures need a second look.
            result["connector_errors"] = (log.parent / "connector.log").read_text().count('"level": "error"')
    result.update({"server": server, "rate": rate})
    return result


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """`count` processes spinning on the CPU: the "mildly busy" machine."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


def _line(r: dict[str, Any]) -> str:
    queued = f"{r['queued']:>6}" if "queued" in r else "     -"
    errors = sum(r["errors"].values()) + sum(r["other_statuses"].values())
    return (
        f"  {r['server']:<9} {r['rate']:>4.0f}/s  offered {r['offered_per_s']:>5.0f}/s  "
        f"202s {r['accepted_202']:>5}  p50 {r['p50_ms']:>7.1f}  p99 {r['p99_ms']:>7.1f}  "
        f"max {r['max_ms']:>7.1f} ms  queued {queued}  not-202 {errors}  "
        f"cpu: server {r['server_cpu_share']:.2f} gen {r['generator_cpu_share']:.2f} "
        f"machine {r['machine_busy_cores']:.2f}  gen late p99 {r['late_p99_ms']:.1f} ms"
    )


def run(
    rates: tuple[float, ...] = RATES,
    seconds: float = SECONDS,
    concurrency: int = CONCURRENCY,
    busy: int | None = None,
    servers: tuple[str, ...] = ("baseline", "connector"),
    probes: Probes = Probes(),
) -> dict[str, Any]:
    busy = int(os.environ.get("BENCH_WEBHOOK_BUSY", "0")) if busy is None else busy
    print(
        f"  {seconds:g} s per run, provider {PROVIDER_S * 1000:.0f} ms, sink concurrency {concurrency} "
        f"({concurrency / PROVIDER_S:.0f} sends/s), {busy} busy core(s)",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    with busy_cores(busy):
        for rate in rates:
            for server in servers:
                result = measure(server, rate, seconds, concurrency, probes)
                runs.append(result)
                print(_line(result), flush=True)
    for r in runs:
        # An open-loop generator that cannot keep its schedule measures itself, not the server.
        if r["offered_per_s"] < 0.97 * r["rate"] or r["late_p99_ms"] > 20:
            print(
                f"  WARNING: the generator fell behind its schedule in {r['server']} at {r['rate']:.0f}/s "
                f"(late p99 {r['late_p99_ms']} ms): the machine is too busy for a fair figure",
                flush=True,
            )
        if r.get("connector_errors"):
            print(
                f"  WARNING: the connector logged {r['connector_errors']} error(s) at {r['rate']:.0f}/s",
                flush=True,
            )
    verdicts = {}
    for rate in rates:
        by = {r["server"]: r for r in runs if r["rate"] == rate}
        if "connector" in by and "baseline" in by:
            p99, base = by["connector"]["p99_ms"], by["baseline"]["p99_ms"]
            ok = 0 < p99 < TARGET_P99_MS and p99 <= TARGET_TIMES_BASELINE * base
            verdicts[f"{rate:.0f}"] = {"connector_p99_ms": p99, "baseline_p99_ms": base, "meets_target": ok}
            print(
                f"  {rate:.0f}/s: connector p99 {p99} ms vs baseline {base} ms "
                f"({p99 / base if base > 0 else float('inf'):.1f}x): "
                f"{'meets' if ok else 'MISSES'} the target (< {TARGET_P99_MS:g} ms and <= 3x)",
                flush=True,
            )
    return {
        "provider_latency_ms": PROVIDER_S * 1000,
        "sink_concurrency": concurrency,
        "seconds": seconds,
        "busy_cores": busy,
        "target": f"p99 < {TARGET_P99_MS:g} ms and <= {TARGET_TIMES_BASELINE:g}x baseline p99, every rate",
        "verdicts": verdicts,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook")
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES))
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--busy", type=int, default=None, help="cores kept spinning meanwhile")
    parser.add_argument("--only", choices=["baseline", "connector"], default=None)
    parser.add_argument("--py-spy", default=None, help="path of py-spy: profile the connector under load")
    parser.add_argument("--py-spy-args", default="", help='extra py-spy record args, e.g. "--gil --threads"')
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for profiles and per-request timelines"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    servers = (args.only,) if args.only else ("baseline", "connector")
    result = run(
        tuple(float(r) for r in args.rates.split(",")),
        args.seconds,
        args.concurrency,
        args.busy,
        servers,
        Probes(args.py_spy, args.py_spy_args, args.out),
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

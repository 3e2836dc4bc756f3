"""SPEC "Several processes and instances" on one host: real `connector` processes sharing one SQLite
ledger and one inbox, as cron jobs, rolling restarts and paused VMs make them. Whatever the
overlap, the provider emulator sees each number at most once, and every row ends with a status."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.helpers import TOKEN, read_results, ro_config, start_connector, wait_for, write_orders

pytestmark = pytest.mark.slow


def drop(folder: Path, name: str, rows: int, start: int) -> None:
    staged = write_orders(folder / f".{name}", rows, start=start)
    os.replace(staged, folder / "inbox" / name)


def ledger_states(folder: Path) -> Counter[str]:
    with sqlite3.connect(folder / "connector.db") as db:
        return Counter(state for (state,) in db.execute("SELECT state FROM sends"))


def results(folder: Path) -> dict[str, str]:
    """Phone -> status, over every results file."""
    found: dict[str, str] = {}
    for path in sorted((folder / "inbox" / "processed").glob("*.results.csv")):
        for row in read_results(path):
            found[row["Phone"]] = row["SMS Status"]
    return found


def all_sent(folder: Path, rows: int) -> bool:
    statuses = results(folder)
    return len(statuses) == rows and all(s.startswith("sent ") for s in statuses.values())


def settled(folder: Path, rows: int) -> bool:
    statuses = results(folder)
    return len(statuses) == rows and all(s.split()[0] in ("sent", "unknown:") for s in statuses.values())


def once_twice(folder: Path, log: Path) -> list[subprocess.Popen[bytes]]:
    return [start_connector("once", "-c", "config.yaml", cwd=folder, log=log) for _ in range(2)]


def test_two_overlapping_once_send_each_message_once(tmp_path: Path) -> None:
    emulator = RoEmulator(token=TOKEN, latency=0.02)
    with EmulatorServer(emulator) as url:
        ro_config(tmp_path, url, settle="100ms", concurrency=8)
        for n in range(4):
            drop(tmp_path, f"orders-{n}.csv", 50, start=n * 50)
        time.sleep(0.2)  # settled for both
        log = tmp_path / "connector.log"
        for process in once_twice(tmp_path, log):
            assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    sent_to = Counter(m["to"] for m in emulator.accepted)
    assert len(sent_to) == 200 and max(sent_to.values()) == 1, "a number was sent twice"
    statuses = results(tmp_path)
    assert len(statuses) == 200 and all(s.startswith("sent ") for s in statuses.values()), statuses
    assert not list((tmp_path / "inbox").glob("*.csv")), "a file was left in the inbox"
    assert "unknown" not in ledger_states(tmp_path)


def test_once_beside_a_running_connector_touches_none_of_its_sends(tmp_path: Path) -> None:
    emulator = RoEmulator(token=TOKEN, latency=0.3)
    with EmulatorServer(emulator) as url:
        ro_config(tmp_path, url, settle="100ms", concurrency=4)
        log = tmp_path / "connector.log"
        running = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        try:
            drop(tmp_path, "big.csv", 40, start=0)
            wait_for(lambda: len(emulator.accepted) >= 4, what="the running connector sending")
            drop(tmp_path, "small.csv", 10, start=1000)
            time.sleep(0.2)
            cron = start_connector("once", "-c", "config.yaml", cwd=tmp_path, log=log)
            assert cron.wait(timeout=60) == 0, log.read_text()[-3000:]
            wait_for(lambda: len(results(tmp_path)) == 50, timeout=60, what="both files' results")
        finally:
            running.send_signal(signal.SIGTERM)
            assert running.wait(timeout=30) == 0
    sent_to = Counter(m["to"] for m in emulator.accepted)
    assert len(sent_to) == 50 and max(sent_to.values()) == 1
    assert all(s.startswith("sent ") for s in results(tmp_path).values())
    assert ledger_states(tmp_path) == Counter({"sent": 50}), "the cron job turned live sends unknown"


def test_a_new_process_starting_while_the_old_one_drains(tmp_path: Path) -> None:
    """A rolling restart: the old process has requests waiting on a slow provider when the new one
    starts; the old one's sends end `sent` (not `unknown`), the new one sends the rest, once."""
    emulator = RoEmulator(token=TOKEN, latency=1.0)
    with EmulatorServer(emulator) as url:
        ro_config(tmp_path, url, settle="100ms", concurrency=4, extra="shutdown_grace: 5s\n")
        log = tmp_path / "connector.log"
        old = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        new: subprocess.Popen[bytes] | None = None
        try:
            drop(tmp_path, "orders.csv", 30, start=0)
            wait_for(lambda: len(emulator.requests) >= 4, what="four requests on the wire")
            new = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
            time.sleep(1.5)  # the new one is up, recovering and sweeping, beside the old one
            old.send_signal(signal.SIGTERM)
            assert old.wait(timeout=15) == 0
            wait_for(
                lambda: all_sent(tmp_path, 30), timeout=90, what="every row sent, the rest by the new process"
            )
        finally:
            for process in (old, new):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=30)
    sent_to = Counter(m["to"] for m in emulator.accepted)
    assert len(sent_to) == 30 and max(sent_to.values()) == 1
    assert ledger_states(tmp_path) == Counter({"sent": 30})
    assert all(s.startswith("sent ") for s in results(tmp_path).values())


def test_a_process_paused_past_its_lease_sends_nothing_more(tmp_path: Path) -> None:
    """SIGSTOP past the lease (a GC pause, a stopped VM), then SIGCONT: the other instance took its
    file and its messages meanwhile; the paused one sends none of them when it wakes."""
    emulator = RoEmulator(token=TOKEN, latency=0.2)
    with EmulatorServer(emulator) as url:
        ro_config(
            tmp_path,
            url,
            settle="100ms",
            concurrency=2,
            extra="instance: {lease: 2s}\nshutdown_grace: 3s\n",
        )
        config = tmp_path / "config.yaml"
        config.write_text(
            config.read_text().replace("    settle: 100ms\n", "    settle: 100ms\n    rescan: 1s\n")
        )
        log = tmp_path / "connector.log"
        paused = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        other: subprocess.Popen[bytes] | None = None
        try:
            wait_for(lambda: "connector running" in log.read_text(), what="the first instance")
            drop(tmp_path, "orders.csv", 60, start=0)
            wait_for(lambda: len(emulator.requests) >= 6, what="the first instance sending")
            paused.send_signal(signal.SIGSTOP)
            at_pause = len(emulator.accepted)
            other = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
            try:
                wait_for(lambda: settled(tmp_path, 60), timeout=20, what="the other instance finishing")
            except AssertionError:
                # Frozen inside a write transaction, it holds SQLite's write lock, which no other
                # process can take: the other waits (it does not fail) until the frozen one wakes.
                assert other.poll() is None, "the other instance gave up instead of waiting"
                paused.send_signal(signal.SIGCONT)
                wait_for(lambda: settled(tmp_path, 60), timeout=90, what="the other instance finishing")
            paused.send_signal(signal.SIGCONT)
            time.sleep(3)  # it wakes, finds its lease lost, and must send nothing of what it held
        finally:
            paused.send_signal(signal.SIGCONT)
            for process in (paused, other):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=30)
    sent_to = Counter(m["to"] for m in emulator.accepted)
    assert max(sent_to.values()) == 1, "a number was sent twice"
    states = ledger_states(tmp_path)
    assert states["unknown"] <= 2, "only what was on the wire at the pause may be unknown"
    assert states["sent"] + states["unknown"] == 60 and states["sent"] >= 58
    assert at_pause < 60 and "lease lost" in log.read_text()
    assert all(s.split()[0] in ("sent", "unknown:") for s in results(tmp_path).values())

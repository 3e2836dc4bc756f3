"""kill -9 in the middle of thousands of sends, then a restart: nothing twice, every row a status."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.helpers import TOKEN, read_results, ro_config, start_connector, wait_for, write_orders

pytestmark = pytest.mark.slow

ROWS = 3000


def test_kill_9_mid_batch_then_restart_sends_nothing_twice(tmp_path: Path) -> None:
    # Latency keeps requests in flight at the moment of the kill: the ambiguous case that matters.
    emulator = RoEmulator(token=TOKEN, latency=0.01)
    with EmulatorServer(emulator) as url:
        ro_config(tmp_path, url, settle="200ms", concurrency=16)
        staged = write_orders(tmp_path / "orders.csv", ROWS)
        os.replace(staged, tmp_path / "inbox" / "orders.csv")
        log = tmp_path / "connector.log"

        first = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        try:
            wait_for(lambda: len(emulator.accepted) >= ROWS // 3, what="a third of the sends")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        accepted_at_kill = len(emulator.accepted)
        assert accepted_at_kill < ROWS, "the kill came too late to test anything"

        second = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        results_file = tmp_path / "inbox" / "processed" / "orders.results.csv"
        try:
            wait_for(results_file.exists, timeout=120, what="the results file after restart")
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0

    sent_to = Counter(m["to"] for m in emulator.accepted)
    assert max(sent_to.values()) == 1, "a number was sent twice"
    rows = read_results(results_file)
    assert len(rows) == ROWS
    states = Counter(r["SMS Status"].split()[0] for r in rows)
    assert set(states) <= {"sent", "unknown:"}, states
    assert all(r["SMS Status"] for r in rows)
    # Everything the emulator took is either reported sent or honestly unknown, never lost.
    sent_numbers = {"+40" + r["Phone"][1:] for r in rows if r["SMS Status"].startswith("sent ")}
    assert sent_numbers <= set(sent_to)
    assert states["sent"] + states["unknown:"] == ROWS
    assert len(sent_to) >= states["sent"]
    assert states["unknown:"] <= 16, "only requests in flight at the kill may be unknown"
    assert not (tmp_path / "inbox" / "orders.csv").exists()

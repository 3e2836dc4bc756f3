"""A provider that refuses the account at the start (Robo SMS Pakistan's check-balance says the key is
wrong): every due record says so in its status, `run` keeps running with the sink paused and asks
the provider again with a growing back-off, and the held messages go once the account works."""

from __future__ import annotations

import asyncio
import csv
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from connector.config_loader import load_config
from connector.runtime import Runtime
from tests.emulators.robo_pk import PkEmulator
from tests.emulators.server import EmulatorServer
from tests.helpers import free_port, pk_config, start_connector, wait_for

KEY = "pk-right-key-0123"
REFUSED = "pending: sink pk paused: invalid API key (code 203)"


def write_config(folder: Path, url: str, key: str, port: int = 0) -> Path:
    return pk_config(folder, url, key, port=port)


def drop(folder: Path) -> Path:
    staged = folder / "promo.csv"
    staged.write_text("Phone\n03001234567\n0300 765 4321\n")
    staged.replace(folder / "inbox" / "promo.csv")
    return folder / "inbox" / "processed" / "promo.results.csv"


def statuses(results: Path) -> list[str]:
    if not results.exists():
        return []
    with results.open(encoding="utf-8-sig", newline="") as handle:
        return [row["SMS Status"] for row in csv.DictReader(handle)]


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def sends(emulator: PkEmulator) -> int:
    return sum(1 for r in emulator.requests if r["path"] == "/api/send-message")


def balance_checks(emulator: PkEmulator) -> int:
    return sum(1 for r in emulator.requests if r["path"] == "/api/check-balance")


async def test_run_keeps_the_sink_paused_rechecks_with_back_off_and_sends_once_lifted(tmp_path: Path) -> None:
    emulator = PkEmulator(email="ops@example.com", key=KEY, suspended=True)
    suspended = "pending: sink pk paused: account suspended or blocked (code 206)"
    with EmulatorServer(emulator) as url:
        runtime = await Runtime.open(load_config(write_config(tmp_path, url, KEY)))
        running: asyncio.Task[None] | None = None
        try:
            assert await runtime.verify_sinks() == ["pk"]
            running = asyncio.create_task(runtime.run())
            results = drop(tmp_path)
            await until(lambda: statuses(results) == [suspended, suspended])
            assert sends(emulator) == 0
            assert runtime.server is not None
            async with httpx.AsyncClient() as client:
                health = (await client.get(f"http://127.0.0.1:{runtime.server.port}/healthz")).json()
            assert health["sinks"]["pk"] == {
                "state": "paused",
                "reason": "account suspended or blocked (code 206)",
            }
            assert not running.done()  # a refused account is news for people, not a reason to exit

            sink = runtime.sinks["pk"]
            sink.paused_until = 0.0  # the pause is over: the next retry round asks the provider again
            checks = balance_checks(emulator)
            before = time.monotonic()
            await runtime.retry_held()
            assert balance_checks(emulator) == checks + 1 and sends(emulator) == 0
            assert sink.paused_until - before > 1.5 * sink.first_pause  # asked again later than before

            emulator.suspended = False  # the provider lifts the suspension
            sink.paused_until = 0.0
            await runtime.retry_held()
            assert not sink.paused and sink.pause_reason == ""
            await until(lambda: all(s.startswith("sent ") for s in statuses(results)))
            assert sends(emulator) == 1  # one bulk request for both numbers
        finally:
            runtime.stopping.set()
            if running is not None:
                await running
            await runtime.close()
    assert sorted(m["to"] for m in emulator.accepted) == ["923001234567", "923007654321"]


@pytest.mark.slow
def test_connector_run_does_not_exit_on_a_refused_account(tmp_path: Path) -> None:
    emulator = PkEmulator(email="ops@example.com", key=KEY)
    port = free_port()
    with EmulatorServer(emulator) as url:
        write_config(tmp_path, url, "wrong-key", port)
        log = tmp_path / "run.log"
        process = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        try:
            results = drop(tmp_path)
            wait_for(lambda: statuses(results) == [REFUSED, REFUSED], what="the pending statuses")
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
            assert health["sinks"]["pk"]["state"] == "paused"
            assert process.poll() is None
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
    assert "wrong-key" not in log.read_text()
    assert sends(emulator) == 0

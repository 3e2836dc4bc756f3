"""SPEC "Stopping", as a container platform does it: SIGTERM to a real `connector run` with a backlog
behind a slow provider. It exits within `shutdown_grace`, whatever the backlog; a restart sends every
message exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from sinks.base import STOPPED
from sinks.http import ABORTED
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.helpers import (
    TOKEN,
    connector,
    free_port,
    read_results,
    ro_config,
    start_connector,
    wait_for,
    write_orders,
)

pytestmark = pytest.mark.slow

GRACE = 3.0
EXIT_SLACK = 5.0  # start-up of the interpreter's exit, the last status writes: far below any backlog


def states(folder: Path) -> Counter[tuple[str, str]]:
    with sqlite3.connect(folder / "connector.db") as db:
        rows = db.execute("SELECT state, detail FROM sends").fetchall()
    return Counter((state, detail if state in ("pending", "unknown") else "") for state, detail in rows)


def sigterm(process: subprocess.Popen[bytes]) -> float:
    """SIGTERM, then seconds until it exited; it must have exited 0 within the grace (plus slack)."""
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=GRACE + EXIT_SLACK)
    assert code == 0
    return time.monotonic() - began


def test_a_csv_backlog_is_left_pending_and_sent_once_by_the_next_start(tmp_path: Path) -> None:
    rows = 300  # at 4 in flight and 0.5 s each, sending them all would take 38 s
    emulator = RoEmulator(token=TOKEN, latency=0.5)
    with EmulatorServer(emulator) as url:
        ro_config(tmp_path, url, concurrency=4, extra=f"shutdown_grace: {GRACE:g}s\n")
        staged = write_orders(tmp_path / "orders.csv", rows)
        os.replace(staged, tmp_path / "inbox" / "orders.csv")
        log = tmp_path / "connector.log"
        process = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        try:
            wait_for(lambda: len(emulator.accepted) >= 8, what="the first sends")
        finally:
            sigterm(process)
        taken = len(emulator.accepted)
        assert taken < rows
        # Nothing was on the wire unanswered: what the provider took is sent, the rest waits.
        assert states(tmp_path) == Counter({("sent", ""): taken, ("pending", STOPPED): rows - taken})
        # Every row has a status: the file is finished, what waits says so and why.
        results_file = tmp_path / "inbox" / "processed" / "orders.results.csv"
        first = Counter(r["SMS Status"].split(" ", 1)[0] for r in read_results(results_file))
        assert first == Counter({"sent": taken, "pending:": rows - taken})
        assert {r["SMS Status"] for r in read_results(results_file) if r["SMS Status"].startswith("p")} == {
            f"pending: {STOPPED}"
        }

        emulator.latency = 0.0
        again = connector("once", "-c", "config.yaml", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
    assert len(emulator.accepted) == rows
    assert max(Counter(m["to"] for m in emulator.accepted).values()) == 1
    results = read_results(results_file)  # rewritten as the held messages went
    assert len(results) == rows and all(r["SMS Status"].startswith("sent ") for r in results)
    assert "stopping: taking no new work" in log.read_text()


def test_a_request_unanswered_when_the_grace_ends_is_unknown_and_never_resent(tmp_path: Path) -> None:
    rows = 20
    emulator = RoEmulator(token=TOKEN, latency=60.0)  # takes each message, answers a minute later
    with EmulatorServer(emulator) as url:
        ro_config(tmp_path, url, concurrency=3, extra=f"shutdown_grace: {GRACE:g}s\n")
        staged = write_orders(tmp_path / "orders.csv", rows)
        os.replace(staged, tmp_path / "inbox" / "orders.csv")
        process = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=tmp_path / "run.log")
        try:
            wait_for(lambda: len(emulator.accepted) == 3, what="three requests on the wire")
        finally:
            took = sigterm(process)
        assert took >= GRACE - 0.5  # the requests on the wire were given their grace
        assert states(tmp_path) == Counter({("unknown", ABORTED): 3, ("pending", STOPPED): rows - 3})

        emulator.latency = 0.0
        again = connector("once", "-c", "config.yaml", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
    assert len(emulator.accepted) == rows  # the three unknown ones were not sent again
    assert max(Counter(m["to"] for m in emulator.accepted).values()) == 1
    statuses = Counter(
        r["SMS Status"].split()[0]
        for r in read_results(tmp_path / "inbox" / "processed" / "orders.results.csv")
    )
    assert statuses == Counter({"sent": rows - 3, "unknown:": 3})


WEBHOOK = """
server: {{host: 127.0.0.1, port: {port}}}
sources:
  shop:
    type: webhook
    path: /hooks/shop
    token: hook-token-0123456789
rules:
  - name: shipped
    source: shop
    to: "{{{{ row['phone'] }}}}"
    country: RO
    message: "Order {{{{ row['order'] }}}} is on its way."
    sink: ro
"""


def webhook_config(folder: Path, url: str, port: int) -> None:
    ro_config(folder, url, concurrency=4, extra=f"shutdown_grace: {GRACE:g}s\n")
    text = (folder / "config.yaml").read_text()
    head = text[: text.index("sources:")]
    (folder / "config.yaml").write_text(head + WEBHOOK.format(port=port))


async def deliver(base: str, count: int) -> list[int]:
    headers = {"Authorization": "Bearer hook-token-0123456789"}
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:

        async def one(i: int) -> int:
            body = {"order": f"W-{i}", "phone": f"07{40 + i % 10}{i:06d}"}
            return (await client.post(f"{base}/hooks/shop", json=body, headers=headers)).status_code

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def test_webhook_deliveries_queued_at_sigterm_are_sent_once_after_a_restart(tmp_path: Path) -> None:
    deliveries = 400
    emulator = RoEmulator(token=TOKEN, latency=0.5)
    port = free_port()
    with EmulatorServer(emulator) as url:
        webhook_config(tmp_path, url, port)
        process = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=tmp_path / "run.log")
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _healthy(base), what="the server")
            answers = asyncio.run(deliver(base, deliveries))
            assert answers == [202] * deliveries
        finally:
            sigterm(process)
        taken = len(emulator.accepted)
        assert taken < deliveries / 4  # a real backlog was left
        assert states(tmp_path) == Counter({("sent", ""): taken, ("pending", STOPPED): deliveries - taken})

        emulator.latency = 0.0
        again = connector("once", "-c", "config.yaml", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
    assert len(emulator.accepted) == deliveries
    assert max(Counter(m["to"] for m in emulator.accepted).values()) == 1
    assert states(tmp_path) == Counter({("sent", ""): deliveries})


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_sigterm_stops_a_once_pass_the_same_way(tmp_path: Path) -> None:
    rows = 200
    emulator = RoEmulator(token=TOKEN, latency=0.5)
    with EmulatorServer(emulator) as url:
        ro_config(tmp_path, url, settle="0ms", concurrency=4, extra=f"shutdown_grace: {GRACE:g}s\n")
        write_orders(tmp_path / "inbox" / "orders.csv", rows)
        process = start_connector("once", "-c", "config.yaml", cwd=tmp_path, log=tmp_path / "once.log")
        try:
            wait_for(lambda: len(emulator.accepted) >= 4, what="the first sends")
        finally:
            sigterm(process)
        taken = len(emulator.accepted)
        assert states(tmp_path) == Counter({("sent", ""): taken, ("pending", STOPPED): rows - taken})
        emulator.latency = 0.0
        again = connector("once", "-c", "config.yaml", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
    assert len(emulator.accepted) == rows
    assert max(Counter(m["to"] for m in emulator.accepted).values()) == 1

"""The README's promises, run as a new user would: the default config, the example file, the commands."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, connector, read_results, start_connector, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The default config and the example beside it, as in a fresh clone."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def test_readme_shows_the_two_setup_commands_and_make_knows_them() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    dry = subprocess.run(["make", "-n", "run", "test"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "-m venv .venv" in dry.stdout or (ROOT / ".venv").exists()
    assert "connector run -c config.yaml" in dry.stdout
    assert "pytest" in dry.stdout
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_default_config_checks_without_credentials(checkout: Path) -> None:
    done = connector("check", "-c", "config.yaml", cwd=checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "config is valid" in done.stdout


def test_example_file_through_once_gives_the_documented_statuses(checkout: Path) -> None:
    (checkout / "inbox").mkdir()
    shutil.copy(checkout / "examples" / "orders.csv", checkout / "inbox" / "orders.csv")
    os.utime(checkout / "inbox" / "orders.csv", (0, 0))  # long settled
    done = connector("once", "-c", "config.yaml", cwd=checkout)
    assert done.returncode == 0, done.stderr
    rows = {
        r["Order ID"]: r["SMS Status"]
        for r in read_results(checkout / "inbox" / "processed" / "orders.results.csv")
    }
    assert rows["A-1001"].startswith("sent ") and rows["A-1002"].startswith("sent ")
    assert rows["A-1003"] == ""  # Cancelled: the rule's `when` is false, no status
    assert rows["A-1004"].startswith("failed: ") and "fixed-line" in rows["A-1004"]
    assert rows["A-1005"].startswith("failed: ")
    outbox = (checkout / "outbox.jsonl").read_text().splitlines()
    assert len(outbox) == 2 and "+40740123456" in outbox[0]


def test_run_takes_a_dropped_file_serves_healthz_and_stops_cleanly_on_sigterm(checkout: Path) -> None:
    config = checkout / "config.yaml"
    assert "port: 8080" in config.read_text()
    port = free_port()  # the default config as shipped, on a port no other test run holds
    config.write_text(config.read_text().replace("port: 8080", f"port: {port}"))
    proc = start_connector("run", "-c", "config.yaml", cwd=checkout, log=checkout / "run.log")
    try:
        wait_for((checkout / "inbox").exists, timeout=30, what="the inbox folder")
        wait_for(lambda: _healthy(port), timeout=30, what="/healthz on localhost")
        shutil.copy(checkout / "examples" / "orders.csv", checkout / "inbox" / "orders.csv")
        wait_for(
            (checkout / "inbox" / "processed" / "orders.results.csv").exists,
            timeout=30,
            what="the results file",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, (checkout / "run.log").read_text()
    assert (checkout / "inbox" / "processed" / "orders.csv").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.json()["sinks"]["outbox"]["state"] == "active"

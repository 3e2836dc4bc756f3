"""The whole product as a user runs it: `connector once` subprocesses against the RO emulator."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests import helpers
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.helpers import TOKEN, connector, read_results, ro_config, write_orders

pytestmark = pytest.mark.slow


@pytest.fixture
def emulator() -> RoEmulator:
    return RoEmulator(token=TOKEN)


@pytest.fixture
def url(emulator: RoEmulator) -> str:
    with EmulatorServer(emulator) as base:
        yield base


def test_exactly_once_across_two_runs_and_a_redropped_file(
    tmp_path: Path, emulator: RoEmulator, url: str
) -> None:
    ro_config(tmp_path, url, settle="0ms")
    inbox = tmp_path / "inbox"
    original = write_orders(tmp_path / "orders.csv", 50)
    shutil.copy(original, inbox / "orders.csv")

    first = connector("once", "-c", "config.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    results = read_results(inbox / "processed" / "orders.results.csv")
    assert len(results) == 50 and all(r["SMS Status"].startswith("sent ") for r in results)
    assert (inbox / "processed" / "orders.csv").read_bytes() == original.read_bytes()
    assert not (inbox / "orders.csv").exists()
    assert len(emulator.accepted) == 50

    second = connector("once", "-c", "config.yaml", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert len(emulator.accepted) == 50

    shutil.copy(original, inbox / "orders.csv")  # the ERP drops the same export again
    third = connector("once", "-c", "config.yaml", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    again = sorted((inbox / "processed").glob("orders-*.results.csv"))
    assert len(again) == 1
    assert all(r["SMS Status"].startswith("skipped: duplicate") for r in read_results(again[0]))
    assert len(emulator.accepted) == 50
    assert max(Counter(m["to"] for m in emulator.accepted).values()) == 1
    assert TOKEN not in first.stderr + second.stderr + third.stderr


def test_wrong_token_holds_rows_pending_and_a_later_run_sends_them(
    tmp_path: Path, emulator: RoEmulator, url: str
) -> None:
    ro_config(tmp_path, url, settle="0ms")
    write_orders(tmp_path / "inbox" / "orders.csv", 5)
    emulator.token = "rotated-by-the-provider"

    held = connector("once", "-c", "config.yaml", cwd=tmp_path)
    assert held.returncode == 0, held.stderr
    results_file = tmp_path / "inbox" / "processed" / "orders.results.csv"
    assert all(
        r["SMS Status"].startswith("pending: sink ro paused: wrong token (HTTP 401)")
        for r in read_results(results_file)
    )
    assert "sink paused" in held.stderr
    assert emulator.accepted == []

    emulator.token = TOKEN  # the team fixes the account
    sent = connector("once", "-c", "config.yaml", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert len(emulator.accepted) == 5
    assert all(r["SMS Status"].startswith("sent ") for r in read_results(results_file))


def test_status_and_check_commands(tmp_path: Path, emulator: RoEmulator, url: str) -> None:
    ro_config(tmp_path, url, settle="0ms")
    write_orders(tmp_path / "inbox" / "orders.csv", 3)
    (tmp_path / "inbox" / "orders.csv").write_text(
        (tmp_path / "inbox" / "orders.csv").read_text().replace("0740000001", "0212345678")
    )
    assert connector("once", "-c", "config.yaml", cwd=tmp_path).returncode == 0
    status = connector("status", "-c", "config.yaml", cwd=tmp_path)
    assert status.returncode == 0
    row = next(line for line in status.stdout.splitlines() if line.startswith("erp"))
    assert row.split()[2:] == ["0", "0", "2", "1", "0", "0"]  # pending sending sent failed unknown skipped
    assert "fixed-line" in status.stdout
    assert "instances: none running" in status.stdout  # the once pass released everything it held
    check = connector("check", "-c", "config.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "robo_sms_ro" in check.stdout and TOKEN not in check.stdout
    assert "connector.db, schema version 4" in check.stdout


PK_KEY = "pk-e2e-key"


def pk_config(folder: Path, url: str, key: str) -> None:
    helpers.pk_config(folder, url, key, extra="    encoding: form\n")
    (folder / "inbox" / "promo.csv").write_text("Phone\n03001234567\n0300 765 4321\n+92 345 1112223\n")


def test_pk_refused_key_writes_pending_exits_1_and_bulk_sends_once_fixed(tmp_path: Path) -> None:
    from tests.emulators.robo_pk import PkEmulator

    emulator = PkEmulator(email="ops@example.com", key=PK_KEY)
    with EmulatorServer(emulator) as url:
        pk_config(tmp_path, url, "wrong-key")
        check = connector("check", "-c", "config.yaml", cwd=tmp_path)
        assert check.returncode == 1 and "UNUSABLE credentials" in check.stdout
        refused = connector("once", "-c", "config.yaml", cwd=tmp_path)
        assert refused.returncode == 1, refused.stderr
        assert "sink pk: the provider refused the account: invalid API key (code 203)" in refused.stderr
        assert "wrong-key" not in refused.stderr + refused.stdout
        # The team reading the results sees why nothing went out, row by row.
        results = tmp_path / "inbox" / "processed" / "promo.results.csv"
        statuses = [r["SMS Status"] for r in read_results(results)]
        assert statuses == ["pending: sink pk paused: invalid API key (code 203)"] * 3
        assert [r["path"] for r in emulator.requests] == ["/api/check-balance"] * 2  # no send tried

        pk_config(tmp_path, url, PK_KEY)
        sent = connector("once", "-c", "config.yaml", cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
    sends = [r for r in emulator.requests if r["path"] == "/api/send-message"]
    assert len(sends) == 1, "one text to three numbers travels as one bulk request"
    assert sorted(m["to"] for m in emulator.accepted) == ["923001234567", "923007654321", "923451112223"]
    statuses = [r["SMS Status"] for r in read_results(results)]
    assert all(s.startswith("sent ") for s in statuses), statuses

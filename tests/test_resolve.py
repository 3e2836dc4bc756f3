"""`connector resolve`: a person's decision on `unknown` sends, against the RO emulator, as real
subprocesses: the decision is kept in the ledger with its note and who took it, written back to
the results file, and `resend` sends exactly once more."""

from __future__ import annotations

import re
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulators.base import Fault
from tests.emulators.keys import service_account_file
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.emulators.sheets import SheetsEmulator
from tests.helpers import (
    TOKEN,
    connector,
    read_results,
    ro_config,
    ro_mobile,
    start_connector,
    wait_for,
    write_orders,
)

pytestmark = pytest.mark.slow

RESULTS = Path("inbox") / "processed" / "orders.results.csv"


@pytest.fixture
def emulator() -> RoEmulator:
    return RoEmulator(token=TOKEN)


@pytest.fixture
def url(emulator: RoEmulator) -> Iterator[str]:
    with EmulatorServer(emulator) as base:
        yield base


def _statuses(folder: Path) -> list[str]:
    return [row["SMS Status"] for row in read_results(folder / RESULTS)]


def _unknown_ids(folder: Path) -> list[str]:
    """The event ids `connector status` lists for unknown sends, as a person would copy them."""
    status = connector("status", "-c", "config.yaml", cwd=folder)
    assert status.returncode == 0, status.stderr
    return re.findall(r" ([0-9a-f]{16,}) \S+ \S+: unknown:", status.stdout)


def _history(folder: Path, key: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(folder / "connector.db") as db:
        rows = db.execute("SELECT state, detail, actor FROM history WHERE key = ? ORDER BY at", [key])
        return [(str(s), str(d), str(a)) for s, d, a in rows]


def _once_with_unknowns(folder: Path, emulator: RoEmulator, url: str, rows: int, faults: list[Fault]) -> None:
    ro_config(folder, url, settle="0ms", concurrency=1)
    write_orders(folder / "inbox" / "orders.csv", rows)
    emulator.inject(*faults)
    run = connector("once", "-c", "config.yaml", cwd=folder)
    assert run.returncode == 0, run.stderr


def test_an_unknown_resolved_as_sent_is_written_back_and_nothing_more_is_sent(
    tmp_path: Path, emulator: RoEmulator, url: str
) -> None:
    # The provider took the first message, but the connection dropped before its answer.
    _once_with_unknowns(tmp_path, emulator, url, 3, [Fault(drop="after_body", accept=True)])
    statuses = _statuses(tmp_path)
    assert statuses[0].startswith("unknown: ") and all(s.startswith("sent ") for s in statuses[1:])
    requests = len(emulator.requests)
    [key] = _unknown_ids(tmp_path)

    done = connector(
        "resolve", key[:12], "--as", "sent", "--note", "customer confirmed", "-c", "config.yaml", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "resolved by hand" in done.stdout and "1 decided as sent" in done.stderr

    first = _statuses(tmp_path)[0]
    assert first.startswith("sent ") and first.endswith(": customer confirmed)"), first
    assert "resolved by hand by " in first
    assert len(emulator.requests) == requests  # a decision sends nothing
    states = [state for state, _, _ in _history(tmp_path, key)]
    assert states == ["unknown", "sent"]
    assert _history(tmp_path, key)[-1][2]  # who decided is kept

    again = connector("resolve", key, "--as", "failed", "-c", "config.yaml", cwd=tmp_path)
    assert again.returncode == 1
    assert "it is sent, not unknown: add --force" in again.stdout
    assert _statuses(tmp_path)[0] == first  # refused: nothing changed

    later = connector("once", "-c", "config.yaml", cwd=tmp_path)
    assert later.returncode == 0 and len(emulator.requests) == requests


def test_an_unknown_resolved_as_resend_is_sent_exactly_once_more(
    tmp_path: Path, emulator: RoEmulator, url: str
) -> None:
    # The connection dropped after the request: the provider did not take it this time.
    _once_with_unknowns(tmp_path, emulator, url, 2, [Fault(drop="after_body")])
    assert _statuses(tmp_path)[0].startswith("unknown: ")
    assert [m["to"] for m in emulator.accepted] == ["+4" + ro_mobile(1)]
    [key] = _unknown_ids(tmp_path)

    resent = connector("resolve", key, "--as", "resend", "-c", "config.yaml", cwd=tmp_path)
    assert resent.returncode == 0, resent.stderr
    assert sorted(m["to"] for m in emulator.accepted) == sorted(["+4" + ro_mobile(0), "+4" + ro_mobile(1)])
    assert _statuses(tmp_path)[0].startswith("sent ")

    for _ in range(2):  # neither a pass nor a second decision sends it again
        assert connector("once", "-c", "config.yaml", cwd=tmp_path).returncode == 0
    twice = connector("resolve", key, "--as", "resend", "-c", "config.yaml", cwd=tmp_path)
    assert twice.returncode == 1 and "not unknown" in twice.stdout
    assert len(emulator.accepted) == 2


def test_every_unknown_of_a_source_resolved_at_once(tmp_path: Path, emulator: RoEmulator, url: str) -> None:
    _once_with_unknowns(tmp_path, emulator, url, 6, [Fault(drop="after_body") for _ in range(4)])
    assert sum(s.startswith("unknown: ") for s in _statuses(tmp_path)) == 4

    wrong = connector(
        "resolve", "--all-unknown", "--source", "nope", "--as", "failed", "-c", "config.yaml", cwd=tmp_path
    )
    assert wrong.returncode == 2 and "no source named nope" in wrong.stderr
    both = connector("resolve", "abc", "--all-unknown", "--as", "failed", "-c", "config.yaml", cwd=tmp_path)
    assert both.returncode == 2

    bulk = connector(
        "resolve",
        "--all-unknown",
        "--source",
        "erp",
        "--as",
        "failed",
        "--note",
        "portal says no",
        "-c",
        "config.yaml",
        cwd=tmp_path,
    )
    assert bulk.returncode == 0, bulk.stderr
    assert "4 decided as failed" in bulk.stderr
    statuses = _statuses(tmp_path)
    assert (
        sum(s.startswith("failed: resolved by hand by ") and s.endswith(": portal says no") for s in statuses)
        == 4
    )
    assert sum(s.startswith("sent ") for s in statuses) == 2
    assert _unknown_ids(tmp_path) == []
    none_left = connector("resolve", "--all-unknown", "--as", "failed", "-c", "config.yaml", cwd=tmp_path)
    assert none_left.returncode == 0 and "no unknown messages" in none_left.stdout


def test_an_id_that_does_not_exist_is_refused(tmp_path: Path, url: str) -> None:
    ro_config(tmp_path, url, settle="0ms")
    assert connector("once", "-c", "config.yaml", cwd=tmp_path).returncode == 0
    missing = connector("resolve", "0123456789abcdef", "--as", "sent", "-c", "config.yaml", cwd=tmp_path)
    assert missing.returncode == 1 and "no message with this id" in missing.stdout


def _sheet_config(folder: Path, url: str, api: str, extra: str = "") -> None:
    key = service_account_file(folder / "keys", f"{api}/token")
    (folder / "config.yaml").write_text(f"""state: sqlite:///connector.db
log: {{format: json, level: info}}
sinks:
  ro: {{type: robo_sms_ro, token: "${{ROBO_SMS_TOKEN}}", url: "{url}/api/sms/", concurrency: 1, timeout: 5s}}
sources:
  orders:
    type: google_sheets
    spreadsheet: 1ResolveSheet
    worksheet: Orders
    credentials: {key.relative_to(folder)}
    key_column: Order ID
    api_url: {api}
{extra}rules:
  - name: confirm
    source: orders
    to: "{{{{ row['Phone'] }}}}"
    country: RO
    message: "Order {{{{ row['Order ID'] }}}} is confirmed."
    sink: ro
""")


def _sheet(rows: int) -> SheetsEmulator:
    sheets = SheetsEmulator()
    header = ["Order ID", "Name", "Phone", "Status", "SMS Status"]
    table = [[f"A-{i}", f"Customer {i}", ro_mobile(i), "Confirmed", ""] for i in range(rows)]
    sheets.add_spreadsheet("1ResolveSheet", {"Orders": [header, *table]}, title="Shop")
    return sheets


def test_a_decision_is_written_into_the_sheet_cell(tmp_path: Path, emulator: RoEmulator, url: str) -> None:
    sheets = _sheet(2)
    with EmulatorServer(sheets) as api:
        _sheet_config(tmp_path, url, api)
        emulator.inject(Fault(drop="after_body", accept=True))
        assert connector("once", "-c", "config.yaml", cwd=tmp_path).returncode == 0
        assert sheets.values("1ResolveSheet", "Orders")[1][4].startswith("unknown: ")
        [event] = _unknown_ids(tmp_path)

        done = connector(
            "resolve",
            event,
            "--as",
            "sent",
            "--note",
            "seen in the portal",
            "-c",
            "config.yaml",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        cell = sheets.values("1ResolveSheet", "Orders")[1][4]  # written by resolve: nobody polls
        assert cell.startswith("sent ") and cell.endswith(": seen in the portal)"), cell
        assert sheets.values("1ResolveSheet", "Orders")[2][4].startswith("sent ")
        assert len(emulator.accepted) == 2


def test_a_sheet_another_instance_polls_gets_the_decision_at_its_next_poll(
    tmp_path: Path, emulator: RoEmulator, url: str
) -> None:
    sheets = _sheet(1)
    with EmulatorServer(sheets) as api:
        _sheet_config(tmp_path, url, api, extra="    every: 1s\n")
        emulator.inject(Fault(drop="after_body", accept=True))
        log = tmp_path / "run.log"
        running = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        try:
            cell = lambda: (sheets.values("1ResolveSheet", "Orders")[1] + [""] * 5)[4]  # noqa: E731
            wait_for(lambda: cell().startswith("unknown: "), what="the unknown status")
            [event] = _unknown_ids(tmp_path)
            done = connector(
                "resolve", event, "--as", "sent", "--note", "checked", "-c", "config.yaml", cwd=tmp_path
            )
            assert done.returncode == 0, done.stderr
            wait_for(lambda: cell().startswith("sent "), what="the running instance's poll writing it")
            assert cell().endswith(": checked)")
        finally:
            running.send_signal(signal.SIGTERM)
            assert running.wait(timeout=30) == 0
        assert len(emulator.accepted) == 1

"""The Google Sheets source as a user runs it: `connector` subprocesses against the Sheets emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulators.keys import service_account_file
from tests.emulators.server import EmulatorServer
from tests.emulators.sheets import SheetsEmulator
from tests.helpers import connector, ro_mobile

pytestmark = pytest.mark.slow

SID = "1CliSheet_key-42"
TAB = "Orders"
HEADER = ["Order ID", "Name", "Phone", "Status", "SMS Status"]
STATUS_COL = 5
OPENING = {"token", "metadata"}  # what a fresh process spends before its first read


def order(i: int, status: str = "Confirmed", sms: str = "") -> list[str]:
    return [f"A-{i}", f"Customer {i}", ro_mobile(i), status, sms]


@pytest.fixture
def emulator() -> SheetsEmulator:
    sheets = SheetsEmulator()
    sheets.add_spreadsheet(
        SID,
        {
            TAB: [
                HEADER,
                order(1),
                order(2, status="Draft"),  # no rule wants it: no SMS, no status
                order(3, sms="sent 2026-11-01T09:00:00Z abc"),  # settled earlier: left alone
                order(4),
            ],
            "Notes": [["ignore me"]],
        },
        title="Shop",
    )
    return sheets


@pytest.fixture
def url(emulator: SheetsEmulator) -> Iterator[str]:
    with EmulatorServer(emulator) as base:
        yield base


def write_config(folder: Path, url: str, spreadsheet: str = SID) -> None:
    key = service_account_file(folder / "keys", f"{url}/token")
    text = f"""state: sqlite:///connector.db
log: {{format: json, level: info}}
sinks:
  out:
    type: dry_run
    path: outbox.jsonl
sources:
  orders:
    type: google_sheets
    spreadsheet: {spreadsheet}
    worksheet: {TAB}
    credentials: {key.relative_to(folder)}
    key_column: Order ID
    api_url: {url}
    timeout: 5s
    max_retry_time: 2s
rules:
  - name: confirm
    source: orders
    when: "row['Status'] == 'Confirmed'"
    to: "{{{{ row['Phone'] }}}}"
    country: RO
    message: "Hi {{{{ row['Name'] }}}}, order {{{{ row['Order ID'] }}}} is confirmed."
    sink: out
"""
    (folder / "config.yaml").write_text(text)


def outbox(folder: Path) -> list[dict[str, str]]:
    path = folder / "outbox.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def statuses(emulator: SheetsEmulator) -> dict[str, str]:
    rows = emulator.values(SID, TAB)
    assert rows[0] == HEADER
    return {r[0]: (r[STATUS_COL - 1] if len(r) >= STATUS_COL else "") for r in rows[1:]}


def test_check_preview_and_two_passes(tmp_path: Path, emulator: SheetsEmulator, url: str) -> None:
    write_config(tmp_path, url)

    checked = connector("check", "-c", "config.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "source   orders (google_sheets): 'Shop' / 'Orders'" in checked.stdout
    assert "status column 'SMS Status' present" in checked.stdout
    assert emulator.writes == []

    emulator.reset_counts()
    shown = connector("preview", "-c", "config.yaml", "--source", "orders", cwd=tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "Orders row 2: rule confirm -> out" in shown.stdout
    assert "'Hi Customer 1, order A-1 is confirmed.'" in shown.stdout
    assert "Orders row 5: rule confirm -> out" in shown.stdout
    assert "Orders row 3: no rule applies" in shown.stdout
    assert "row 4" not in shown.stdout  # already has a status: not due, not shown
    assert emulator.writes == []
    assert not {"values.update", "values.batchUpdate", "values.append", "batchUpdate"} & set(+emulator.counts)
    assert not (tmp_path / "outbox.jsonl").exists()
    assert statuses(emulator)["A-1"] == ""

    first = connector("once", "-c", "config.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    sent = outbox(tmp_path)
    assert sorted(m["text"] for m in sent) == [
        "Hi Customer 1, order A-1 is confirmed.",
        "Hi Customer 4, order A-4 is confirmed.",
    ]
    now = statuses(emulator)
    assert now["A-1"].startswith("sent ") and now["A-1"].endswith("dry-run")
    assert now["A-4"].startswith("sent ") and now["A-4"].endswith("dry-run")
    assert now["A-2"] == ""
    assert now["A-3"] == "sent 2026-11-01T09:00:00Z abc"
    assert {w["valueInputOption"] for w in emulator.writes} == {"RAW"}
    assert emulator.values(SID, "Notes") == [["ignore me"]]

    emulator.reset_counts()
    writes = len(emulator.writes)
    second = connector("once", "-c", "config.yaml", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert len(outbox(tmp_path)) == 2  # nothing sent again
    assert statuses(emulator) == now
    assert len(emulator.writes) == writes
    counts = +emulator.counts
    assert set(counts) - OPENING == {"values.get"} and counts["values.get"] == 1, counts
    assert counts["token"] == 1 and counts["metadata"] <= 2, counts


def test_check_names_a_spreadsheet_that_cannot_be_opened(
    tmp_path: Path, emulator: SheetsEmulator, url: str
) -> None:
    write_config(tmp_path, url, spreadsheet="1NoSuchSheet")
    checked = connector("check", "-c", "config.yaml", cwd=tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert (
        "source   orders (google_sheets): UNUSABLE source: spreadsheet 1NoSuchSheet not found, "
        "or not shared with connector@test-project.iam.gserviceaccount.com"
    ) in checked.stdout
    assert "1 source(s)/sink(s)/opt-out list(s) cannot be used" in checked.stdout
    assert "Traceback" not in checked.stderr
    assert emulator.writes == []


def test_check_offline_reads_the_key_file_and_asks_google_nothing(
    tmp_path: Path, emulator: SheetsEmulator, url: str
) -> None:
    write_config(tmp_path, url)
    emulator.reset_counts()
    checked = connector("check", "--offline", "-c", "config.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        f"source   orders (google_sheets): spreadsheet {SID} / {TAB}: key of "
        "connector@test-project.iam.gserviceaccount.com read; not opened (--offline)"
    ) in checked.stdout
    assert +emulator.counts == {}  # not even a token

    (tmp_path / "keys").rename(tmp_path / "moved")  # a key file that is not there fails offline too
    missing = connector("check", "--offline", "-c", "config.yaml", cwd=tmp_path)
    assert missing.returncode == 1
    assert "UNUSABLE source: credentials" in missing.stdout and "cannot be read" in missing.stdout
    assert +emulator.counts == {}

"""A Google Sheet tab as an opt-out list: read over loopback from the Sheets emulator, taken up
again when it changes, kept through an outage, and used by `check` and `once` as a user runs them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.config import ConnectorConfig as Config
from connector.optouts import CACHE_SCOPE, OptOuts
from sources.sheet_optouts import SheetListConfig
from tests.emulators.base import Fault
from tests.emulators.keys import service_account_file
from tests.emulators.server import EmulatorServer
from tests.emulators.sheets import SheetsEmulator
from tests.helpers import connector
from tests.ledgers import joined

SID = "1OptOuts_key-7"
TAB = "Opt-outs"


@pytest.fixture
def emulator() -> SheetsEmulator:
    sheets = SheetsEmulator()
    sheets.add_spreadsheet(
        SID,
        {"Orders": [["ignore me"]], TAB: [["Name", "Mobile"], ["Ana", "0740 000 001"], ["Ion", "n/a"]]},
        title="Shop",
    )
    return sheets


@pytest.fixture
def url(emulator: SheetsEmulator) -> Iterator[str]:
    with EmulatorServer(emulator) as base:
        yield base


def sheet_list(folder: Path, url: str, **fields: object) -> SheetListConfig:
    key = service_account_file(folder / "keys", f"{url}/token")
    values: dict[str, object] = {
        "sheet": f"https://docs.google.com/spreadsheets/d/{SID}/edit#gid=0",
        "tab": TAB,
        "column": "Mobile",
        "country": "RO",
        "credentials": str(key),
        "api_url": url,
        "timeout": 5.0,
        "max_retry_time": 1.0,
        **fields,
    }
    return SheetListConfig.model_validate(values)


async def test_the_tab_is_read_and_read_again_only_when_due_and_changed(
    tmp_path: Path, emulator: SheetsEmulator, url: str
) -> None:
    lists = OptOuts([sheet_list(tmp_path, url, every=3600.0)], tmp_path)
    await lists.refresh(None)
    assert "+40740000001" in lists and len(lists) == 1  # "n/a" is not a number
    reads = emulator.counts["values.get"]
    emulator.set_cell(SID, TAB, 3, 2, "0740 000 003")
    await lists.refresh(None)  # within `every`: Google is not asked
    assert emulator.counts["values.get"] == reads and "+40740000003" not in lists

    often = OptOuts([sheet_list(tmp_path, url, every=0.0)], tmp_path)
    await often.refresh(None)
    assert "+40740000001" in often and "+40740000003" in often
    emulator.set_cell(SID, TAB, 2, 2, "")  # Ana asked to hear from us again
    await often.refresh(None)
    assert "+40740000001" not in often and "+40740000003" in often


async def test_an_outage_keeps_the_numbers_last_read_even_across_a_restart(
    tmp_path: Path, emulator: SheetsEmulator, url: str
) -> None:
    config = [sheet_list(tmp_path, url, every=0.0)]
    async with joined(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path) as ledger:
        lists = OptOuts(config, tmp_path)
        await lists.refresh(ledger)
        assert "+40740000001" in lists
        kept = json.loads(await ledger.get_note(CACHE_SCOPE, f"sheet {SID} / {TAB}") or "{}")
        assert kept["numbers"] == ["+40740000001"]

        emulator.inject(*[Fault(status=503) for _ in range(50)])
        await lists.refresh(ledger)  # Google fails: the numbers stay suppressed
        assert "+40740000001" in lists
        restarted = OptOuts(config, tmp_path)  # a start while Google still fails
        await restarted.refresh(ledger)
        assert "+40740000001" in restarted

        emulator.reset()  # back, and Ana removed meanwhile
        emulator.add_spreadsheet(SID, {TAB: [["Name", "Mobile"], ["Ion", "0740 000 002"]]}, title="Shop")
        await restarted.refresh(ledger)
        assert "+40740000002" in restarted and "+40740000001" not in restarted


def test_a_suppress_entry_is_a_file_or_a_sheet_by_its_keys() -> None:
    config = Config.model_validate(
        {
            "suppress": [
                {"path": "stop.csv"},
                {"sheet": "https://docs.google.com/spreadsheets/d/KEY_1/edit", "tab": "Stop"},
            ]
        }
    )
    assert [s.describe() for s in config.suppress] == ["stop.csv", "sheet KEY_1 / Stop"]
    with pytest.raises(ValueError, match="not a spreadsheet URL"):
        Config.model_validate({"suppress": [{"sheet": "https://example.com/nothing/here"}]})
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        Config.model_validate({"suppress": [{"sheet": SID, "path": "stop.csv"}]})


def write_config(folder: Path, url: str) -> None:
    key = service_account_file(folder / "keys", f"{url}/token")
    (folder / "inbox").mkdir()
    (folder / "config.yaml").write_text(
        f"""state: sqlite:///connector.db
suppress:
  - sheet: {SID}
    tab: {TAB}
    column: Mobile
    country: RO
    credentials: {key.relative_to(folder)}
    api_url: {url}
    timeout: 5s
    max_retry_time: 1s
sinks:
  out: {{type: dry_run, path: outbox.jsonl}}
sources:
  inbox: {{type: csv_folder, path: inbox, settle: 0s}}
rules:
  - name: confirm
    source: inbox
    to: "{{{{ row['Phone'] }}}}"
    country: RO
    message: "Hi {{{{ row['Name'] }}}}"
    sink: out
"""
    )


def test_check_and_once_with_a_sheet_tab_of_opt_outs(
    tmp_path: Path, emulator: SheetsEmulator, url: str
) -> None:
    write_config(tmp_path, url)
    offline = connector("check", "--offline", "-c", "config.yaml", cwd=tmp_path)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert f"opt-outs sheet {SID} / {TAB} (column Mobile): not read (--offline)" in offline.stdout
    assert +emulator.counts == {}

    checked = connector("check", "-c", "config.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        f"opt-outs sheet {SID} / {TAB} (column Mobile): 1 number(s), "
        "1 value(s) that are not numbers (first: 'n/a')"
    ) in checked.stdout

    (tmp_path / "inbox" / "orders.csv").write_text("Name,Phone\nAna,0740000001\nDan,0740000005\n")
    done = connector("once", "-c", "config.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    results = (tmp_path / "inbox" / "processed" / "orders.results.csv").read_text().splitlines()
    assert results[1].endswith("skipped: opted out"), results
    assert results[2].split(",")[-1].startswith("sent "), results
    sent = [json.loads(line)["to"] for line in (tmp_path / "outbox.jsonl").read_text().splitlines()]
    assert sent == ["+40740000005"]

    emulator.inject(Fault(status=403))  # a sheet the account may no longer read: check says so
    refused = connector("check", "-c", "config.yaml", cwd=tmp_path)
    assert refused.returncode == 1
    assert f"opt-outs sheet {SID} / {TAB} (column Mobile): UNUSABLE: " in refused.stdout
    assert "opt-out list(s) cannot be used" in refused.stdout

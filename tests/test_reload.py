"""Config reload in a running `connector run` (SPEC "Config reload"), as a real subprocess against
the RO emulator: an edited rule is used for the next file, a bad edit is refused with file:line and
the old config keeps working, a change that needs a restart is refused, and an edit during a slow
batch loses and doubles nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.emulators.keys import service_account_file
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.emulators.sheets import SheetsEmulator
from tests.helpers import (
    TOKEN,
    free_port,
    read_results,
    ro_config,
    ro_mobile,
    start_connector,
    wait_for,
    write_orders,
)

pytestmark = pytest.mark.slow

OLD = "Hi {{ row['Name'] }}, order {{ row['Order ID'] }} is confirmed."
NEW = "Hello {{ row['Name'] }}: order {{ row['Order ID'] }} ships today."


@pytest.fixture
def emulator() -> RoEmulator:
    return RoEmulator(token=TOKEN)


@pytest.fixture
def url(emulator: RoEmulator) -> Iterator[str]:
    with EmulatorServer(emulator) as base:
        yield base


class Running:
    def __init__(self, folder: Path, url: str, **options: object) -> None:
        self.folder = folder
        self.port = free_port()
        self.config = ro_config(
            folder, url, settle="0ms", extra=f"server: {{port: {self.port}}}\n", **options
        )  # type: ignore[arg-type]
        self.log = folder / "connector.log"
        self.process: subprocess.Popen[bytes] = start_connector(
            "run", "-c", "config.yaml", cwd=folder, log=self.log
        )
        wait_for(self.healthy, what="the connector serving")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def events(self, name: str) -> list[dict[str, object]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        found = []
        for line in lines:
            if line.startswith("{") and (event := json.loads(line)).get("event") == name:
                found.append(event)
        return found

    def edit(self, old: str, new: str) -> None:
        """As an editor saves: a new file renamed over the old one."""
        text = self.config.read_text()
        assert old in text
        staged = self.config.with_suffix(".swp")
        staged.write_text(text.replace(old, new))
        os.replace(staged, self.config)

    def reloads(self, result: str) -> float:
        scrape = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        for line in scrape.splitlines():
            if line.startswith(f'connector_config_reloads_total{{result="{result}"}}'):
                return float(line.split()[-1])
        raise AssertionError(f"no reload count for {result} in /metrics")

    def drop(self, name: str, rows: int, start: int) -> Path:
        staged = write_orders(self.folder / f"{name}.staged", rows, start)
        os.replace(staged, self.folder / "inbox" / f"{name}.csv")
        results = self.folder / "inbox" / "processed" / f"{name}.results.csv"
        wait_for(lambda: results.exists() and len(read_results(results)) == rows, what=f"{name} processed")
        return results

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0


def _texts(emulator: RoEmulator) -> list[str]:
    return [str(m["text"]) for m in emulator.accepted]


def test_an_edited_rule_is_used_for_the_next_file_and_a_bad_edit_is_refused(
    tmp_path: Path, emulator: RoEmulator, url: str
) -> None:
    running = Running(tmp_path, url)
    try:
        running.drop("first", 2, 0)
        assert all(t.startswith("Hi Customer") for t in _texts(emulator))

        running.edit("Hi {{ row['Name'] }}, order", "Hello {{ row['Name'] }}: order")
        wait_for(lambda: running.events("config reloaded"), what="the reload")
        running.drop("second", 2, 100)
        assert [t.split(" ")[0] for t in _texts(emulator)] == ["Hi", "Hi", "Hello", "Hello"]

        # A typo: refused, located, and the rule in use stays.
        running.edit("    sink: ro\n", "    sink: ro\n    colour: blue\n")
        wait_for(lambda: running.events("config reload refused; the config in use stays"), what="the refusal")
        [refusal] = running.events("config reload refused; the config in use stays")
        assert re.search(r"config\.yaml:\d+ rules\.0\.colour: unknown key", str(refusal["problem"]))
        running.drop("third", 1, 200)
        assert _texts(emulator)[-1].startswith("Hello Customer 200:")
        health = httpx.get(f"http://127.0.0.1:{running.port}/healthz", timeout=5).json()
        assert "colour" in health["instance"]["config"]["last_refusal"]["problems"]
        assert running.reloads("applied") == 1 and running.reloads("refused") == 1

        # What the process was started on needs a restart.
        running.edit("    colour: blue\n", "")
        wait_for(
            lambda: running.reloads("unchanged") + running.reloads("applied") >= 2, what="the fixed file"
        )
        running.edit("state: sqlite:///connector.db", "state: sqlite:///other.db")
        wait_for(lambda: running.reloads("refused") == 2, what="the restart refusal")
        assert any(
            "state: changed; this needs a restart" in str(e["problem"])
            for e in running.events("config reload refused; the config in use stays")
        )
        assert not (tmp_path / "other.db").exists()

        running.process.send_signal(signal.SIGHUP)  # asks too; the file is as refused before
        wait_for(lambda: running.reloads("refused") == 3, what="the SIGHUP reload")
    finally:
        running.stop()
    assert len(emulator.accepted) == 5
    assert TOKEN not in running.log.read_text()


def test_a_save_in_place_is_seen_and_the_ledger_beside_the_config_wakes_nothing(
    tmp_path: Path, emulator: RoEmulator, url: str
) -> None:
    # The watch listens for closed writes and renames only (the ledger's -wal file beside the
    # config is modified by every commit); an editor that writes the file in place must still count.
    running = Running(tmp_path, url)
    try:
        running.drop("first", 20, 0)
        assert running.reloads("unchanged") == running.reloads("applied") == 0
        running.config.write_text(
            running.config.read_text().replace("Hi {{ row['Name'] }}, order", "Hey {{ row['Name'] }}, order")
        )
        wait_for(lambda: running.reloads("applied") == 1, what="the in-place save")
        running.drop("second", 1, 100)
        assert _texts(emulator)[-1].startswith("Hey Customer 100")
        with (tmp_path / "config.yaml").open("a") as config:  # appended, closed: a save too
            config.write("# a comment\n")
        wait_for(lambda: running.reloads("unchanged") == 1, what="the appended comment")
    finally:
        running.stop()


def test_an_edit_during_a_slow_batch_loses_and_doubles_nothing(
    tmp_path: Path, url: str, emulator: RoEmulator
) -> None:
    emulator.latency = 0.4
    running = Running(tmp_path, url, concurrency=2)
    try:
        staged = write_orders(tmp_path / "slow.staged", 20)
        os.replace(staged, tmp_path / "inbox" / "slow.csv")
        wait_for(lambda: len(emulator.accepted) >= 2, what="the first sends")
        # The text and the sink itself change while the sink's requests are on the wire.
        running.edit("Hi {{ row['Name'] }}, order", "Hello {{ row['Name'] }}: order")
        running.edit("    timeout: 5s\n", "    timeout: 6s\n")
        results = tmp_path / "inbox" / "processed" / "slow.results.csv"
        wait_for(
            lambda: results.exists() and len(read_results(results)) == 20, timeout=60, what="the slow file"
        )
        wait_for(lambda: running.events("config reloaded"), what="the reload")
        assert running.events("config reloaded")[0]["sinks_replaced"] == ["ro"]
        emulator.latency = 0.0
        running.drop("after", 2, 500)
    finally:
        running.stop()
    numbers = Counter(str(m["to"]) for m in emulator.accepted)
    assert len(numbers) == 22 and max(numbers.values()) == 1  # every row once, none twice
    statuses = [r["SMS Status"] for r in read_results(results)]
    assert all(s.startswith("sent ") for s in statuses)
    texts = _texts(emulator)
    # The batches in hand kept the text they began with; the file after the reload has the new one.
    assert all(t.startswith("Hello") for t in texts[-2:])
    assert sum(t.startswith("Hi ") for t in texts) >= 2


def _status(sheets: SheetsEmulator, order: str) -> str:
    for row in sheets.values("1ReloadSheet", "Orders"):
        if row[0] == order:
            return row[4] if len(row) > 4 else ""
    return ""


def test_a_sheet_whose_settings_did_not_change_is_not_reopened(tmp_path: Path) -> None:
    sheets = SheetsEmulator()
    header = ["Order ID", "Name", "Phone", "Status", "SMS Status"]
    sheets.add_spreadsheet(
        "1ReloadSheet", {"Orders": [header, ["A-1", "Ana", ro_mobile(1), "Confirmed", ""]]}
    )
    with EmulatorServer(sheets) as api:
        key = service_account_file(tmp_path / "keys", f"{api}/token")
        port = free_port()
        config = tmp_path / "config.yaml"
        config.write_text(f"""state: sqlite:///connector.db
log: {{format: json, level: info}}
server: {{port: {port}}}
sinks:
  out: {{type: dry_run, path: outbox.jsonl}}
sources:
  orders:
    type: google_sheets
    spreadsheet: 1ReloadSheet
    worksheet: Orders
    credentials: {key.relative_to(tmp_path)}
    key_column: Order ID
    api_url: {api}
    every: 1s
rules:
  - name: confirm
    source: orders
    to: "{{{{ row['Phone'] }}}}"
    country: RO
    message: "Hi {{{{ row['Name'] }}}}"
    sink: out
""")
        log = tmp_path / "connector.log"
        process = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        try:
            wait_for(lambda: _status(sheets, "A-1").startswith("sent "), what="the first row sent")
            opened = {kind: sheets.counts[kind] for kind in ("token", "metadata")}
            staged = tmp_path / "config.swp"
            staged.write_text(config.read_text().replace('"Hi {{ row', '"Hello {{ row'))
            os.replace(staged, config)
            wait_for(lambda: "config reloaded" in log.read_text(), what="the reload")
            sheets.insert_rows("1ReloadSheet", "Orders", 2, [["A-2", "Ion", ro_mobile(2), "Confirmed", ""]])
            wait_for(lambda: _status(sheets, "A-2").startswith("sent "), what="the new row")
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        assert {kind: sheets.counts[kind] for kind in ("token", "metadata")} == opened  # not re-opened
        sent = [json.loads(line)["text"] for line in (tmp_path / "outbox.jsonl").read_text().splitlines()]
        assert sent == ["Hi Ana", "Hello Ion"]

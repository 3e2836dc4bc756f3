"""Send policies end to end (SPEC "Send policies"): real `connector run` and `once` against the RO
emulator, with CSV files in a drop folder. A scheduled message leaves after its time and not
before, sent by the product itself (no source is read again for it); quiet hours hold a message
with the time it goes; an expired one is skipped; an unreadable date fails its row; a waiting
message survives a restart."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.helpers import TOKEN, connector, free_port, read_results, start_connector, wait_for

pytestmark = pytest.mark.slow


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def config(folder: Path, url: str, policies: str) -> None:
    (folder / "inbox").mkdir(exist_ok=True)
    (folder / "config.yaml").write_text(
        f"""state: sqlite:///connector.db
log: {{format: json, level: info}}
timezone: Europe/Bucharest
sinks:
  ro: {{type: robo_sms_ro, token: "${{ROBO_SMS_TOKEN}}", url: "{url}/api/sms/", timeout: 5s}}
sources:
  inbox: {{type: csv_folder, path: ./inbox, settle: 0ms}}
rules:
  - name: remind
    source: inbox
    to: "{{{{ row['Phone'] }}}}"
    country: RO
    message: "Your appointment is at {{{{ row['When'] }}}}"
    sink: ro
{policies}"""
    )


def drop(folder: Path, rows: list[tuple[str, str]], name: str = "a.csv") -> None:
    staged = folder / f".{name}"
    staged.write_text("Phone,When\n" + "".join(f"{phone},{when}\n" for phone, when in rows))
    staged.replace(folder / "inbox" / name)


def statuses(folder: Path, name: str = "a.results.csv") -> dict[str, str]:
    path = folder / "inbox" / "processed" / name
    return {r["Phone"]: r["SMS Status"] for r in read_results(path)} if path.exists() else {}


def test_a_scheduled_send_leaves_after_its_time_and_not_before(tmp_path: Path) -> None:
    emulator = RoEmulator(token=TOKEN)
    with EmulatorServer(emulator) as url:
        config(tmp_path, url, "    send_at: \"{{ row['When'] }}\"\n")
        log = tmp_path / "connector.log"
        running = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        try:
            due = time.time() + 4
            drop(tmp_path, [("0740000001", iso(due)), ("0740000002", iso(time.time() - 60))])
            wait_for(lambda: len(statuses(tmp_path)) == 2, what="the results file")
            first = statuses(tmp_path)
            assert first["0740000001"] == f"pending: scheduled for {iso(due)}"
            assert first["0740000002"].startswith("sent ")  # a time already past sends at once
            wait_for(lambda: len(emulator.accepted) == 2, timeout=15, what="the scheduled send")
            arrived = time.time()
            wait_for(
                lambda: statuses(tmp_path)["0740000001"].startswith("sent "), what="its status rewritten"
            )
        finally:
            running.send_signal(signal.SIGTERM)
            assert running.wait(timeout=30) == 0
    late = arrived - int(due)  # the due time is whole seconds (the CSV says so)
    assert 0 <= late < 2.0, f"sent {late:.2f} s after its time"
    assert [m["to"] for m in emulator.accepted] == ["+40740000002", "+40740000001"]


def test_quiet_hours_expiry_and_an_unreadable_date_in_one_pass(tmp_path: Path) -> None:
    emulator = RoEmulator(token=TOKEN)
    now = time.time()
    hour = datetime.now(ZoneInfo("Europe/Bucharest")).hour
    closed_from = f"{(hour + 2) % 24:02d}:00"  # a window that cannot include this moment
    closed_to = f"{(hour + 3) % 24:02d}:00"
    with EmulatorServer(emulator) as url:
        config(
            tmp_path,
            url,
            "    send_at: \"{{ row['When'] }}\"\n    expire_after: 6h\n"
            f'    send_window: {{days: daily, from: "{closed_from}", to: "{closed_to}"}}\n',
        )
        drop(
            tmp_path,
            [
                ("0740000001", iso(now - 60)),  # due a minute ago: waits for the window
                ("0740000002", iso(now - 8 * 3600)),  # due eight hours ago, expires after six
                ("0740000003", "next tuesday"),
            ],
        )
        once = connector("once", "-c", "config.yaml", cwd=tmp_path)
        assert once.returncode == 0, once.stdout + once.stderr
    found = statuses(tmp_path)
    assert found["0740000001"].startswith("pending: quiet hours until ")
    assert found["0740000002"] == f"skipped: expired (was due {iso(int(now - 8 * 3600))})"
    assert found["0740000003"].startswith("failed: send_at 'next tuesday' is not a date-time")
    assert emulator.accepted == []


def test_a_waiting_message_survives_a_restart(tmp_path: Path) -> None:
    emulator = RoEmulator(token=TOKEN)
    with EmulatorServer(emulator) as url:
        config(tmp_path, url, "    send_at: \"{{ row['When'] }}\"\n")
        log = tmp_path / "connector.log"
        first = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        due = time.time() + 6
        try:
            drop(tmp_path, [("0740000001", iso(due))])
            wait_for(lambda: len(statuses(tmp_path)) == 1, what="the results file")
        finally:
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=30) == 0
        assert emulator.accepted == [] and time.time() < due
        second = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        try:
            wait_for(lambda: len(emulator.accepted) == 1, timeout=20, what="the send after the restart")
            assert time.time() >= int(due)
            wait_for(lambda: statuses(tmp_path)["0740000001"].startswith("sent "), what="its status")
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
    assert len(emulator.accepted) == 1


def test_opted_out_numbers_from_a_file_and_from_the_command_are_never_sent(tmp_path: Path) -> None:
    emulator = RoEmulator(token=TOKEN)
    with EmulatorServer(emulator) as url:
        config(tmp_path, url, "    send_at: \"{{ row['When'] }}\"\n")
        text = (tmp_path / "config.yaml").read_text()
        (tmp_path / "config.yaml").write_text(
            text.replace("sinks:", "suppress:\n  - {path: optouts.csv, column: Mobile, country: RO}\nsinks:")
        )
        (tmp_path / "optouts.csv").write_text("Name;Mobile\nAna;0740 000 001\nnot a number;n/a\n")
        added = connector("optout", "add", "0740000002", "--country", "RO", "--note", "asked", cwd=tmp_path)
        assert added.returncode == 0 and "1 number(s) added" in added.stdout, added.stdout + added.stderr
        listed = connector("optout", "list", cwd=tmp_path)
        assert "+40740000002  added " in listed.stdout and "asked" in listed.stdout
        bad = connector("optout", "add", "12", cwd=tmp_path)
        assert bad.returncode == 1 and "'12' is not a phone number" in bad.stdout
        log = tmp_path / "connector.log"
        running = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        try:
            due = time.time() + 5
            drop(
                tmp_path,
                [
                    ("0740000001", iso(time.time())),  # on the file's list
                    ("0740000002", iso(time.time())),  # added by the command
                    ("0740000003", iso(time.time())),
                    ("0740000004", iso(due)),  # opts out while its message waits
                ],
            )
            wait_for(lambda: len(statuses(tmp_path)) == 4, what="the results file")
            first = statuses(tmp_path)
            assert first["0740000001"] == first["0740000002"] == "skipped: opted out"
            assert first["0740000003"].startswith("sent ")
            assert first["0740000004"].startswith("pending: scheduled for ")
            late = connector("optout", "add", "+40740000004", cwd=tmp_path)
            assert late.returncode == 0
            wait_for(
                lambda: statuses(tmp_path)["0740000004"] == "skipped: opted out",
                timeout=20,
                what="the waiting message skipped at its time",
            )
        finally:
            running.send_signal(signal.SIGTERM)
            assert running.wait(timeout=30) == 0
    assert [m["to"] for m in emulator.accepted] == ["+40740000003"]
    removed = connector("optout", "remove", "+40740000002", cwd=tmp_path)
    assert "1 number(s) removed" in removed.stdout
    assert "+40740000002" not in connector("optout", "list", cwd=tmp_path).stdout


def budget_config(folder: Path, url: str, budget: int, extra_rule: str = "") -> None:
    (folder / "inbox").mkdir(exist_ok=True)
    (folder / "config.yaml").write_text(
        f"""state: sqlite:///connector.db
log: {{format: json, level: info}}
timezone: Europe/Bucharest
sinks:
  ro:
    type: robo_sms_ro
    token: "${{ROBO_SMS_TOKEN}}"
    url: "{url}/api/sms/"
    concurrency: 8
    daily_budget: {budget}
sources:
  inbox: {{type: csv_folder, path: ./inbox, settle: 0ms}}
rules:
  - name: promo
    source: inbox
    to: "{{{{ row['Phone'] }}}}"
    country: RO
    message: "Offer {{{{ row['When'] }}}}"
    sink: ro
{extra_rule}"""
    )


def test_a_daily_budget_stops_exactly_at_n_with_eight_in_flight_and_two_instances(tmp_path: Path) -> None:
    emulator = RoEmulator(token=TOKEN, latency=0.02)
    with EmulatorServer(emulator) as url:
        budget_config(tmp_path, url, 25)
        drop(tmp_path, [(f"07400{i:05d}", str(i)) for i in range(40)], "a.csv")
        drop(tmp_path, [(f"07410{i:05d}", str(i)) for i in range(40)], "b.csv")
        both = [
            start_connector("once", "-c", "config.yaml", cwd=tmp_path, log=tmp_path / "once.log")
            for _ in "ab"
        ]
        for process in both:
            assert process.wait(timeout=120) == 0, (tmp_path / "once.log").read_text()[-2000:]
    assert len(emulator.accepted) == 25, "the budget was passed (or not used)"
    found = {**statuses(tmp_path, "a.results.csv"), **statuses(tmp_path, "b.results.csv")}
    waiting = [s for s in found.values() if s.startswith("pending: daily budget of 25 reached; resumes ")]
    assert len(found) == 80 and len(waiting) == 55
    assert sum(s.startswith("sent ") for s in found.values()) == 25


def test_a_frequency_cap_counts_what_every_rule_sent(tmp_path: Path) -> None:
    emulator = RoEmulator(token=TOKEN)
    with EmulatorServer(emulator) as url:
        budget_config(
            tmp_path,
            url,
            1000,
            "    when: \"row['When'] != 'reminder'\"\n    max_per_recipient: 2/24h\n"
            "  - name: reminder\n    source: inbox\n    when: \"row['When'] == 'reminder'\"\n"
            '    to: "{{ row[\'Phone\'] }}"\n    country: RO\n    message: "See you soon"\n    sink: ro\n',
        )
        drop(tmp_path, [("0740000001", "reminder")], "a.csv")  # an uncapped rule sends one
        assert connector("once", "-c", "config.yaml", cwd=tmp_path).returncode == 0
        drop(
            tmp_path,
            [("0740000001", "1"), ("0740000001", "2"), ("0740000001", "3"), ("0740000002", "4")],
            "b.csv",
        )
        once = connector("once", "-c", "config.yaml", cwd=tmp_path)
        assert once.returncode == 0, once.stdout + once.stderr
    found = list(statuses(tmp_path, "b.results.csv").values())  # by phone: the last row per number
    rows = [r["SMS Status"] for r in read_results(tmp_path / "inbox" / "processed" / "b.results.csv")]
    assert [s.split()[0] for s in rows] == ["sent", "skipped:", "skipped:", "sent"], rows
    assert rows[1] == "skipped: frequency cap (2 per 24h)" and found
    assert [m["to"] for m in emulator.accepted].count("+40740000001") == 2  # the reminder, one offer


def test_preview_shows_each_policys_verdict_and_the_budget_left(tmp_path: Path) -> None:
    budget_config(
        tmp_path,
        "http://127.0.0.1:9",
        100,
        "    send_at: \"{{ row['When'] }}\"\n    max_per_recipient: 3/24h\n",
    )
    connector("optout", "add", "+40740000003", cwd=tmp_path)
    later = time.time() + 3600
    drop(
        tmp_path,
        [("0740000001", iso(time.time() - 5)), ("0740000002", iso(later)), ("0740000003", iso(later))],
    )
    shown = connector("preview", "-c", "config.yaml", cwd=tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    out = shown.stdout
    assert (
        "would send now (at most 3 per 24h to this number; costs 1 of the 100 a day, 100 left today)" in out
    )
    assert f"would wait: scheduled for {iso(later)}" in out
    assert "would skip: opted out" in out
    assert not (tmp_path / "inbox" / "processed" / "a.results.csv").exists()  # nothing moved or written


def test_metrics_show_todays_spend_against_each_budget(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "inbox").mkdir()
    (tmp_path / "config.yaml").write_text(
        f"""state: sqlite:///connector.db
server: {{port: {port}}}
sinks:
  out: {{type: dry_run, daily_budget: 5}}
sources:
  inbox: {{type: csv_folder, path: ./inbox, settle: 0ms}}
rules:
  - {{name: hello, source: inbox, to: "{{{{ row['Phone'] }}}}", country: RO, message: hi, sink: out}}
"""
    )
    running = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=tmp_path / "run.log")
    try:
        drop(tmp_path, [("0740000001", ""), ("0740000002", ""), ("0740000003", "")])
        wait_for(lambda: len(statuses(tmp_path)) == 3, what="the results file")

        def figures() -> dict[str, float]:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return {
                line.split()[0]: float(line.split()[1])
                for line in text.splitlines()
                if line.startswith("connector_budget_")
            }

        wait_for(lambda: figures().get('connector_budget_spent_today{sink="out"}') == 3.0, what="the spend")
        assert figures()['connector_budget_daily_limit{sink="out"}'] == 5.0
    finally:
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=30) == 0

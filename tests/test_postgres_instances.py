"""SPEC "Several processes and instances" across hosts: real `connector` processes sharing one
PostgreSQL ledger, one drop folder, one Google Sheet (emulator) and one webhook source.

Whatever happens to the processes (SIGKILL mid-send, a hung poller, SIGTERM with a backlog, a
database that goes away and comes back or stalls), the provider emulator sees each number at most
once, every record ends with a status, a sheet is polled by one instance at a time, and a lost
poller is replaced within about its lease. PostgreSQL is the machine's (tests/ledgers.py): one
that cannot be reached fails these tests, it never skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from tests.emulators.keys import service_account_file
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.emulators.sheets import SheetsEmulator
from tests.helpers import (
    TOKEN,
    connector,
    free_port,
    read_results,
    ro_mobile,
    start_connector,
    wait_for,
    write_orders,
)
from tests.ledgers import fresh_postgres, raw_sql
from tests.tcp_proxy import TcpProxy
from tests.webhook_support import SECRET_NEW, encode, signed

pytestmark = pytest.mark.slow

SID = "1PgInstances_sheet-7"
TAB = "Orders"
HEADER = ["Order ID", "Name", "Phone", "Status", "SMS Status"]
STATUS_COL = 5
POLLS = "this instance polls the sheet"
EXIT_SLACK = 5.0  # interpreter exit, last status writes: on top of shutdown_grace

# Distinct number ranges per source (tests.helpers.ro_mobile), so every number names one record.
CSV_FIRST = 0
SHEET_FIRST = 10_000
HOOK_FIRST = 20_000


# -- set-up -----------------------------------------------------------------------------------------


def write_config(
    folder: Path,
    name: str,
    *,
    state: str,
    ro_url: str,
    port: int = 0,
    lease: str = "30s",
    concurrency: int = 4,
    grace: str = "5s",
    csv: bool = False,
    sheets_url: str | None = None,
    every: str = "1s",
    webhook: bool = False,
) -> Path:
    """One instance's config in `folder`; several differ only in `name` and `port`, and share the
    folder, so relative paths (inbox, key file) name the same things for every instance."""
    sources: list[str] = []
    confirm: list[str] = []
    if csv:
        (folder / "inbox").mkdir(exist_ok=True)
        sources.append("  erp: {type: csv_folder, path: ./inbox, settle: 100ms, rescan: 1s}\n")
        confirm.append("erp")
    if sheets_url is not None:
        key = service_account_file(folder / "keys", f"{sheets_url}/token")
        sources.append(
            f"  orders:\n    type: google_sheets\n    spreadsheet: {SID}\n    worksheet: {TAB}\n"
            f"    credentials: {key.relative_to(folder)}\n    key_column: Order ID\n"
            f"    api_url: {sheets_url}\n    every: {every}\n    timeout: 5s\n    max_retry_time: 2s\n"
        )
        confirm.append("orders")
    rules: list[str] = []
    if confirm:
        rules.append(
            f"  - name: confirm\n    source: [{', '.join(confirm)}]\n"
            "    when: \"row['Status'] == 'Confirmed'\"\n"
            "    to: \"{{ row['Phone'] }}\"\n    country: RO\n"
            "    message: \"Hi {{ row['Name'] }}, order {{ row['Order ID'] }} is confirmed.\"\n    sink: ro\n"
        )
    if webhook:
        sources.append(f"  shop: {{type: webhook, path: /hooks/shop, secret: {SECRET_NEW}}}\n")
        rules.append(
            "  - name: shipped\n    source: shop\n    to: \"{{ row['phone'] }}\"\n    country: RO\n"
            "    message: \"Order {{ row['order'] }} is on its way.\"\n    sink: ro\n"
        )
    text = f"""state: {state}
server: {{host: 127.0.0.1, port: {port}}}
log: {{format: json, level: info}}
shutdown_grace: {grace}
instance: {{lease: {lease}}}
sinks:
  ro:
    type: robo_sms_ro
    token: ${{ROBO_SMS_TOKEN}}
    url: {ro_url}/api/sms/
    concurrency: {concurrency}
    timeout: 5s
    max_retry_time: 5s
sources:
{"".join(sources)}rules:
{"".join(rules)}"""
    path = folder / name
    path.write_text(text)
    return path


def sheet_row(i: int) -> list[str]:
    return [f"S-{i}", f"Customer {i}", ro_mobile(i), "Confirmed", ""]


def seed_sheet(rows: range, *, settled: bool = False) -> SheetsEmulator:
    sheets = SheetsEmulator()
    body = [sheet_row(i) for i in rows]
    if settled:  # statuses from an earlier run: nothing due, a poll is one read
        body = [[*row[:-1], "sent 2026-11-01T09:00:00Z earlier"] for row in body]
    sheets.add_spreadsheet(SID, {TAB: [HEADER, *body]}, title="Shop")
    return sheets


def drop(folder: Path, name: str, rows: int, start: int) -> None:
    """An ERP export: written beside the inbox, then moved in whole."""
    staged = write_orders(folder / f".{name}", rows, start=start)
    os.replace(staged, folder / "inbox" / name)


@contextlib.contextmanager
def fleet() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at the end (a failed test) are killed."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def start(
    started: list[subprocess.Popen[bytes]], folder: Path, config: str, log: Path
) -> subprocess.Popen[bytes]:
    process = start_connector("run", "-c", config, cwd=folder, log=log)
    started.append(process)
    return process


def sigterm(process: subprocess.Popen[bytes], grace: float, log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=grace + EXIT_SLACK)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no exit within the grace after SIGTERM:\n{tail(log)}") from None
    assert code == 0, tail(log)


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def events(log: Path) -> list[dict[str, Any]]:
    """The JSON log lines (a traceback's lines are not JSON and are passed over)."""
    found: list[dict[str, Any]] = []
    if not log.exists():
        return found
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                found.append(entry)
    return found


def logged(log: Path, event: str) -> bool:
    return any(e.get("event") == event for e in events(log))


def wait_logged(check: Callable[[], bool], what: str, log: Path, timeout: float = 30) -> None:
    """wait_for, with the process's log in the failure: it says why the condition never came."""
    try:
        wait_for(check, timeout=timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its log:\n{tail(log)}") from None


def wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Up and serving; a process that exited or never answers fails with its log."""
    wait_logged(lambda: process.poll() is not None or health(base) == 200, f"{base} healthy", log)
    assert process.poll() is None, f"exited with {process.returncode}:\n{tail(log)}"


def health(base: str, timeout: float = 10) -> int | None:
    """/healthz's status code, or None when nothing answers."""
    try:
        return httpx.get(f"{base}/healthz", timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def pid_of(instance: str) -> int:
    """Instance ids are `host:pid:random` (connector/ledger/front.py)."""
    return int(instance.rsplit(":", 2)[1])


def e164(national: str) -> str:
    return "+4" + national  # 07xx xxx xxx -> +407xx xxx xxx


def csv_statuses(folder: Path) -> dict[str, str]:
    """Phone -> status, over every results file."""
    found: dict[str, str] = {}
    for path in sorted((folder / "inbox" / "processed").glob("*.results.csv")):
        for row in read_results(path):
            found[row["Phone"]] = row["SMS Status"]
    return found


def sheet_statuses(sheets: SheetsEmulator) -> dict[str, str]:
    rows = sheets.values(SID, TAB)
    assert rows[0] == HEADER
    return {r[2]: (r[STATUS_COL - 1] if len(r) >= STATUS_COL else "") for r in rows[1:]}


def word(status: str) -> str:
    return status.split(maxsplit=1)[0].rstrip(":") if status else ""


def ledger_states(url: str) -> Counter[str]:
    return Counter(
        {state: int(n) for state, n in raw_sql(url, "SELECT state, count(*) FROM sends GROUP BY state")}
    )


# -- 1. three instances, one killed ------------------------------------------------------------------

FILES = 2
ROWS_PER_FILE = 25
SHEET_ROWS = 30
DELIVERIES = 30
REPEAT_EVERY = 3  # every third delivery is also sent to the next instance, with the same webhook-id
CONCURRENCY = 4
GRACE = 5.0


async def deliver_spread(bases: list[str]) -> dict[str, list[httpx.Response]]:
    """Deliveries round-robin over the instances, some twice to two instances at once, as a sender
    behind a load balancer retrying a delivery it timed out on."""
    async with httpx.AsyncClient(timeout=30) as client:

        async def post(base: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
            return await client.post(f"{base}/hooks/shop", content=body, headers=headers)

        sent: dict[str, list[asyncio.Task[httpx.Response]]] = {}
        for i in range(DELIVERIES):
            n = HOOK_FIRST + i
            body = encode({"order": f"W-{n}", "phone": ro_mobile(n)})
            msg_id = f"msg_{n}"
            headers = signed(body, msg_id, SECRET_NEW)
            targets = [bases[i % len(bases)]]
            if i % REPEAT_EVERY == 0:
                targets.append(bases[(i + 1) % len(bases)])
            sent[msg_id] = [asyncio.create_task(post(base, body, headers)) for base in targets]
        return {msg_id: list(await asyncio.gather(*tasks)) for msg_id, tasks in sent.items()}


def test_three_instances_one_killed_mid_send_each_number_once_every_record_a_status(tmp_path: Path) -> None:
    ro = RoEmulator(token=TOKEN, latency=0.4)  # slow: every instance has sends on the wire
    sheet_rows = range(SHEET_FIRST, SHEET_FIRST + SHEET_ROWS)
    sheets = seed_sheet(sheet_rows)
    logs = [tmp_path / f"run-{n}.log" for n in (1, 2, 3)]
    with (
        fresh_postgres() as db,
        EmulatorServer(ro) as ro_url,
        EmulatorServer(sheets) as sheets_url,
        fleet() as started,
    ):
        ports = [free_port() for _ in logs]
        for n, port in enumerate(ports, 1):
            write_config(
                tmp_path,
                f"config-{n}.yaml",
                state=db,
                ro_url=ro_url,
                port=port,
                lease="3s",  # the killed instance's work comes back within seconds
                concurrency=CONCURRENCY,
                grace=f"{GRACE:g}s",
                csv=True,
                sheets_url=sheets_url,
                webhook=True,
            )
        runs = [start(started, tmp_path, f"config-{n}.yaml", log) for n, log in enumerate(logs, 1)]
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base, process, log in zip(bases, runs, logs, strict=True):
            wait_healthy(base, process, log)

        for n in range(FILES):
            drop(tmp_path, f"orders-{n}.csv", ROWS_PER_FILE, start=CSV_FIRST + n * ROWS_PER_FILE)
        answers = asyncio.run(deliver_spread(bases))
        event_ids: dict[str, str] = {}
        for msg_id, replies in answers.items():
            assert [r.status_code for r in replies] == [202] * len(replies), [r.text for r in replies]
            bodies = [r.json() for r in replies]
            # The same delivery at two instances is one delivery: one answer, one event.
            assert all(b == bodies[0] for b in bodies), bodies
            [event] = bodies[0]["events"]
            event_ids[msg_id] = event["id"]
        # An event accepted by one instance is visible at another: they share the ledger.
        first = event_ids[f"msg_{HOOK_FIRST}"]
        assert httpx.get(f"{bases[2]}/events/{first}", timeout=10).status_code == 200

        # The victim: an instance with requests on the wire that also holds a file or the sheet.
        # Frozen (SIGSTOP) before it is counted, so what it has `sending` cannot change under the
        # count: if its sends happened to be between two requests, it is let go and asked again.
        victim_id = ""
        in_flight = 0

        def busy_holder_frozen() -> bool:
            nonlocal victim_id, in_flight
            sending = dict(
                raw_sql(db, "SELECT owner, count(*) FROM sends WHERE state = 'sending' GROUP BY owner")
            )
            holders = {o for (o,) in raw_sql(db, "SELECT owner FROM holds WHERE name NOT LIKE ?", ["job:%"])}
            candidates = [o for o in holders if o is not None and sending.get(o, 0) > 0]
            if not candidates:
                return False
            victim_id = candidates[0]
            os.kill(pid_of(victim_id), signal.SIGSTOP)
            [(in_flight,)] = raw_sql(
                db, "SELECT count(*) FROM sends WHERE owner = ? AND state = 'sending'", [victim_id]
            )
            if in_flight == 0:
                os.kill(pid_of(victim_id), signal.SIGCONT)
            return in_flight > 0

        wait_for(busy_holder_frozen, timeout=30, what="an instance holding a file or the sheet, mid-send")
        victim = next(p for p in runs if p.pid == pid_of(victim_id))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        # Its ledger rows are frozen for good now: what it had `sending` is what must end `unknown`.
        [(at_kill,)] = raw_sql(
            db, "SELECT count(*) FROM sends WHERE owner = ? AND state = 'sending'", [victim_id]
        )
        assert at_kill == in_flight and 1 <= in_flight <= CONCURRENCY, (in_flight, at_kill)

        # The others find it gone (its pid, on this host; its lapsed lease, from another host) and
        # release what it held: its `sending` become unknown, the rest is theirs to send.
        wait_for(
            lambda: not raw_sql(db, "SELECT 1 FROM instances WHERE id = ?", [victim_id]),
            timeout=30,
            what="the killed instance's lease recovered by the others",
        )
        for process, log in zip(runs, logs, strict=True):
            if process is not victim:
                assert process.poll() is None, tail(log)
                sigterm(process, GRACE, log)

        ro.latency = 0.0
        final = connector("once", "-c", "config-1.yaml", cwd=tmp_path, timeout=60)
        assert final.returncode == 0, final.stdout + final.stderr

        states = ledger_states(db)
        # The webhook records' statuses: from the ledger, as every instance has stopped.
        hook_rows = raw_sql(db, "SELECT key, state, recipient FROM sends WHERE source = 'shop'")
        victim_holds = raw_sql(db, "SELECT name FROM holds WHERE owner = ?", [victim_id])

    sent_to = Counter(m["to"] for m in ro.accepted)
    assert sent_to and max(sent_to.values()) == 1, [n for n, c in sent_to.items() if c > 1]

    csv_rows = FILES * ROWS_PER_FILE
    total = csv_rows + SHEET_ROWS + DELIVERIES
    # Every record has a status, and each is final: sent, or unknown for what was on the wire.
    from_csv = csv_statuses(tmp_path)
    assert len(from_csv) == csv_rows, sorted(set(map(ro_mobile, range(csv_rows))) - set(from_csv))
    assert not list((tmp_path / "inbox").glob("*.csv")), "a file was left in the inbox"
    from_sheet = sheet_statuses(sheets)
    assert set(from_sheet) == {ro_mobile(i) for i in sheet_rows}
    hooks = {key: state for key, state, _ in hook_rows}
    assert set(hooks) == set(event_ids.values()), "one record per delivery, however often delivered"
    words = Counter(word(s) for s in (*from_csv.values(), *from_sheet.values())) + Counter(hooks.values())
    assert set(words) <= {"sent", "unknown"}, words
    assert words["sent"] + words["unknown"] == total
    # Only what the killed instance had on the wire is unknown; everything it held but had not
    # sent went out once, from another instance.
    assert states == Counter({"sent": total - in_flight, "unknown": in_flight}), states
    assert words["unknown"] == in_flight <= CONCURRENCY
    # Whatever says `sent` reached the provider; nothing reached it that is not one of these records.
    sent_numbers = {e164(p) for p, s in (*from_csv.items(), *from_sheet.items()) if word(s) == "sent"}
    sent_numbers |= {to for _, state, to in hook_rows if state == "sent"}
    assert sent_numbers <= set(sent_to)
    assert len(sent_to) <= total
    assert not victim_holds, "a hold of the dead instance was never released"


# -- 2. a dead poller is replaced within its lease ----------------------------------------------------

LEASE_S = 2.0
EVERY_S = 1.0
TAKEOVER_SLACK_S = 3.0  # start of a poll, the read, the send, the write


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(signal.SIGKILL, id="killed"),
        # A hung process (a stopped VM, a long GC pause): its pid lives on, so nothing but its
        # lease can tell the others it is gone. This is the case of an instance on another host.
        pytest.param(signal.SIGSTOP, id="hung"),
    ],
)
def test_a_lost_sheet_poller_is_replaced_within_about_its_lease(tmp_path: Path, how: signal.Signals) -> None:
    ro = RoEmulator(token=TOKEN)
    sheets = seed_sheet(range(SHEET_FIRST, SHEET_FIRST + 3))
    logs = [tmp_path / "run-1.log", tmp_path / "run-2.log"]
    with (
        fresh_postgres() as db,
        EmulatorServer(ro) as ro_url,
        EmulatorServer(sheets) as sheets_url,
        fleet() as started,
    ):
        for n in (1, 2):
            write_config(
                tmp_path,
                f"config-{n}.yaml",
                state=db,
                ro_url=ro_url,
                lease=f"{LEASE_S:g}s",
                grace="3s",
                sheets_url=sheets_url,
                every=f"{EVERY_S:g}s",
            )
        runs = [start(started, tmp_path, f"config-{n}.yaml", log) for n, log in enumerate(logs, 1)]
        for log in logs:
            wait_logged(lambda log=log: logged(log, "connector running"), "both instances running", log)
        wait_for(
            lambda: all(word(s) == "sent" for s in sheet_statuses(sheets).values()),
            timeout=30,
            what="the first rows sent by whichever instance polls",
        )
        pollers = [n for n, log in enumerate(logs) if logged(log, POLLS)]
        assert len(pollers) == 1, f"expected one poller, got {pollers}"
        victim, survivor = runs[pollers[0]], runs[1 - pollers[0]]
        victim_log, survivor_log = logs[pollers[0]], logs[1 - pollers[0]]
        assert not logged(survivor_log, POLLS)

        victim.send_signal(how)
        if how == signal.SIGKILL:
            victim.wait(timeout=10)
        lost_at = time.monotonic()
        late = SHEET_FIRST + 100
        sheets.insert_rows(SID, TAB, len(sheets.values(SID, TAB)) + 1, [sheet_row(late)])
        wait_logged(
            lambda: word(sheet_statuses(sheets).get(ro_mobile(late), "")) == "sent",
            "the row added after the poller was lost, sent by the other instance",
            survivor_log,
        )
        took = time.monotonic() - lost_at
        assert logged(survivor_log, POLLS)
        if how == signal.SIGSTOP:
            # Woken, it learns it lost its lease; it must not take the sheet back or send again.
            victim.send_signal(signal.SIGCONT)
            wait_logged(
                lambda: any(str(e.get("event", "")).startswith("lease lost") for e in events(victim_log)),
                "the woken instance noticing its lost lease",
                victim_log,
            )
            sigterm(victim, 3.0, victim_log)
        sigterm(survivor, 3.0, survivor_log)

    # The lost poller's lease runs out after at most LEASE_S; the other's next poll takes the sheet.
    assert took <= LEASE_S + EVERY_S + TAKEOVER_SLACK_S, f"took {took:.1f}s to take the sheet over"
    sent_to = Counter(m["to"] for m in ro.accepted)
    assert len(sent_to) == 4 and max(sent_to.values()) == 1, sent_to
    assert word(sheet_statuses(sheets)[ro_mobile(late)]) == "sent"


# -- 3. one poller at a time ----------------------------------------------------------------------------

WINDOW_S = 5.0


def test_two_instances_read_a_sheet_about_as_often_as_one(tmp_path: Path) -> None:
    ro = RoEmulator(token=TOKEN)
    sheets = seed_sheet(range(SHEET_FIRST, SHEET_FIRST + 5), settled=True)
    logs = [tmp_path / "run-1.log", tmp_path / "run-2.log"]
    with (
        fresh_postgres() as db,
        EmulatorServer(ro) as ro_url,
        EmulatorServer(sheets) as sheets_url,
        fleet() as started,
    ):
        for n in (1, 2):
            write_config(
                tmp_path,
                f"config-{n}.yaml",
                state=db,
                ro_url=ro_url,
                lease="30s",  # no lease lapses within the test: the hold never changes hands
                grace="3s",
                sheets_url=sheets_url,
                every=f"{EVERY_S:g}s",
            )
        first = start(started, tmp_path, "config-1.yaml", logs[0])
        wait_logged(lambda: logged(logs[0], POLLS), "the first instance polling", logs[0])
        wait_for(lambda: sheets.counts["values.get"] >= 1, what="its first read")
        sheets.reset_counts()
        time.sleep(WINDOW_S)  # the measurement window: reads by one instance alone
        alone = sheets.counts["values.get"]

        second = start(started, tmp_path, "config-2.yaml", logs[1])
        wait_for(lambda: logged(logs[1], "connector running"), timeout=30, what="the second instance")
        # Its first poll is scheduled at start: it has had its chance to read once settled.
        wait_for(
            lambda: any(e.get("event") == "sheet polled" for e in events(logs[1])),
            what="the second instance's poll job",
        )
        sheets.reset_counts()
        time.sleep(WINDOW_S)  # the same window with two instances on the sheet
        together = sheets.counts["values.get"]
        assert not logged(logs[1], POLLS), "the second instance took the sheet from a live poller"
        sigterm(second, 3.0, logs[1])
        sigterm(first, 3.0, logs[0])

    # One read per `every` (a settled sheet is one values.get per poll): the schedule's count.
    scheduled = WINDOW_S / EVERY_S
    assert scheduled - 2 <= alone <= scheduled + 2, alone
    assert together < 1.5 * alone, f"{together} reads with two instances, {alone} with one"
    assert ro.accepted == []


# -- 4. the database goes away and comes back ---------------------------------------------------------

OUTAGE_ROWS = 40
OUTAGE_CONCURRENCY = 2


def via(url: str, port: int) -> str:
    """The ledger URL with the proxy's address instead of the database's."""
    parts = urlsplit(url)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


def test_a_database_outage_pauses_sending_and_nothing_is_lost_or_doubled(tmp_path: Path) -> None:
    ro = RoEmulator(token=TOKEN, latency=0.2)  # 40 rows at 2 in flight: ~4 s of sending to cut into
    log = tmp_path / "run.log"
    hook = HOOK_FIRST
    body = encode({"order": f"W-{hook}", "phone": ro_mobile(hook)})
    headers = signed(body, f"msg_{hook}", SECRET_NEW)
    with fresh_postgres() as db, EmulatorServer(ro) as ro_url, fleet() as started:
        target = urlsplit(db)
        with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
            port = free_port()
            write_config(
                tmp_path,
                "config.yaml",
                state=via(db, proxy.port),
                ro_url=ro_url,
                port=port,
                lease="30s",  # longer than the outage: this instance keeps what it holds
                concurrency=OUTAGE_CONCURRENCY,
                grace="3s",
                csv=True,
                webhook=True,
            )
            base = f"http://127.0.0.1:{port}"
            process = start(started, tmp_path, "config.yaml", log)
            wait_healthy(base, process, log)
            drop(tmp_path, "orders.csv", OUTAGE_ROWS, start=CSV_FIRST)
            wait_for(lambda: len(ro.accepted) >= 6, timeout=30, what="the first sends")

            proxy.cut()
            at_cut = len(ro.accepted)
            # Reads fail (after the pool's wait for a connection): unhealthy, not hanging.
            wait_for(
                lambda: health(base, timeout=15) == 503, timeout=30, what="/healthz 503 during the outage"
            )
            # Requests that were already marked `sending` may still land; nothing new leaves.
            frozen = len(ro.accepted)
            assert frozen <= at_cut + OUTAGE_CONCURRENCY, (at_cut, frozen)
            assert frozen < OUTAGE_ROWS, "everything was sent before the outage: nothing was due"
            with ThreadPoolExecutor(1) as pool:
                # A delivery during the outage cannot be made durable: the sender is told to retry.
                during = pool.submit(
                    httpx.post, f"{base}/hooks/shop", content=body, headers=headers, timeout=30
                )
                time.sleep(2.0)  # the outage goes on: a window in which nothing may be sent
                assert len(ro.accepted) == frozen, "a message was sent while the ledger was unreachable"
                refused = during.result(timeout=30)
            assert refused.status_code == 503, refused.text
            assert len(ro.accepted) == frozen, "a message was sent while the ledger was unreachable"
            assert process.poll() is None, f"the process exited during the outage: {tail(log)}"
            assert health(base, timeout=15) == 503

            proxy.restore()
            wait_logged(lambda: health(base) == 200, "/healthz 200 once the ledger is back", log)
            # Reads come back first; writes once the ledger's writer wakes from its back-off. A retry
            # before that may wait out the intake limit and be refused again, so the sender here
            # retries once writes go through (the stall test below covers a refused claim).
            wait_logged(
                lambda: "ledger reachable again; sending resumes" in [e.get("event") for e in events(log)],
                "writes to the ledger again",
                log,
            )
            # The sender's retry of the refused delivery (same webhook-id): accepted, and sent once.
            retried = httpx.post(f"{base}/hooks/shop", content=body, headers=headers, timeout=30)
            assert retried.status_code == 202, retried.text
            [event] = retried.json()["events"]
            results = tmp_path / "inbox" / "processed" / "orders.results.csv"
            wait_logged(
                lambda: (
                    results.exists() and all(word(r["SMS Status"]) == "sent" for r in read_results(results))
                ),
                "every row sent and its status written",
                log,
                timeout=45,
            )
            wait_logged(
                lambda: httpx.get(f"{base}/events/{event['id']}", timeout=10).json().get("state") == "sent",
                f"the retried delivery sent (its event now: {event})",
                log,
            )
            sigterm(process, 3.0, log)
        states = ledger_states(db)

    sent_to = Counter(m["to"] for m in ro.accepted)
    assert len(sent_to) == OUTAGE_ROWS + 1 and max(sent_to.values()) == 1, sent_to
    rows = read_results(results)
    assert len(rows) == OUTAGE_ROWS and all(word(r["SMS Status"]) == "sent" for r in rows)
    assert states == Counter({"sent": OUTAGE_ROWS + 1}), states
    said = [e.get("event") for e in events(log)]
    assert "ledger unavailable: sending paused until it answers" in said
    assert "ledger reachable again; sending resumes" in said


def test_a_delivery_refused_while_the_ledger_stalls_is_sent_once_when_retried(tmp_path: Path) -> None:
    """A stalled ledger (here: the notes table locked by someone else) keeps a delivery's claim
    from committing within the intake wait: the sender gets 503 and retries. The claim may commit
    after the 503 (the write is not withdrawn); the retry is then answered from it, and its
    message must still be sent, once, by this running process."""
    ro = RoEmulator(token=TOKEN)
    log = tmp_path / "run.log"
    body = encode({"order": f"W-{HOOK_FIRST}", "phone": ro_mobile(HOOK_FIRST)})
    headers = signed(body, f"msg_{HOOK_FIRST}", SECRET_NEW)
    with fresh_postgres() as db, EmulatorServer(ro) as ro_url, fleet() as started:
        port = free_port()
        # A lease longer than the stall: renewals wait behind it too, and a lapsed lease would
        # release the claim to the sweeper by another road.
        write_config(
            tmp_path, "config.yaml", state=db, ro_url=ro_url, port=port, lease="30s", grace="3s", webhook=True
        )
        base = f"http://127.0.0.1:{port}"
        process = start(started, tmp_path, "config.yaml", log)
        wait_healthy(base, process, log)
        with psycopg.connect(db) as locker:
            locker.execute("LOCK TABLE notes IN EXCLUSIVE MODE")  # reads pass, the claim's write waits
            refused = httpx.post(f"{base}/hooks/shop", content=body, headers=headers, timeout=30)
        assert refused.status_code == 503, refused.text
        retried = httpx.post(f"{base}/hooks/shop", content=body, headers=headers, timeout=30)
        assert retried.status_code == 202, retried.text
        [event] = retried.json()["events"]
        try:
            # One sweep of held messages (every lease/2) is given time, beyond the send itself.
            wait_logged(
                lambda: httpx.get(f"{base}/events/{event['id']}", timeout=10).json().get("state") == "sent",
                "the retried delivery's message sent",
                log,
                timeout=20,
            )
        finally:
            stuck = raw_sql(db, "SELECT state, owner FROM sends WHERE key = ?", [event["id"]])
            sigterm(process, 3.0, log)
        assert stuck == [("sent", None)], stuck
    assert [m["to"] for m in ro.accepted] == [e164(ro_mobile(HOOK_FIRST))]

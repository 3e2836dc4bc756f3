"""Set-up shared by the end-to-end tests: folders, configs, the connector as a real subprocess."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from connector.events import Message

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "e2e-secret-token"


def ro_mobile(i: int) -> str:
    """Distinct valid Romanian mobile numbers, written the way an ERP would (national format)."""
    return f"07{40 + (i // 1_000_000) % 10}{i % 1_000_000:06d}"


def write_orders(path: Path, rows: int, start: int = 0) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Order ID", "Name", "Phone", "Status"])
        for i in range(start, start + rows):
            writer.writerow([f"A-{i}", f"Customer {i}", ro_mobile(i), "Confirmed"])
    return path


def ro_config(
    folder: Path,
    url: str,
    *,
    settle: str = "100ms",
    concurrency: int = 8,
    key_column: str | None = None,
    extra: str = "",
) -> Path:
    inbox = folder / "inbox"
    inbox.mkdir(exist_ok=True)
    key = f"    key_column: {key_column}\n" if key_column else ""
    text = f"""state: sqlite:///connector.db
log: {{format: json, level: info}}
sinks:
  ro:
    type: robo_sms_ro
    token: ${{ROBO_SMS_TOKEN}}
    url: {url}/api/sms/
    concurrency: {concurrency}
    timeout: 5s
    max_retry_time: 5s
{extra}
sources:
  erp:
    type: csv_folder
    path: ./inbox
    settle: {settle}
{key}rules:
  - name: confirm
    source: erp
    when: "row['Status'] == 'Confirmed'"
    to: "{{{{ row['Phone'] }}}}"
    country: RO
    message: "Hi {{{{ row['Name'] }}}}, order {{{{ row['Order ID'] }}}} is confirmed."
    sink: ro
"""
    path = folder / "config.yaml"
    path.write_text(text)
    return path


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "ROBO_SMS_TOKEN": TOKEN}


def connector(
    *args: str, cwd: Path, timeout: float = 120, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        cwd=cwd,
        env=env() if environ is None else environ,
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def start_connector(*args: str, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "connector", *args],
            cwd=cwd,
            env=env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Hook:
    """An `on_sending` hook that records which message ids each request carried."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, group: Sequence[Message]) -> None:
        self.calls.append([m.id for m in group])


class MemoryNotes:
    """The ledger's notes, kept in memory, for source tests that run without a ledger."""

    def __init__(self) -> None:
        self.notes: dict[tuple[str, str], str] = {}

    async def get_note(self, scope: str, key: str) -> str | None:
        return self.notes.get((scope, key))

    async def set_note(self, scope: str, key: str, value: str) -> None:
        self.notes[(scope, key)] = value

    async def notes_in(self, scope: str) -> dict[str, str]:
        return {k: v for (s, k), v in self.notes.items() if s == scope}

    async def drop_notes(self, scope: str, keys: Sequence[str]) -> None:
        for key in keys:
            self.notes.pop((scope, key), None)


def pk_config(folder: Path, url: str, key: str, *, port: int = 0, extra: str = "") -> Path:
    """A CSV folder into the Robo SMS Pakistan sink: one promo text for every row (bulk)."""
    (folder / "inbox").mkdir(exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(f"""
state: sqlite:///connector.db
server: {{host: 127.0.0.1, port: {port}}}
log: {{format: json, level: info}}
sinks:
  pk:
    type: robo_sms_pk
    email: ops@example.com
    key: {key}
    mask: SMS-ALERT
    url: {url}/api
{extra}sources:
  erp: {{type: csv_folder, path: ./inbox, settle: 0ms}}
rules:
  - name: promo
    source: erp
    to: "{{{{ row['Phone'] }}}}"
    country: PK
    message: "Eid sale: 20% off until Friday."
    sink: pk
""")
    return path

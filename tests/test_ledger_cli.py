"""The ledger as people see it: `check` verifies it (reachable, schema version), `status` lists the
instances sharing it, and a PostgreSQL ledger works end to end from config.yaml, password unseen."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.helpers import connector, free_port, read_results, start_connector, wait_for
from tests.ledgers import fresh_postgres, raw_sql

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-pw"  # trust auth lets any password through: enough to prove it is never shown


def config(folder: Path, state: str, *, port: int = 0) -> None:
    (folder / "inbox").mkdir(exist_ok=True)
    (folder / "config.yaml").write_text(
        f"""state: {state}
server: {{port: {port}}}
sinks:
  out: {{type: dry_run, path: outbox.jsonl}}
sources:
  inbox: {{type: csv_folder, path: ./inbox, settle: 0ms}}
rules:
  - name: hello
    source: inbox
    to: "{{{{ row['Phone'] }}}}"
    country: RO
    message: "Hello {{{{ row['Name'] }}}}"
    sink: out
"""
    )


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@")


def test_check_verifies_a_postgresql_ledger_without_showing_its_password(tmp_path: Path) -> None:
    with fresh_postgres() as url:
        config(tmp_path, with_password(url))
        empty = connector("check", "-c", "config.yaml", cwd=tmp_path)
        assert empty.returncode == 0, empty.stdout + empty.stderr
        assert "reachable, empty: the tables are created at the first start" in empty.stdout
        (tmp_path / "inbox" / "a.csv").write_text("Name,Phone\nAna,0740123456\n")
        assert connector("once", "-c", "config.yaml", cwd=tmp_path).returncode == 0
        ready = connector("check", "-c", "config.yaml", cwd=tmp_path)
        assert ready.returncode == 0 and "reachable, schema version 4" in ready.stdout
        offline = connector("check", "--offline", "-c", "config.yaml", cwd=tmp_path)
        assert offline.returncode == 0 and "ledger   not checked (--offline)" in offline.stdout
        raw_sql(url, "UPDATE meta SET value = '7' WHERE name = 'schema'")
        newer = connector("check", "-c", "config.yaml", cwd=tmp_path)
        assert newer.returncode == 1 and "schema version 7 is newer than this connector" in newer.stdout
        for answer in (empty, ready, offline, newer):
            assert PASSWORD not in answer.stdout + answer.stderr


def test_check_fails_when_postgresql_cannot_be_reached(tmp_path: Path) -> None:
    config(tmp_path, f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nowhere")
    answer = connector("check", "-c", "config.yaml", cwd=tmp_path)
    assert answer.returncode == 1
    assert (
        "ledger   UNUSABLE: cannot reach the ledger at postgresql://postgres:***@127.0.0.1" in answer.stdout
    )
    assert PASSWORD not in answer.stdout + answer.stderr


def test_once_on_postgresql_sends_records_and_counts(tmp_path: Path) -> None:
    with fresh_postgres() as url:
        config(tmp_path, with_password(url))
        (tmp_path / "inbox" / "a.csv").write_text("Name,Phone\nAna,0740123456\nIon,12\n")
        once = connector("once", "-c", "config.yaml", cwd=tmp_path)
        assert once.returncode == 0, once.stdout + once.stderr
        statuses = [r["SMS Status"] for r in read_results(tmp_path / "inbox" / "processed" / "a.results.csv")]
        assert statuses[0].startswith("sent ") and statuses[1].startswith("failed:")
        status = connector("status", "-c", "config.yaml", cwd=tmp_path)
        row = next(line for line in status.stdout.splitlines() if line.startswith("inbox"))
        assert row.split()[2:] == ["0", "0", "1", "1", "0", "0"]  # pending .. failed unknown skipped
        assert "instances: none running" in status.stdout
        assert PASSWORD not in once.stdout + once.stderr + status.stdout + status.stderr
        assert raw_sql(url, "SELECT count(*) FROM instances") == [(0,)]  # released at its stop


def test_status_lists_a_running_instance_and_what_it_holds(tmp_path: Path) -> None:
    port = free_port()
    config(tmp_path, "sqlite:///connector.db", port=port)
    running = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=tmp_path / "run.log")
    try:

        def sweeping() -> bool:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
            except httpx.HTTPError:
                return False
            return "job:sweeper" in health["instance"]["holds"]

        wait_for(sweeping, timeout=30, what="the running instance's first sweep")
        status = connector("status", "-c", "config.yaml", cwd=tmp_path)
        assert status.returncode == 0
        assert "instances sharing the ledger (1):" in status.stdout
        assert f"pid {running.pid}" in status.stdout and "lease " in status.stdout
        assert "holds job:sweeper; 0 sending, 0 claimed not yet sent" in status.stdout
    finally:
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=30) == 0

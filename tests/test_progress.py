"""Progress of long work (connector/progress.py): a self-rewriting line on a terminal, log lines
elsewhere, nothing for small work; and `connector once` / `preview` / `run` showing it for real."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from connector import logs, progress
from connector.progress import Progress, at_most, duration
from tests.emulators.keys import service_account_file
from tests.emulators.server import EmulatorServer
from tests.emulators.sheets import SheetsEmulator
from tests.helpers import env, free_port, read_results, ro_mobile, write_orders

CLEAR = "\r\033[K"


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(autouse=True)
def no_terminal() -> Iterator[None]:
    """Each test starts and ends with bars off, as a process does until `once` turns them on."""
    progress.draw_on(None)
    yield
    progress.draw_on(None)


# -- the reporter ---------------------------------------------------------------------------------


def test_on_a_terminal_one_line_shows_rows_rate_and_time_left_then_ends(clock: Clock) -> None:
    tty = FakeTty()
    with Progress("erp orders.csv", 100_000, stream=tty, clock=clock) as bar:
        clock.now += 10
        bar.add(50_000)
        assert (
            tty.getvalue() == f"{CLEAR}erp orders.csv: 50,000 / 100,000 rows (50%), 5,000 rows/s, 10 s left"
        )
        clock.now += 10
        bar.add(50_000)
    assert tty.getvalue().endswith(f"{CLEAR}erp orders.csv: 100,000 rows in 20 s, 5,000 rows/s\n")
    assert tty.getvalue().count("\n") == 1  # one line, rewritten in place, ended once


def test_the_bar_is_redrawn_at_most_five_times_a_second(clock: Clock) -> None:
    tty = FakeTty()
    with Progress("erp orders.csv", 100_000, stream=tty, clock=clock) as bar:
        for _ in range(100):  # 2 s of 20 ms chunks
            clock.now += 0.02
            bar.add(100)
    draws = tty.getvalue().count(CLEAR)
    assert 8 <= draws <= 11, tty.getvalue()  # ~every 0.2 s, plus the final line


def test_work_stopped_midway_says_how_far_it_got(clock: Clock) -> None:
    tty = FakeTty()
    with pytest.raises(RuntimeError), Progress("erp orders.csv", 100_000, stream=tty, clock=clock) as bar:
        clock.now += 3
        bar.add(12_000)
        raise RuntimeError("stopped")
    assert tty.getvalue().endswith(f"{CLEAR}erp orders.csv: 12,000 of 100,000 rows in 3.0 s, 4,000 rows/s\n")


@pytest.mark.parametrize("tty_stream", [True, False])
def test_nothing_is_shown_below_the_threshold(clock: Clock, tty_stream: bool) -> None:
    stream = FakeTty() if tty_stream else io.StringIO()
    with capture_logs() as events, Progress("erp small.csv", 1_999, stream=stream, clock=clock) as bar:
        for _ in range(40):
            clock.now += 1
            bar.add(49)
    assert stream.getvalue() == "" and events == []


def test_work_over_before_the_first_refresh_shows_nothing(clock: Clock) -> None:
    tty = FakeTty()
    with Progress("erp orders.csv", 100_000, stream=tty, clock=clock) as bar:
        clock.now += 0.1
        bar.add(50)  # a preview of 50 rows out of a big file
    assert tty.getvalue() == ""


def test_elsewhere_a_log_line_every_few_seconds(clock: Clock) -> None:
    fields = {"source": "erp", "file": "orders.csv"}
    with capture_logs() as events, Progress("erp orders.csv", 10_000, fields=fields, clock=clock) as bar:
        for _ in range(10):  # 10 s of 1,000 rows/s
            clock.now += 1
            bar.add(1_000)
    lines = [e for e in events if e["event"] == "progress"]
    assert [e["rows_done"] for e in lines] == [5_000, 10_000]  # every LOG_EVERY_S (5 s)
    assert lines[0] == {
        "event": "progress",
        "log_level": "info",
        "source": "erp",
        "file": "orders.csv",
        "rows_done": 5_000,
        "rows_total": 10_000,
        "rows_per_s": 1_000,
        "eta_s": 5,
    }
    done = [e for e in events if e["event"] == "progress done"]
    assert len(done) == 1 and done[0]["rows_done"] == 10_000 and done[0]["elapsed_s"] == 10.0


def test_a_log_line_takes_the_bar_off_the_line_first(clock: Clock) -> None:
    tty = FakeTty()
    logs.configure("console", "info", stream=tty)
    progress.draw_on(tty)
    try:
        with Progress("erp orders.csv", 100_000, clock=clock) as bar:
            clock.now += 1
            bar.add(5_000)
            structlog.get_logger("t").info("sink ready")
            clock.now += 1
            bar.add(5_000)
    finally:
        logs.configure()
    first, second, end = tty.getvalue().split("\n")
    empty, drawn, log_line = first.split(CLEAR)  # the bar, cleared, then the log line
    assert empty == "" and drawn.startswith("erp orders.csv: 5,000 / 100,000 rows (5%)")
    assert "sink ready" in log_line and "rows" not in log_line
    empty, drawn, last = second.split(CLEAR)  # drawn again below it
    assert empty == "" and drawn.startswith("erp orders.csv: 10,000 / 100,000 rows (10%)")
    assert last == "erp orders.csv: 10,000 of 100,000 rows in 2.0 s, 5,000 rows/s" and end == ""


def test_one_bar_at_a_time_the_other_work_logs(clock: Clock) -> None:
    tty = FakeTty()
    progress.draw_on(tty)
    with capture_logs() as events:
        with (
            Progress("erp a.csv", 10_000, clock=clock) as first,
            Progress("erp b.csv", 10_000, clock=clock) as second,
        ):
            for _ in range(5):
                clock.now += 1
                first.add(1_000)
                second.add(1_000)
        with Progress("erp c.csv", 10_000, clock=clock) as third:  # the line is free again
            clock.now += 1
            third.add(1_000)
    assert "a.csv" in tty.getvalue() and "c.csv" in tty.getvalue() and "b.csv" not in tty.getvalue()
    assert [e["rows_done"] for e in events if e["event"] == "progress"] == [5_000]  # b, logged


def test_a_limit_caps_the_total(clock: Clock) -> None:
    tty = FakeTty()
    with at_most(3_000), Progress("erp orders.csv", 100_000, stream=tty, clock=clock) as bar:
        clock.now += 1
        bar.add(1_500)
    assert f"{CLEAR}erp orders.csv: 1,500 / 3,000 rows (50%), 1,500 rows/s, 1.0 s left" in tty.getvalue()
    assert Progress("after", 100_000).total == 100_000


def test_a_line_wider_than_the_terminal_is_cut_so_that_it_never_wraps(clock: Clock) -> None:
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
    with os.fdopen(child, "w") as tty:
        with Progress("erp a-rather-long-export-name.csv", 100_000, stream=tty, clock=clock) as bar:
            clock.now += 1
            bar.add(5_000)
        out = os.read(main, 4096).decode()
    os.close(main)
    drawn = [part.rstrip("\r\n") for part in out.split(CLEAR) if part]
    assert drawn and all(len(line) <= 39 for line in drawn), drawn
    assert drawn[0] == "erp a-rather-long-export-name.csv: 5..."


class GoneTty(FakeTty):
    def write(self, text: str) -> int:
        raise OSError(errno.EIO, "Input/output error")


def test_a_terminal_that_went_away_fails_no_work(clock: Clock) -> None:
    progress.draw_on(GoneTty())
    with Progress("erp a.csv", 100_000, clock=clock) as bar:
        clock.now += 1
        bar.add(5_000)  # would raise if the bar's write were not guarded
    with capture_logs() as events, Progress("erp b.csv", 100_000, clock=clock) as bar:
        clock.now += 5
        bar.add(5_000)
    assert [e["event"] for e in events] == ["progress", "progress done"]  # logged instead


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0 s"), (4.25, "4.2 s"), (35.4, "35 s"), (125, "2 min 5 s"), (3_790, "1 h 3 min")],
)
def test_durations_read_as_a_person_would_say_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# -- the commands -----------------------------------------------------------------------------------

ROWS = 12_000
# The log interval shortened in the child itself: a test hook, not a setting.
SHORT_LOG_INTERVAL = (
    "import sys; from connector import progress; progress.LOG_EVERY_S = 0.1; "
    "from connector.cli import main; sys.exit(main(sys.argv[1:]))"
)


def csv_config(folder: Path, fmt: str, *, port: int = 0, rows: int = ROWS, sheet: str = "") -> Path:
    """A folder with a file of `rows` orders into a dry-run sink; `sheet`: a Google Sheets source
    named `orders` too (its YAML)."""
    (folder / "inbox").mkdir()
    if rows:
        write_orders(folder / "inbox" / "orders.csv", rows)
    path = folder / "config.yaml"
    path.write_text(f"""state: sqlite:///connector.db
server: {{host: 127.0.0.1, port: {port}}}
log: {{format: {fmt}, level: info}}
sinks:
  outbox: {{type: dry_run}}
sources:
  erp: {{type: csv_folder, path: ./inbox, settle: 0ms}}
{sheet}rules:
  - name: confirm
    source: [erp{", orders" if sheet else ""}]
    to: "{{{{ row['Phone'] }}}}"
    country: RO
    message: "Hi {{{{ row['Name'] }}}}, order {{{{ row['Order ID'] }}}} is confirmed."
    sink: outbox
""")
    return path


def short_interval(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SHORT_LOG_INTERVAL, *args],
        cwd=cwd,
        env=env(),
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def json_events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_once_without_a_terminal_logs_progress(tmp_path: Path) -> None:
    csv_config(tmp_path, "json")
    done = short_interval("once", "-c", "config.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr  # no bar into a pipe
    events = json_events(done.stderr)
    lines = [e for e in events if e["event"] == "progress"]
    assert len(lines) >= 2, done.stderr
    assert all(e["source"] == "erp" and e["file"] == "orders.csv" and e["rows_total"] == ROWS for e in lines)
    assert all(e["rows_per_s"] > 0 and isinstance(e["eta_s"], int) for e in lines)
    assert [e["rows_done"] for e in lines] == sorted(e["rows_done"] for e in lines)
    (last,) = [e for e in events if e["event"] == "progress done"]
    assert last["rows_done"] == ROWS
    assert len(read_results(tmp_path / "inbox" / "processed" / "orders.results.csv")) == ROWS


@pytest.mark.slow
def test_preview_counts_the_records_it_examines_up_to_its_limit(tmp_path: Path) -> None:
    csv_config(tmp_path, "json")
    done = short_interval("preview", "-c", "config.yaml", "--limit", "5000", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "== source erp: 5000 record(s) shown (limit 5000)" in done.stdout
    events = json_events(done.stderr)
    assert [e["rows_total"] for e in events if e["event"] == "progress"][:1] == [5_000]
    (last,) = [e for e in events if e["event"] == "progress done"]
    assert last["rows_done"] == last["rows_total"] == 5_000
    quiet = short_interval("preview", "-c", "config.yaml", cwd=tmp_path)  # the default 50: nothing
    assert quiet.returncode == 0 and "progress" not in quiet.stderr


def under_a_terminal(args: list[str], cwd: Path, *, until: str | None = None) -> str:
    """Run the connector with stdin, stdout and stderr on a pseudo-terminal; everything it wrote.
    `until`: send SIGTERM once that text has appeared (for `run`)."""
    main, child = pty.openpty()
    proc = subprocess.Popen(args, cwd=cwd, env=env(), stdin=child, stdout=child, stderr=child)
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(main, 65536)
            except OSError as e:  # EIO: the child closed the terminal
                assert e.errno == errno.EIO
                break
            if not data:
                break
            seen += data
            if until is not None and until.encode() in seen:
                proc.send_signal(signal.SIGTERM)
                until = None
        assert proc.wait(timeout=30) == 0, seen.decode(errors="replace")
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return seen.decode()


@pytest.mark.slow
def test_once_on_a_terminal_draws_the_bar_and_keeps_log_lines_whole(tmp_path: Path) -> None:
    csv_config(tmp_path, "console")
    out = under_a_terminal([sys.executable, "-m", "connector", "once", "-c", "config.yaml"], tmp_path)
    assert f"{CLEAR}erp orders.csv: " in out and f" / {ROWS:,} rows (" in out and " left" in out
    assert f"{CLEAR}erp orders.csv: {ROWS:,} rows in " in out
    for line in out.split("\n"):
        if "csv file processed" in line or "sink ready" in line:
            assert "rows/s" not in line, repr(line)  # never written onto the bar's line
    assert "progress" not in out  # the bar, not log lines


@pytest.mark.slow
def test_run_keeps_logging_progress_even_on_a_terminal(tmp_path: Path) -> None:
    csv_config(tmp_path, "console", port=free_port())
    out = under_a_terminal(
        [sys.executable, "-c", SHORT_LOG_INTERVAL, "run", "-c", "config.yaml"],
        tmp_path,
        until="csv file processed",
    )
    assert "progress done" in out and "rows_total" in out
    assert CLEAR not in out


# -- a big sheet ----------------------------------------------------------------------------------

SID = "1ProgressSheet_key"


@pytest.fixture
def big_sheet() -> Iterator[tuple[SheetsEmulator, str]]:
    emulator = SheetsEmulator()
    header = ["Order ID", "Name", "Phone", "SMS Status"]
    rows = [[f"A-{i}", f"Customer {i}", ro_mobile(i), ""] for i in range(5_000)]
    emulator.add_spreadsheet(SID, {"Orders": [header, *rows]})
    with EmulatorServer(emulator) as url:
        yield emulator, url


@pytest.mark.slow
def test_a_poll_of_many_rows_logs_progress_and_writes_every_status(
    tmp_path: Path, big_sheet: tuple[SheetsEmulator, str]
) -> None:
    emulator, url = big_sheet
    key = service_account_file(tmp_path / "keys", f"{url}/token")
    sheet = (
        f"  orders:\n    type: google_sheets\n    spreadsheet: {SID}\n"
        f"    credentials: {key.relative_to(tmp_path)}\n    key_column: Order ID\n    api_url: {url}\n"
    )
    csv_config(tmp_path, "json", rows=0, sheet=sheet)
    done = short_interval("once", "-c", "config.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    events = [e for e in json_events(done.stderr) if e.get("sheet") == "Orders"]
    lines = [e for e in events if e["event"] == "progress"]
    assert lines and all(e["source"] == "orders" and e["rows_total"] == 5_000 for e in lines)
    assert [e["rows_done"] for e in events if e["event"] == "progress done"] == [5_000]
    statuses = [row[3] for row in emulator.values(SID, "Orders")[1:]]
    assert len(statuses) == 5_000 and all(s.startswith("sent ") for s in statuses)

"""Progress of long work: a file or a sheet of thousands of rows, `connector preview` over them.

Where a person watches (`once` and `preview` with console logs on a terminal), one line of stderr
rewrites itself, at most five times a second, and ends with a newline when the work is over:

    erp orders.csv: 42,000 / 100,000 rows (42%), 5,800 rows/s, 10 s left

Anywhere else (a pipe, a file, JSON logs, `connector run`, which is a service and keeps a log) a
log line every few seconds gives the same figures as fields: rows_done, rows_total, rows_per_s,
eta_s. Work of fewer than `THRESHOLD_ROWS` rows shows nothing, and neither does longer work that is
over before the first refresh, so a preview of 50 rows out of a big file stays quiet.

Log lines and the bar share stderr: the log handler writes each line through `log_line`, which
takes the bar off the line first (the bar comes back at its next refresh). One bar at a time: while
one is drawn, other work in progress logs its lines instead of fighting for the line.

A leaf of the kernel, so that plug-ins may report progress: it imports nothing of the connector.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

import structlog

log = structlog.get_logger(__name__)

THRESHOLD_ROWS = 2_000  # smaller work is over too soon to need it
LOG_EVERY_S = 5.0  # between log lines; read when a Progress starts, so tests may shorten it
DRAW_EVERY_S = 0.2  # between redraws of the bar, and before the first one
_CLEAR = "\r\033[K"  # back to the start of the line, and erase it

Clock = Callable[[], float]


class Terminal:
    """A stream a person watches, and the one bar drawn on it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()  # log lines come from threads too (watchdog, file reads)
        self._owner: object | None = None
        self._drawn = False  # the bar's text stands on the current line

    def claim(self, owner: object) -> bool:
        with self._lock:
            if self._owner is None:
                self._owner = owner
            return self._owner is owner

    def draw(self, owner: object, text: str, *, last: bool = False) -> None:
        with self._lock:
            if self._owner is not owner:
                return
            # A line longer than the terminal wraps, and only its last part could be rewritten.
            width = self._width()
            if width is not None and len(text) >= width:
                text = text[: width - 4] + "..."
            try:
                self.stream.write(_CLEAR + text + ("\n" if last else ""))
                self.stream.flush()
            except (OSError, ValueError):  # the terminal went away: the work must not fail for it
                self._owner = self._gone
                return
            self._drawn = not last
            if last:
                self._owner = None

    _gone = object()  # the owner of a terminal that can no longer be written to: nobody draws

    def _width(self) -> int | None:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or None
        except (OSError, ValueError):  # not a real terminal (a test's stream)
            return None

    def release(self, owner: object) -> None:
        with self._lock:
            if self._owner is owner:
                self._owner = None

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Another line is written: the bar is taken off first, and not drawn until it is out."""
        with self._lock:
            if self._drawn:
                self._drawn = False
                with contextlib.suppress(OSError, ValueError):  # the log handler reports its own
                    self.stream.write(_CLEAR)
            yield


@dataclass(slots=True)
class _Current:
    terminal: Terminal | None = None  # where bars go; None: progress is logged


_current = _Current()
_at_most: ContextVar[int | None] = ContextVar("progress_at_most", default=None)


def draw_on(stream: TextIO | None) -> None:
    """Bars on `stream` from now on if it is a terminal (`once`, `preview`); None: log lines."""
    _current.terminal = Terminal(stream) if stream is not None and stream.isatty() else None


@contextlib.contextmanager
def log_line() -> Iterator[None]:
    """Around the writing of a log line (connector.logs): the bar is off the line meanwhile."""
    terminal = _current.terminal
    if terminal is None:
        yield
        return
    with terminal.writing():
        yield


@contextlib.contextmanager
def at_most(rows: int) -> Iterator[None]:
    """Work started inside stops after `rows` whatever its size (a preview's `--limit`): its totals
    are no larger, so the percentage and the time left are about what will really be done."""
    token = _at_most.set(rows)
    try:
        yield
    finally:
        _at_most.reset(token)


class Progress:
    """Rows done of a known total; a context manager, so that the bar's line is always ended."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        fields: Mapping[str, object] | None = None,
        stream: TextIO | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        cap = _at_most.get()
        self.label = label
        self.total = total if cap is None else min(total, cap)
        self.rows = 0
        self._fields = dict(fields or {})  # for the log lines: source, file or sheet
        self._clock = clock
        self._every = LOG_EVERY_S
        self._start = self._last = clock()
        self._shown = False
        self._closed = False
        self._active = self.total >= THRESHOLD_ROWS
        terminal = _current.terminal if stream is None else (Terminal(stream) if stream.isatty() else None)
        self._terminal = terminal if self._active and terminal is not None and terminal.claim(self) else None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def add(self, rows: int) -> None:
        self.rows += rows
        if not self._active or self._closed:
            return
        now = self._clock()
        if now - self._last < (DRAW_EVERY_S if self._terminal is not None else self._every):
            return
        self._last = now
        self._shown = True
        if self._terminal is not None:
            self._terminal.draw(self, self._bar(now))
        else:
            log.info("progress", **self._fields, **self._figures(now))

    def close(self) -> None:
        """The work is over (or stopped): the last figures, if any were shown, and the line ended."""
        if self._closed:
            return
        self._closed = True
        now = self._clock()
        if self._terminal is not None:
            if self._shown:
                self._terminal.draw(self, self._summary(now), last=True)
            else:
                self._terminal.release(self)
        elif self._shown:
            figures = self._figures(now)
            del figures["eta_s"]
            log.info("progress done", **self._fields, **figures, elapsed_s=round(now - self._start, 1))

    def _rate(self, now: float) -> float:
        return self.rows / max(now - self._start, 1e-9)

    def _figures(self, now: float) -> dict[str, object]:
        rate = self._rate(now)
        left = max(self.total - self.rows, 0)
        return {
            "rows_done": self.rows,
            "rows_total": self.total,
            "rows_per_s": round(rate),
            "eta_s": round(left / rate) if rate > 0 else None,
        }

    def _bar(self, now: float) -> str:
        rate = self._rate(now)
        percent = min(self.rows * 100 // max(self.total, 1), 100)
        text = f"{self.label}: {self.rows:,} / {self.total:,} rows ({percent}%), {round(rate):,} rows/s"
        if rate > 0:
            text += f", {duration(max(self.total - self.rows, 0) / rate)} left"
        return text

    def _summary(self, now: float) -> str:
        done = f"{self.rows:,}" if self.rows >= self.total else f"{self.rows:,} of {self.total:,}"
        took = duration(now - self._start)
        return f"{self.label}: {done} rows in {took}, {round(self._rate(now)):,} rows/s"


def duration(seconds: float) -> str:
    """`4.2 s`, `35 s`, `2 min 5 s`, `1 h 3 min`: as precise as a person reading it needs."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"

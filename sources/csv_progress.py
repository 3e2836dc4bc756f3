"""Progress lines for long CSV files: a log line every few seconds while one is processed."""

from __future__ import annotations

import time

import structlog

log = structlog.get_logger(__name__)


class Progress:
    """A log line every few seconds while a long file is processed."""

    def __init__(self, source: str, file: str, total: int, every: float) -> None:
        self._source, self._file, self._total, self._every = source, file, total, every
        self._start = self._last = time.monotonic()
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            log.info("csv progress", **self._figures(now))

    def done(self) -> None:
        if self._last != self._start:  # only files long enough to have shown progress
            log.info("csv file read", **self._figures(time.monotonic()))

    def _figures(self, now: float) -> dict[str, object]:
        elapsed = max(now - self._start, 1e-9)
        return {
            "source": self._source,
            "file": self._file,
            "rows_done": self.rows,
            "rows_total": self._total,
            "rows_per_s": round(self.rows / elapsed),
        }

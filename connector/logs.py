"""structlog set-up: key-value events, console for people or JSON for machines, secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Literal, TextIO

import structlog
from structlog.typing import Processor

from connector import progress
from connector.redact import Redactor


def configure(
    fmt: Literal["console", "json"] = "console",
    level: str = "info",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    redactor = Redactor(secrets)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=(stream or sys.stderr).isatty())
    )
    numeric = getattr(logging, level.upper())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
    # Libraries' own logging (APScheduler, watchdog, httpx, aiohttp) goes through the same renderer
    # and the same redactor, URL-encoded secrets included.
    handler = _BesideProgress(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # httpx logs every request URL at INFO; PK's check-balance carries the key in its query.
    for noisy in ("httpx", "httpcore", "apscheduler", "watchdog", "aiohttp"):
        library = logging.getLogger(noisy)
        library.setLevel(max(numeric, logging.WARNING))
        # The record itself is scrubbed too, for any other handler; set again on every configure.
        for old in [f for f in library.filters if isinstance(f, Redactor)]:
            library.removeFilter(old)
        library.addFilter(redactor)
    inotify = logging.getLogger("watchdog.observers.inotify")
    if not any(isinstance(f, _WatchdogStopRace) for f in inotify.filters):
        inotify.addFilter(_WatchdogStopRace())


class _BesideProgress(logging.StreamHandler[TextIO]):
    """A progress bar may stand on stderr's last line (`once` on a terminal): it is taken off the
    line before a log line is written, so the two never run into each other."""

    def emit(self, record: logging.LogRecord) -> None:
        with progress.log_line():
            super().emit(record)


class _WatchdogStopRace(logging.Filter):
    """watchdog logs an ERROR when an inotify event lands while its watcher is being stopped.

    Nothing is lost (the folder is rescanned at every start), and an error line at every clean
    shutdown would teach operators to ignore error lines.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()

"""structlog set-up: key-value events, console for people or JSON for machines, secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"
# Field names whose values are secrets whatever they hold.
SECRET_FIELDS = frozenset({"token", "secret", "password", "authorization", "api_key", "key_value"})


class Redactor:
    """Replaces every configured secret wherever it appears in an event, and secret-named fields."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {
                k: REDACTED if str(k).lower() in SECRET_FIELDS else self._scrub(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        return value

    def __call__(self, _logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        for name in list(event):
            if name.lower() in SECRET_FIELDS:
                event[name] = REDACTED
            else:
                event[name] = self._scrub(event[name])
        return event


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
    # Libraries' own logging (APScheduler, watchdog, httpx) goes through the same renderer and redactor.
    handler = logging.StreamHandler(stream or sys.stderr)
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
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    inotify = logging.getLogger("watchdog.observers.inotify")
    if not any(isinstance(f, _WatchdogStopRace) for f in inotify.filters):
        inotify.addFilter(_WatchdogStopRace())


class _WatchdogStopRace(logging.Filter):
    """watchdog logs an ERROR when an inotify event lands while its watcher is being stopped.

    Nothing is lost (the folder is rescanned at every start), and an error line at every clean
    shutdown would teach operators to ignore error lines.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()

"""Config reload in `connector run` (SPEC "Config reload"): the config file and the `.env` beside it
are watched (watchdog), and SIGHUP asks too.

A new config is loaded and checked completely (rules compiled, sinks and sources built) before
anything changes; a refused one is logged problem by problem, `file:line key.path: message`, and
the old one keeps running. An accepted one is taken between batches (connector/batch_gate.py): the
batches in hand finish with the config they began with, their requests on the old sinks. Sinks and
sources whose settings did not change are kept as they are (a sheet is not re-opened, a folder not
re-scanned, a sink's pause and its requests in flight untouched); changed ones are replaced, a
source only after the old one finished the file or poll in hand. What the process was started on
(the ledger, the server, the lease, the webhook paths) needs a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog
from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from connector import logs
from connector.assembly import budgets_of, build_sink, build_source
from connector.config_loader import LoadedConfig, load_config
from connector.errors import ConfigError, ConnectorError
from connector.optouts import OptOuts
from connector.policy import PolicyContext
from sources.webhook import WebhookConfig

if TYPE_CHECKING:
    import httpx

    from connector.engine import Engine
    from connector.ledger import SqlLedger
    from connector.metrics import Metrics
    from sinks.base import Sink
    from sources.base import Source, SourceContext


class Runtime(Protocol):
    """What a reload changes of the running connector (connector/runtime.py)."""

    loaded: LoadedConfig
    sinks: dict[str, Sink]
    optouts: OptOuts
    ledger: SqlLedger
    client: httpx.AsyncClient
    engine: Engine
    metrics: Metrics
    source_context: SourceContext | None

    @property
    def stopping(self) -> asyncio.Event: ...

    async def ask_account(self, name: str, sink: Sink) -> bool | None: ...
    async def stop_source(self, name: str) -> None: ...
    def start_source(self, name: str, source: Source) -> None: ...


log = structlog.get_logger(__name__)

SETTLE_S = 0.3  # an editor's save is several events (write, rename, chmod): one reload for them all
ENV_FILE = ".env"


def needs_restart(old: LoadedConfig, new: LoadedConfig) -> list[str]:
    """What the running process cannot take without a restart, as located-ish messages."""
    was, now = old.config, new.config
    said = [
        f"{key}: changed; this needs a restart"
        for key, a, b in (
            ("state", was.state, now.state),
            ("server", was.server, now.server),
            ("instance", was.instance, now.instance),
        )
        if a != b
    ]
    paths_before, paths_after = _webhook_paths(old), _webhook_paths(new)
    if paths_before != paths_after:
        said.append(
            "sources: the webhook paths changed "
            f"({', '.join(sorted(paths_before)) or 'none'} -> {', '.join(sorted(paths_after)) or 'none'}); "
            "this needs a restart"
        )
    return said


def _webhook_paths(loaded: LoadedConfig) -> set[str]:
    return {cfg.path for cfg in loaded.config.sources.values() if isinstance(cfg, WebhookConfig)}


class Reloader:
    """Reloads one at a time; a request while one runs is taken once it is over."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self.applied = 0  # reloads taken (tests and logs)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = asyncio.create_task(self._serve(), name="config-reload")
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.request)
        path = self.runtime.loaded.path
        watched = {path.resolve(), (path.parent / ENV_FILE).resolve()}

        def changed() -> None:  # on watchdog's thread
            loop.call_soon_threadsafe(self.request)

        observer = Observer()
        observer.schedule(_Changes(watched, changed), str(path.parent), event_filter=list(SAVES))
        observer.daemon = True
        observer.start()
        self._observer = observer

    def request(self) -> None:
        self._wanted.set()

    async def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            await asyncio.to_thread(self._observer.join)
            self._observer = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _serve(self) -> None:
        while True:
            await self._wanted.wait()
            await asyncio.sleep(SETTLE_S)
            self._wanted.clear()
            if self.runtime.stopping.is_set():
                return
            try:
                await self.reload()
            except Exception:  # a reload must never take the running connector down
                log.exception("config reload failed; the config in use stays")
                self.runtime.metrics.reloaded("refused", "the reload failed: see the log")

    async def reload(self) -> str:
        """Load, check, swap. Answers the result: applied, refused or unchanged."""
        async with self._lock:
            old = self.runtime.loaded
            try:
                new = await asyncio.to_thread(load_config, old.path)
                problems = needs_restart(old, new)
            except ConfigError as exc:
                problems = [str(problem) for problem in exc.problems]
            if problems:
                for problem in problems:
                    log.error("config reload refused; the config in use stays", problem=problem)
                self.runtime.metrics.reloaded("refused", "; ".join(problems))
                return "refused"
            if new.config == old.config:
                log.info("config file saved without changes", path=str(old.path))
                self.runtime.metrics.reloaded("unchanged")
                return "unchanged"
            try:
                changed = await apply(self.runtime, new)
            except ConnectorError as exc:  # a sink or source that cannot be built from it
                log.error("config reload refused; the config in use stays", problem=str(exc))
                self.runtime.metrics.reloaded("refused", str(exc))
                return "refused"
            self.applied += 1
            self.runtime.metrics.reloaded("applied")
            for warning in new.warnings:
                log.warning("config warning", problem=str(warning))
            log.info("config reloaded", path=str(old.path), **changed)
            return "applied"


async def apply(runtime: Runtime, new: LoadedConfig) -> dict[str, list[str]]:
    """Build what changed, swap between batches, then replace the changed sources."""
    old = runtime.loaded
    was, now = old.config, new.config
    sinks = {
        name: runtime.sinks[name]
        if name in runtime.sinks and was.sinks.get(name) == cfg
        else build_sink(new, name, runtime.client)
        for name, cfg in now.sinks.items()
    }
    gone_sinks = [sink for name, sink in runtime.sinks.items() if sinks.get(name) is not sink]
    new_sinks = [name for name, sink in sinks.items() if runtime.sinks.get(name) is not sink]
    moved = sorted(n for n in {*was.sources, *now.sources} if was.sources.get(n) != now.sources.get(n))
    context = runtime.source_context
    assert context is not None
    sources = {name: build_source(new, name, context) for name in moved if name in now.sources}
    optouts = OptOuts(now.suppress, new.base_dir)
    await optouts.refresh(runtime.ledger)
    if any(rule.config.max_per_recipient for rule in new.rules):
        await runtime.ledger.count_by_number()

    policies = PolicyContext(now.timezone, optouts, budgets_of(new, sinks))
    await runtime.engine.reconfigure(new.rules, sinks, policies)
    runtime.sinks, runtime.optouts, runtime.loaded = sinks, optouts, new
    if now.log != was.log or now.secrets() != was.secrets():
        logs.configure(now.log.format, now.log.level, secrets=now.secrets())
    for sink in gone_sinks:  # no batch uses them any more: the gate waited for the last one
        await sink.aclose()
    for name in new_sinks:
        await runtime.ask_account(name, sinks[name])

    for name in moved:
        await runtime.stop_source(name)
    for name, source in sources.items():
        runtime.start_source(name, source)
    return {
        "sinks_replaced": sorted(new_sinks),
        "sources_replaced": sorted(sources),
        "sources_removed": sorted(n for n in moved if n not in now.sources),
    }


# How an edit ends: a write closed, or a file renamed over the config (editors, ConfigMaps). Not
# "modified": the config's folder usually holds the SQLite ledger, whose every commit modifies
# its -wal file, and at 500 deliveries/s waking this thread for each cost a fifth of the server's
# CPU and stretched every 202 (watchdog narrows the inotify mask to these kinds).
SAVES = (FileClosedEvent, FileMovedEvent, DirMovedEvent, FileCreatedEvent, FileDeletedEvent)


class _Changes(FileSystemEventHandler):
    """Any event on the config file or its `.env`: created, written, replaced by a rename."""

    def __init__(self, watched: set[Path], changed: Callable[[], None]) -> None:
        self._watched = watched
        self._changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path and Path(str(path)).resolve() in self._watched:
                self._changed()
                return

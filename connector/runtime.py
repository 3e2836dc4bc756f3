"""Wires config into running parts: ledger, HTTP client, sinks, engine, sources, scheduler.

One I/O model: asyncio. Blocking work (SQLite, file reads) crosses into threads at marked
boundaries inside the ledger and the sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from connector.config_loader import LoadedConfig
from connector.engine import Engine
from connector.errors import AccountError, ConfigError, ConfigProblem, SinkError
from connector.http import make_client
from connector.ledger import Entry, Ledger, open_ledger
from connector.rules import compile_rules
from connector.status import of_entry
from sinks import SINK_TYPES
from sinks.base import Sink
from sources import SOURCE_TYPES
from sources.base import Source, SourceContext, StatusUpdate

if TYPE_CHECKING:
    from connector.server import HttpServer

log = structlog.get_logger(__name__)

RETRY_EVERY_S = 15.0


def build_sinks(loaded: LoadedConfig, client: httpx.AsyncClient) -> dict[str, Sink]:
    problems: list[ConfigProblem] = []
    sinks: dict[str, Sink] = {}
    for name, cfg in loaded.config.sinks.items():
        sink_type = SINK_TYPES.get(cfg.type)
        if sink_type is None:
            problems.append(_unavailable(loaded, f"sinks.{name}.type", cfg.type))
            continue
        path = getattr(cfg, "path", None)
        resolved = cfg
        if isinstance(path, Path) and not path.is_absolute():
            resolved = cfg.model_copy(update={"path": loaded.base_dir / path})
        sinks[name] = sink_type(name, resolved, client)
    if problems:
        raise ConfigError(problems)
    return sinks


def build_sources(
    loaded: LoadedConfig, ctx: SourceContext, only: Sequence[str] | None = None
) -> dict[str, Source]:
    problems: list[ConfigProblem] = []
    sources: dict[str, Source] = {}
    for name, cfg in loaded.config.sources.items():
        if only and name not in only:
            continue
        source_type = SOURCE_TYPES.get(cfg.type)
        if source_type is None:
            problems.append(_unavailable(loaded, f"sources.{name}.type", cfg.type))
            continue
        sources[name] = source_type(name, cfg, ctx)
    if problems:
        raise ConfigError(problems)
    return sources


def _unavailable(loaded: LoadedConfig, path: str, type_name: str) -> ConfigProblem:
    return ConfigProblem(str(loaded.path), None, path, f"type {type_name!r} is not available in this version")


@dataclass
class Runtime:
    loaded: LoadedConfig
    ledger: Ledger
    client: httpx.AsyncClient
    sinks: dict[str, Sink]
    engine: Engine
    sources: dict[str, Source]
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    scheduler: AsyncIOScheduler | None = None
    server: HttpServer | None = None  # while `run` serves HTTP

    @classmethod
    async def open(
        cls,
        loaded: LoadedConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        only_sources: Sequence[str] | None = None,
    ) -> Runtime:
        config = loaded.config
        rules = compile_rules(config.rules)
        connections = sum(getattr(s, "concurrency", 1) for s in config.sinks.values()) + 4
        ledger = await open_ledger(config.state, loaded.base_dir, str(loaded.path))
        client = make_client(connections, transport)
        try:
            sinks = build_sinks(loaded, client)
            engine = Engine(rules, sinks, ledger)
            stopping = asyncio.Event()
            ctx = SourceContext(
                process=engine.process, notes=ledger, base_dir=loaded.base_dir, stopping=stopping
            )
            sources = build_sources(loaded, ctx, only_sources)
        except BaseException:
            await client.aclose()
            await ledger.close()
            raise
        runtime = cls(loaded, ledger, client, sinks, engine, sources, stopping)
        recovered = await ledger.recover()
        if recovered:
            log.warning(
                "sends interrupted by an earlier stop marked unknown; they are not resent by themselves",
                count=recovered,
            )
        return runtime

    async def verify_sinks(self) -> None:
        """Ask each provider whether the account works, where it can say so without sending.

        A refused account stops the start (exit 1: nothing would be sent, and every record would
        wait as `pending`); a provider that cannot be reached right now is only a warning: the
        sends will be retried like any other.
        """
        refused: list[str] = []
        for name, sink in self.sinks.items():
            try:
                summary = await sink.check()
            except AccountError as exc:
                refused.append(f"sink {name}: {exc}")
            except (SinkError, httpx.HTTPError) as exc:
                log.warning("cannot verify the sink's account now; carrying on", sink=name, error=str(exc))
            else:
                log.info("sink ready", sink=name, account=summary)
        if refused:
            raise AccountError("; ".join(refused))

    async def close(self) -> None:
        for sink in self.sinks.values():
            await sink.aclose()
        await self.client.aclose()
        await self.ledger.close()

    async def retry_held(self) -> int:
        """Send what was held while a sink was paused; hand the new statuses to their sources."""
        total = 0
        while not self.stopping.is_set():
            settled = await self.engine.retry_pending()
            if not settled:
                break
            total += len(settled)
            await self._write_back(settled)
        return total

    async def _write_back(self, entries: Sequence[Entry]) -> None:
        by_source: dict[str, list[StatusUpdate]] = defaultdict(list)
        for entry in entries:
            by_source[entry.source].append(StatusUpdate(entry.origin, of_entry(entry)))
        for name, updates in by_source.items():
            source = self.sources.get(name)
            if source is None:
                continue
            try:
                await source.write_back(updates)
            except Exception:
                log.exception("status write-back failed; the ledger keeps the status", source=name)

    async def once(self) -> None:
        await self.retry_held()
        await asyncio.gather(*(source.once() for source in self.sources.values()))

    async def run(self) -> None:
        from connector.server import start_server  # noqa: PLC0415 - only `run` serves HTTP

        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        self.server = server = await start_server(self)
        scheduler = AsyncIOScheduler(event_loop=loop, timezone="UTC")
        scheduler.add_job(
            self.retry_held,
            "interval",
            seconds=RETRY_EVERY_S,
            id="retry-held",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(RETRY_EVERY_S),
            next_run_time=datetime.now(UTC),  # at once: what an earlier process left is sent first
        )
        self.scheduler = scheduler
        for source in self.sources.values():
            source.ctx.scheduler = scheduler
        scheduler.start()
        log.info("connector running", sources=sorted(self.sources), sinks=sorted(self.sinks))
        tasks = [asyncio.create_task(s.run(), name=f"source:{n}") for n, s in self.sources.items()]
        try:
            await self.stopping.wait()
            log.info("stopping: finishing sends in flight and writing statuses")
            await server.stop()  # no new deliveries; those in flight are answered first
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for name, result in zip(self.sources, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("source stopped with an error", source=name, error=repr(result))
            await self.engine.drain()
        finally:
            await server.stop()
            scheduler.shutdown(wait=False)
            for task in tasks:
                task.cancel()
        log.info("stopped")

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        def stop(sig: signal.Signals) -> None:
            if self.stopping.is_set():
                log.warning("second signal: exiting without waiting", signal=sig.name)
                raise SystemExit(130)
            log.info("signal received", signal=sig.name)
            self.stopping.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop, sig)

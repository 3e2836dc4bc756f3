"""Wires config into running parts: ledger, HTTP client, sinks, engine, sources, scheduler.

One I/O model: asyncio. Blocking work (SQLite, file reads) crosses into threads at marked
boundaries inside the ledger and the sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import signal
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from starlette.requests import Request
from starlette.responses import Response

from connector.assembly import budgets_of, build_sinks, build_sources
from connector.config_loader import LoadedConfig
from connector.engine import Engine
from connector.errors import AccountError, SinkError
from connector.http import make_client
from connector.ledger import Entry, SqlLedger, open_ledger
from connector.metrics import Metrics
from connector.optouts import OptOuts
from connector.page import StatusPage
from connector.policy import PolicyContext
from connector.reload import Reloader
from connector.server import HttpServer, build_app
from connector.status import of_entry
from connector.stop_signal import StopSignal
from connector.web import HttpRoute
from sinks.base import Sink
from sources.base import Source, SourceContext, StatusUpdate

log = structlog.get_logger(__name__)

RETRY_EVERY_S = 15.0
SWEEPER = "job:sweeper"  # the hold of the one instance that sends what is held
WAKE_AGAIN_S = 0.25  # a wake-up that found its message not due yet by the ledger's clock looks again
WRITE_BACK_S = 5.0  # after the grace: for the last outcomes and statuses to be written


@dataclass
class Runtime:
    loaded: LoadedConfig
    ledger: SqlLedger
    client: httpx.AsyncClient
    sinks: dict[str, Sink]
    engine: Engine
    sources: dict[str, Source]
    metrics: Metrics
    stopping: StopSignal = field(default_factory=StopSignal)  # sets each source's own stop too
    scheduler: AsyncIOScheduler | None = None
    server: HttpServer | None = None  # while `run` serves HTTP
    _wake_at: float | None = None  # when the scheduler wakes for the next waiting message
    optouts: OptOuts = field(default_factory=OptOuts)
    _jobs: set[asyncio.Task[Any]] = field(default_factory=set)  # scheduled work in hand (retries)
    source_context: SourceContext | None = None  # what each source is lent (a stop of its own added)
    source_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # while `run` runs them
    _routes: dict[str, HttpRoute] = field(default_factory=dict)  # by path: the source serving it now

    @classmethod
    async def open(
        cls,
        loaded: LoadedConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        only_sources: Sequence[str] | None = None,
    ) -> Runtime:
        config = loaded.config
        rules = list(loaded.rules)
        connections = sum(getattr(s, "concurrency", 1) for s in config.sinks.values()) + 4
        ledger = await open_ledger(config.state, loaded.base_dir, str(loaded.path))
        client = make_client(connections, transport)
        try:
            sinks = build_sinks(loaded, client)
            metrics = Metrics()
            optouts = OptOuts(config.suppress, loaded.base_dir)
            context = PolicyContext(config.timezone, optouts, budgets_of(loaded, sinks))
            engine = Engine(rules, sinks, ledger, context=context)
            if any(rule.config.max_per_recipient for rule in rules):
                await ledger.count_by_number()
            stopping = StopSignal()  # each source's own stop is set with it, in the same call
            ctx = SourceContext(
                process=engine.process,
                notes=ledger,
                base_dir=loaded.base_dir,
                stopping=stopping,
                accept=engine.accept,
                delivered=metrics.delivery,
                holds=ledger,
            )
            sources = build_sources(loaded, ctx, only_sources)
            await ledger.join(config.instance.lease)
        except BaseException:
            await client.aclose()
            await ledger.close()
            raise
        runtime = cls(loaded, ledger, client, sinks, engine, sources, metrics, stopping, optouts=optouts)
        runtime.source_context = ctx
        await runtime.recover()
        await optouts.refresh(ledger)
        return runtime

    async def recover(self) -> None:
        """What instances whose lease lapsed held goes back to the others (SPEC "Several processes")."""
        recovered = await self.ledger.recover()
        if recovered:
            log.warning(
                "sends of a process that stopped or lost its lease marked unknown; "
                "they are not resent by themselves",
                count=recovered,
            )

    async def verify_sinks(self) -> list[str]:
        """Ask each provider whether the account works, where it can say so without sending.

        A refused account pauses that sink: its records wait as `pending: sink NAME paused: REASON`
        (written back like any status) and the sink is asked again with a growing back-off. The
        names of the refused sinks are answered: `once` exits 1 for them. A provider that cannot be
        reached right now is only a warning: the sends are retried like any other.
        """
        return [name for name, sink in self.sinks.items() if await self.ask_account(name, sink) is False]

    async def recheck_paused_sinks(self) -> None:
        """A sink paused for its account is asked again (without sending) before its messages go."""
        for name, sink in self.sinks.items():
            if sink.recheck_due and await self.ask_account(name, sink):
                sink.resume()

    async def ask_account(self, name: str, sink: Sink) -> bool | None:
        """True: the provider takes the account; False: it refused (the sink is paused for it);
        None: no answer now (the sends will tell)."""
        try:
            summary = await sink.check()
        except AccountError as exc:
            sink.pause(str(exc))
            return False
        except (SinkError, httpx.HTTPError) as exc:
            log.warning("cannot check the sink's account now; carrying on", sink=name, error=str(exc))
            return None
        log.info("sink ready", sink=name, account=summary)
        return True

    async def close(self) -> None:
        for sink in self.sinks.values():
            await sink.aclose()
        await self.client.aclose()
        await self.ledger.close()

    async def retry_held(self, *, woken: bool = False) -> int:
        """Send what was held (a paused sink, a stop, an instance that died) and what waited for
        its time: one instance at a time sweeps, but any instance woken by a waiting message's time
        takes what is due (the ledger gives each message to one). Hand the new statuses to their
        sources, and wake again when the next waiting message may go."""
        task = asyncio.current_task()
        if task is not None:
            self._jobs.add(task)  # the stop waits for it like for any other work in hand
        try:
            await self.recover()
            await self.optouts.refresh(self.ledger)  # a list file changed, a number opted out meanwhile
            sweeper = woken or await self.ledger.hold(SWEEPER) is not None
            await self.recheck_paused_sinks()
            total = 0
            while not self.stopping.is_set():
                # Another instance sweeps what nobody owns; this one's own stragglers are its own.
                settled = await self.engine.retry_pending(unowned=sweeper)
                if not settled:
                    break
                total += len(settled)
                await self.write_back(settled)
            if self.scheduler is not None and not self.stopping.is_set():
                self._arm(await self.ledger.next_wake(), again=woken)
            return total
        finally:
            if task is not None:
                self._jobs.discard(task)

    def _arm(self, until: float | None, *, again: bool = False) -> None:
        """Wake when the earliest waiting message may go: APScheduler, not a poll. `again`: just
        woken, and what was due may not be visible yet by the ledger's clock: look shortly after."""
        if until is None or self.scheduler is None:
            return
        now = time.time()
        at = max(until, now + (WAKE_AGAIN_S if again else 0.0))
        if self._wake_at is not None and self._wake_at <= at and self._wake_at > now:
            return  # already set to wake sooner
        self._wake_at = at
        self.scheduler.add_job(
            self._woken,
            "date",
            run_date=datetime.fromtimestamp(at, UTC),
            id="wake",
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def _woken(self) -> None:
        self._wake_at = None
        await self.retry_held(woken=True)

    async def write_back(self, entries: Sequence[Entry]) -> None:
        """Each entry's status to its record's source (a sheet cell, a results file rewritten)."""
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
        """One pass; SIGTERM stops it the way it stops `run` (SPEC "Stopping")."""
        self._install_signals(asyncio.get_running_loop())
        gc.collect()
        gc.freeze()  # as in `run`: start-up's objects (modules, rules, opt-out lists) are not walked
        work = asyncio.create_task(self._one_pass(), name="once")
        stop = asyncio.create_task(self.stopping.wait(), name="stop-signal")
        try:
            await asyncio.wait((work, stop), return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                await self._wind_down([work])
        finally:
            stop.cancel()
            gc.unfreeze()
        if not work.cancelled():
            work.result()  # an error of the pass is the command's error

    async def _one_pass(self) -> None:
        await self.retry_held()
        await asyncio.gather(*(source.once() for source in self.sources.values()))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        self.server = server = await self._serve()
        scheduler = AsyncIOScheduler(event_loop=loop, timezone="UTC")
        every = min(RETRY_EVERY_S, self.loaded.config.instance.lease / 2)  # takes over within ~1.5 leases
        scheduler.add_job(
            self.retry_held,
            "interval",
            seconds=every,
            id="retry-held",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(every)),
            next_run_time=datetime.now(UTC),  # at once: what an earlier process left is sent first
        )
        self.scheduler = scheduler
        for source in self.sources.values():
            source.ctx.scheduler = scheduler
        self.engine.policy.on_wait = self._arm  # a message claimed now to wait: wake for it
        scheduler.start()
        # What start-up built (modules, config, compiled rules, the app) lives as long as the run:
        # kept out of the collector's reach, a full collection walks only what the work creates.
        gc.collect()
        gc.freeze()
        log.info("connector running", sources=sorted(self.sources), sinks=sorted(self.sinks))
        for name, source in self.sources.items():
            self.start_source(name, source)
        reloader = Reloader(self)
        reloader.start(loop)
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.stopping.wait()
            scheduler.pause()  # no new polls or retries are started
            await reloader.stop()
            tasks = list(self.source_tasks.values())
            await self._wind_down(tasks)
            for name, task in self.source_tasks.items():
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("source stopped with an error", source=name, error=repr(task.exception()))
        finally:
            await reloader.stop()
            await server.stop()  # deliveries still being read are answered; their sends are held
            if not await self._settle_work(tasks, WRITE_BACK_S):
                for task in self._unfinished(tasks):
                    task.cancel()
            scheduler.shutdown(wait=False)
            gc.unfreeze()
        log.info("stopped")

    def start_source(self, name: str, source: Source) -> None:
        """Run `source` (in place of any source of that name: its routes now answer its paths)."""
        source.ctx.scheduler = self.scheduler
        self.sources[name] = source
        self._take_paths(source)
        self.source_tasks[name] = asyncio.create_task(source.run(), name=f"source:{name}")

    async def stop_source(self, name: str) -> None:
        """Stop one source; it finishes the file or poll in hand first (a reload replaces it)."""
        source = self.sources.pop(name, None)
        task = self.source_tasks.pop(name, None)
        if source is None or task is None:
            return
        source.ctx.stopping.set()
        with contextlib.suppress(Exception):  # its error was logged where it happened
            await task
        self.stopping.forget(source.ctx.stopping)

    def _take_paths(self, source: Source) -> None:
        """`source` answers its paths from now on (the server checked that no two share one)."""
        for route in source.routes():
            self._routes[route.path] = route

    def _serving(self, route: HttpRoute) -> HttpRoute:
        """`route`, answered by whichever source serves its path now (a reload may replace it)."""

        async def endpoint(request: Request) -> Response:
            return await self._routes[route.path].endpoint(request)

        return dataclasses.replace(route, endpoint=endpoint)

    async def _serve(self) -> HttpServer:
        """`server.host:port`: the server's own endpoints and every route a source contributes."""
        self.engine.observer = self.metrics.observe_send  # counted only where /metrics shows them
        for source in self.sources.values():
            self._take_paths(source)  # answered from the start; `start_source` says it again
        routes = [self._serving(route) for source in self.sources.values() for route in source.routes()]
        config = self.loaded.config.server
        page = StatusPage(self.ledger, self.engine, lambda: self.sources)  # the sources of a reload too
        app = build_app(self.engine, routes, self.metrics, page, config.token)
        server = HttpServer(app, config.host, config.port)
        await server.start()
        return server

    async def _wind_down(self, work: Sequence[asyncio.Task[Any]]) -> None:
        """SPEC "Stopping": nothing new starts; what is on the wire gets `shutdown_grace`; then the
        requests still unanswered end as `unknown`, every status is written, and the rest is left
        `pending` in the ledger for the next start. The time taken never grows with the backlog:
        queued sends do not wait their turn, they are held at once."""
        grace = self.loaded.config.shutdown_grace
        log.info("stopping: taking no new work; requests on the wire get the grace", grace_s=grace)
        for sink in self.sinks.values():  # webhook deliveries see `stopping` too: 503 from now on
            sink.stop()
        left = await self.engine.stop_queued()
        if left:
            log.info("queued sends left pending for the next start", messages=left)
        if await self._settle_work(work, grace):
            return
        log.warning("shutdown grace over: requests still unanswered are recorded unknown", grace_s=grace)
        for sink in self.sinks.values():
            sink.abort()
        if not await self._settle_work(work, WRITE_BACK_S):
            log.error("work still running after the grace; it is cut short (the ledger keeps its state)")
            for task in self._unfinished(work):
                task.cancel()

    async def _settle_work(self, work: Sequence[asyncio.Task[Any]], seconds: float) -> bool:
        """Wait up to `seconds` for the work in hand, including sends it starts meanwhile."""
        deadline = asyncio.get_running_loop().time() + seconds
        while unfinished := self._unfinished(work):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            await asyncio.wait(unfinished, timeout=left)
        return True

    def _unfinished(self, work: Sequence[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
        return {t for t in (*work, *self.engine.background, *self._jobs) if not t.done()}

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

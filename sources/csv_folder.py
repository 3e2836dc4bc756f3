"""CSV drop folder: an ERP writes files into a folder; each settled file is processed once.

A file is taken once its size and mtime have stood still for `settle`. Its rows go to the engine in
chunks, a few chunks in flight at once, and their statuses are written in order to
`processed/<stem>.results.csv.part`. Only when every row has a status does the part file become
`processed/<stem>.results.csv` and the original move, unchanged, to `processed/`. A file that
cannot be read as a table goes to `failed/` beside a `.reason.txt`. Stopping midway leaves the file
in the inbox: the next start reads it again and the ledger answers for the rows already sent.

Watching is watchdog events (handed from watchdog's thread to the loop), a scan at start-up and a
rescan every `rescan` as a safety net for shares that drop events. The file format itself lives in
`csv_files`.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

import structlog
from pydantic import Field
from watchdog.observers import Observer

from connector.errors import SourceError
from connector.events import Record
from connector.progress import Progress
from connector.types import STRICT, Duration
from sources.base import Source, SourceConfigBase, SourceContext, StatusUpdate
from sources.csv_files import (
    BadFile,
    Layout,
    ResultsWriter,
    Row,
    RowReader,
    file_identity,
    free_names,
    inspect,
    reason_name,
    results_name,
)
from sources.csv_updates import ResultsUpdates
from sources.csv_watch import FolderEvents, Settling

log = structlog.get_logger(__name__)

_InFlight: TypeAlias = deque[tuple[list[Row], asyncio.Task[list[str | None]]]]


@dataclass(frozen=True, slots=True)
class _Taken:
    name: str  # the hold on the file
    epoch: int


class CsvFolderConfig(SourceConfigBase):
    """A folder an ERP drops CSV files into; each settled file is taken once."""

    model_config = STRICT
    type: Literal["csv_folder"] = Field(description="CSV files dropped into a folder.")
    path: Path = Field(description="The folder, relative to the config file.")
    pattern: str = Field(default="*.csv", description="Which files are taken.")
    settle: Duration = Field(default=2.0, description="A file unchanged this long is complete.")
    key_column: str | None = Field(
        default=None,
        description="A column that identifies a row (e.g. Order ID); default: a fingerprint of the message.",
    )
    status_column: str = Field(
        default="SMS Status", description="The column of the results file that gets each row's status."
    )
    rescan: Duration = Field(
        default=60.0,
        description="Look at the folder again this often, beside file events (network shares can miss them).",
    )


class CsvFolderSource(Source):
    config_model = CsvFolderConfig
    config: CsvFolderConfig

    chunk_rows = 1000  # rows per process() call
    in_flight = 4  # chunks being processed at once; results are still written in order
    held_elsewhere_s = 2.0  # a file another instance is taking is looked at again after this

    def __init__(self, name: str, config: CsvFolderConfig, ctx: SourceContext) -> None:
        super().__init__(name, config, ctx)
        # Absolute and normalised once: watchdog reports paths under the string it was given.
        self.folder = Path(os.path.abspath(ctx.base_dir / config.path))  # noqa: PTH100 - keeps symlinks
        self.processed = self.folder / "processed"
        self.failed = self.folder / "failed"
        self._scope = f"csv:{name}"
        self._files = Settling(self.folder, lambda: self.config)
        self._busy: set[Path] = set()
        self._wake = asyncio.Event()
        self.updates = ResultsUpdates(name, self._scope, self.processed, ctx)

    # -- watching ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._prepare()
        observer = Observer()
        events = FolderEvents(asyncio.get_running_loop(), self.notice)
        observer.schedule(events, str(self.folder), recursive=False)
        observer.start()
        log.info("csv folder watched", source=self.name, folder=str(self.folder))
        try:
            self._scan()
            next_scan = time.monotonic() + self.config.rescan
            while not self.ctx.stopping.is_set():
                self._wake.clear()  # before looking, so an event that lands meanwhile is not slept through
                ready, next_at = self._files.settled()
                for path in ready:
                    if self.ctx.stopping.is_set():
                        break
                    await self._take(path)
                if ready:
                    continue
                now = time.monotonic()
                if now >= next_scan:
                    self._scan()
                    next_scan = now + self.config.rescan
                    continue
                await self._sleep((next_scan if next_at is None else min(next_scan, next_at)) - now)
        finally:
            observer.stop()
            await asyncio.to_thread(observer.join, 10)

    async def once(self) -> None:
        """Every file settled now; a file still being written is left for the next pass, never
        waited for (a cron job must not block on an ERP that is still writing)."""
        self._prepare()
        self._scan()
        ready, _ = self._files.settled()
        young = self._files.young(ready)
        if young:
            log.info(
                "csv files not settled yet; left for the next pass",
                source=self.name,
                files=young,
                settle_s=self.config.settle,
            )
        unfinished: list[str] = []
        for path in ready:
            if self.ctx.stopping.is_set():
                break
            if not await self._take(path):
                unfinished.append(path.name)
        if unfinished:
            raise SourceError(f"{self.name}: could not finish {', '.join(unfinished)}; left in the inbox")

    def notice(self, path_text: str) -> None:
        """A watchdog event about `path_text` (called on the loop)."""
        path = Path(path_text)
        if self._files.wants(path):
            self._files.observe(path)
            self._wake.set()

    def _scan(self) -> None:
        log.debug("csv folder scan", source=self.name)
        try:
            names = self._files.names()
        except OSError as e:
            error = str(e)
        else:
            for name in names:
                if self.folder / name not in self._files:
                    self._files.observe(self.folder / name)
            return
        log.error("csv folder cannot be listed", source=self.name, folder=str(self.folder), error=error)

    async def _sleep(self, seconds: float) -> None:
        """Until `seconds` pass, a watchdog event arrives or the source is asked to stop."""
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self.ctx.stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    def _prepare(self) -> None:
        try:
            for folder in (self.folder, self.processed, self.failed):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SourceError(f"{self.name}: cannot create {e.filename}: {e.strerror}") from e

    # -- one file ---------------------------------------------------------------------------------------

    async def _take(self, path: Path) -> bool:
        """Process one file; False when it had to stay in the inbox because of an error."""
        self._files.forget(path)
        if path in self._busy:
            return True
        hold = f"{self._scope}:{path.name}"  # every instance may watch a shared folder: one takes it
        epoch = await self.ctx.holds.hold(hold)
        if epoch is None:
            log.info("csv file being taken by another instance; left to it", source=self.name, file=path.name)
            self._files.look_again(path, self.held_elsewhere_s)  # its holder may stop or die meanwhile
            return True
        self._busy.add(path)
        try:
            await self._handle(path, _Taken(hold, epoch))
        except Exception:
            log.exception("csv file interrupted; it stays in the inbox", source=self.name, file=path.name)
            return False
        finally:
            self._busy.discard(path)
            await self.ctx.holds.let_go(hold)
        return True

    async def _handle(self, path: Path, taken: _Taken) -> None:
        try:
            st = await asyncio.to_thread(path.stat)
            layout = await asyncio.to_thread(
                inspect, path, key_column=self.config.key_column, status_column=self.config.status_column
            )
        except FileNotFoundError:
            log.info("csv file vanished before it was read", source=self.name, file=path.name)
            return
        except PermissionError as e:
            await asyncio.to_thread(self._fail, path, f"cannot be read: {e.strerror}")
            return
        except BadFile as e:
            await asyncio.to_thread(self._fail, path, str(e))
            return
        file_id = file_identity(path.name, st)
        await asyncio.to_thread(self.processed.mkdir, exist_ok=True)  # someone may have removed it
        _, results = free_names(self.processed, path.name, results_name)
        part = await asyncio.to_thread(self._part, results, taken.epoch)
        writer = await asyncio.to_thread(ResultsWriter, part, layout)
        self.updates.begin(file_id)
        try:
            complete = await self._pump(path, layout, file_id, writer)
            if complete and not await self.ctx.holds.holding(taken.name, taken.epoch):
                log.warning(
                    "csv file taken over by another instance (this one was silent past its lease); "
                    "left to it",
                    source=self.name,
                    file=path.name,
                )
                complete = False
            if complete and _changed(st, await asyncio.to_thread(_stat_or_none, path)):
                log.warning(
                    "csv file changed or moved while read; read again", source=self.name, file=path.name
                )
                complete = False
            if not complete:
                await asyncio.to_thread(writer.discard)
                return
            await self._finish(path, layout, file_id, writer)
        except BadFile as e:  # the file changed under us into something unreadable
            await asyncio.to_thread(writer.discard)
            await asyncio.to_thread(self._fail, path, str(e))
        except BaseException:
            await asyncio.to_thread(writer.discard)
            raise
        finally:
            self.updates.end()

    async def _pump(self, path: Path, layout: Layout, file_id: str, writer: ResultsWriter) -> bool:
        """Rows to the engine and statuses to the writer; False when stopped before the end."""
        reader = await asyncio.to_thread(
            RowReader, path, layout, source=self.name, file_id=file_id, chunk_rows=self.chunk_rows
        )
        in_flight: _InFlight = deque()
        progress = self._progress(path, layout)
        try:
            while True:
                if self.ctx.stopping.is_set():
                    # Sends already handed over finish and reach the ledger; nothing more is taken.
                    await asyncio.gather(*(task for _, task in in_flight), return_exceptions=True)
                    log.info("csv file left in the inbox: stopping", source=self.name, file=path.name)
                    return False
                chunk = await asyncio.to_thread(reader.next_chunk)
                if not chunk:
                    break
                in_flight.append((chunk, asyncio.create_task(self._statuses(chunk))))
                while in_flight and (len(in_flight) >= self.in_flight or in_flight[0][1].done()):
                    progress.add(await self._write_oldest(in_flight, writer))
            while in_flight:
                progress.add(await self._write_oldest(in_flight, writer))
        except asyncio.CancelledError:
            for _, task in in_flight:
                task.cancel()
            raise
        except Exception:
            await asyncio.gather(*(task for _, task in in_flight), return_exceptions=True)
            raise
        else:
            return True
        finally:
            progress.close()
            await asyncio.to_thread(reader.close)

    def _progress(self, path: Path, layout: Layout) -> Progress:
        return Progress(
            f"{self.name} {path.name}", layout.data_rows, fields={"source": self.name, "file": path.name}
        )

    async def _statuses(self, chunk: list[Row]) -> list[str | None]:
        records = [row.record for row in chunk if row.record is not None]
        if not records:
            return []
        statuses = await self.ctx.process(records)
        if len(statuses) != len(records):
            raise SourceError(f"{len(statuses)} statuses came back for {len(records)} records")
        return statuses

    async def _write_oldest(self, in_flight: _InFlight, writer: ResultsWriter) -> int:
        chunk, task = in_flight[0]
        statuses = await task
        in_flight.popleft()
        return await asyncio.to_thread(writer.write_chunk, chunk, statuses)

    async def _finish(self, path: Path, layout: Layout, file_id: str, writer: ResultsWriter) -> None:
        original, results = free_names(self.processed, path.name, results_name)  # again: time has passed
        await asyncio.to_thread(writer.commit, results)
        fmt = layout.results_format(results.name)
        await self.ctx.notes.set_note(self._scope, file_id, fmt.to_json())
        await asyncio.to_thread(os.replace, path, original)
        log.info(
            "csv file processed",
            source=self.name,
            file=path.name,
            rows=layout.data_rows,
            results=str(results.relative_to(self.folder)),
        )
        self.activity.did(f"took {path.name}: {layout.data_rows} row(s)")
        await self.updates.finished(file_id, fmt)

    def _part(self, results: Path, epoch: int) -> Path:
        """Where results are written while the file is taken: named by the hold's epoch, so that an
        instance that lost the file never writes into the part of the one that took it over. Parts
        of earlier takers (a crash, a lost lease) are removed."""
        for stale in self.processed.glob(f"{glob.escape(results.name)}.*.part"):
            if stale.name != f"{results.name}.{epoch}.part":
                stale.unlink(missing_ok=True)
        return results.with_name(f"{results.name}.{epoch}.part")

    def _fail(self, path: Path, reason: str) -> None:
        """Move to failed/ beside its reason; if even that is impossible, say so once, wait for a change."""
        self.activity.failed(f"{path.name}: {reason}")
        original, note = free_names(self.failed, path.name, reason_name)
        try:
            st = path.stat()
        except OSError:
            return
        try:
            self.failed.mkdir(exist_ok=True)
            part = note.with_name(note.name + ".part")
            part.write_text(reason + "\n", encoding="utf-8")
            part.replace(note)
            path.replace(original)
        except OSError as e:
            error = str(e)
        else:
            self._files.unstuck(path)
            log.warning("csv file moved to failed/", source=self.name, file=path.name, reason=reason)
            return
        with contextlib.suppress(OSError):
            note.unlink()
        self._files.stuck(path, st)
        log.error(
            "csv file unreadable and cannot be moved to failed/; left until it changes",
            source=self.name,
            file=path.name,
            reason=reason,
            error=error,
        )

    # -- statuses that change later, preview, check -----------------------------------------------------

    async def write_back(self, updates: Sequence[StatusUpdate]) -> None:
        await self.updates.write_back(updates)

    def preview(self) -> Iterator[Record]:
        if not self.folder.is_dir():
            return
        for name in self._files.names():
            path = self.folder / name
            try:
                file_id = file_identity(name, path.stat())
                layout = inspect(
                    path, key_column=self.config.key_column, status_column=self.config.status_column
                )
                reader = RowReader(
                    path, layout, source=self.name, file_id=file_id, chunk_rows=self.chunk_rows
                )
            except (OSError, BadFile) as e:
                log.warning("csv file would go to failed/", source=self.name, file=name, reason=str(e))
                continue
            with reader, self._progress(path, layout) as progress:
                while chunk := reader.next_chunk():
                    for row in chunk:
                        if row.record is not None:
                            progress.add(1)  # handed over to be examined now (the preview renders it)
                            yield row.record

    async def check(self, *, online: bool = True) -> str:  # local either way
        return await asyncio.to_thread(self._check)

    def _check(self) -> str:
        shown = self.config.path.as_posix()
        shown = shown if self.config.path.is_absolute() else f"./{shown.removeprefix('./')}"
        if not self.folder.exists():
            parent = next(p for p in self.folder.parents if p.exists())
            if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
                raise SourceError(f"{shown} does not exist and cannot be created in {parent}")
            return f"{shown}: does not exist yet, will be created"
        if not self.folder.is_dir():
            raise SourceError(f"{shown} is not a folder")
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise SourceError(f"{shown} is not writable")
        waiting = len(self._files.names())
        return f"{shown}: {waiting} file{'' if waiting == 1 else 's'} waiting"


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _changed(before: os.stat_result, after: os.stat_result | None) -> bool:
    if after is None:
        return True
    return (before.st_size, before.st_mtime_ns, before.st_ino) != (
        after.st_size,
        after.st_mtime_ns,
        after.st_ino,
    )

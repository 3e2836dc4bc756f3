"""Google Sheets source: poll a worksheet, hand due rows to the engine, write statuses back.

One poll, in API requests (the figures the quota is spent on):

1. read the used range (one values.get) and turn rows into records; a row is due when its status
   cell is empty, says `resend`, or says `pending` (held earlier: the ledger may know better now).
   Rows with any other status are left alone and cost nothing more. Nothing due: the poll ends here.
2. re-read the key column only (the whole range when rows are found by fingerprint), because people
   insert, delete and sort rows while the engine sends: a status goes where its row is now.
3. write every changed status in one values:batchUpdate, RAW, so no status is read as a formula.

Opening the spreadsheet costs a token and two metadata requests; the handles are then cached.
A missing status column is added to the header row in the same batch write, after one structural
request that widens the grid if there is no spare column.

A row's identity is its key (`key_column`) or a fingerprint of its cells without the status cell,
so the ledger recognises a row after it moved: a status cleared by hand is answered from the
ledger and rewritten, never sent twice. A write that fails loses nothing: cells stay empty, and the
next poll gets the same statuses back from the ledger. `resend` is the exception (it forces a send),
so a `resend` whose status could not be written is remembered in the ledger's notes until it is.

Blocking gspread work happens in `sources.sheets_client`, entered only through `_blocking`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self, TypeVar

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import Field, field_validator, model_validator

from connector.errors import SourceError
from connector.events import Record
from connector.progress import Progress
from connector.status import is_resend
from connector.types import STRICT, Duration
from sources.base import Source, SourceConfigBase, SourceContext, StatusUpdate
from sources.sheets_access import SheetsAccess
from sources.sheets_auth import spreadsheet_key
from sources.sheets_client import Cell, column_letter, load_credentials
from sources.sheets_table import SheetRow, Table, read_table, rows_by_number

log = structlog.get_logger(__name__)

T = TypeVar("T")


class GoogleSheetsConfig(SourceConfigBase, SheetsAccess):
    """A Google Sheet polled on a schedule; each row's status goes into its status cell."""

    model_config = STRICT
    type: Literal["google_sheets"] = Field(description="A worksheet of a Google Sheet.")
    spreadsheet: str = Field(description="The spreadsheet's key, or its URL from the browser.")
    worksheet: str | None = Field(default=None, description="The worksheet's title; default: the first.")
    every: Duration | None = Field(
        default=None, description="Poll this often; 60s when neither every nor cron is given."
    )
    cron: str | None = Field(default=None, description='Or poll on a cron schedule, e.g. "*/5 * * * *".')
    header_row: int = Field(default=1, description="The row that holds the column names.")
    key_column: str | None = Field(
        default=None, description="A column that identifies a row (strongly advised: rows move)."
    )
    status_column: str = Field(
        default="SMS Status", description="The column that gets each row's status; added if missing."
    )

    @field_validator("spreadsheet")
    @classmethod
    def _spreadsheet_key(cls, value: str) -> str:
        return spreadsheet_key(value)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            CronTrigger.from_crontab(value, timezone=UTC)  # its ValueError names the bad field
        return value

    @field_validator("header_row")
    @classmethod
    def _positive_row(cls, value: int) -> int:
        if value < 1:
            raise ValueError("rows are numbered from 1")
        return value

    @field_validator("every", "timeout", "max_retry_time")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("status_column")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value:
            raise ValueError("the status column needs a name")
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> Self:
        if self.every is not None and self.cron is not None:
            raise ValueError("give either `every` or `cron`, not both")
        return self


# -- the source -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Write:
    statuses: dict[str, str]  # origin -> status
    duplicates: frozenset[str]
    status_col: int
    key_col: int  # 1-based; 0 without key_column
    add_header: bool


def _write_of(table: Table, statuses: dict[str, str]) -> _Write:
    return _Write(
        statuses=statuses,
        duplicates=frozenset(table.duplicates),
        status_col=table.status_col,
        key_col=table.key_col,
        add_header=not table.status_exists,
    )


class GoogleSheetsSource(Source):
    config_model = GoogleSheetsConfig
    config: GoogleSheetsConfig

    default_every = 60.0
    chunk_rows = 1000  # due rows per engine call: progress shows between them, a stop takes no more

    def __init__(self, name: str, config: GoogleSheetsConfig, ctx: SourceContext) -> None:
        super().__init__(name, config, ctx)
        self.client = config.client(
            ctx.base_dir, spreadsheet=config.spreadsheet, worksheet=config.worksheet, source=name
        )
        self._lock = asyncio.Lock()  # one poll at a time, whoever starts it
        self._held: dict[str, str] = {}  # statuses from write_back, written with the next poll
        self._scope = f"sheets:{name}"
        # Statuses decided in another process (`connector resolve`) for the poller to write.
        self._late_scope = f"sheets-late:{name}"
        self._hold = f"sheet:{name}"  # one instance polls at a time
        self._epoch: int | None = None  # of the hold, as this instance last took it
        self.job_id = f"google_sheets:{name}"

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        # THE thread boundary: every gspread / google-auth call crosses here, never on the loop.
        return await asyncio.to_thread(fn, *args)

    # -- scheduling ---------------------------------------------------------------------------------

    def trigger(self) -> CronTrigger | IntervalTrigger:
        if self.config.cron is not None:
            return CronTrigger.from_crontab(self.config.cron, timezone=UTC)
        return IntervalTrigger(seconds=self.config.every or self.default_every, timezone=UTC)

    async def run(self) -> None:
        scheduler = self.ctx.scheduler
        own = scheduler is None
        if own:
            scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone="UTC")
            scheduler.start()
        assert scheduler is not None
        # max_instances=1: a slow poll (quota back-off, a big sheet) is never overlapped by the next.
        scheduler.add_job(
            self.scheduled_poll,
            self.trigger(),
            id=self.job_id,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=None,
        )
        log.info("sheet polled", source=self.name, schedule=self.config.cron or f"every {self.trigger()}")
        try:
            await self.ctx.stopping.wait()
        finally:
            with contextlib.suppress(JobLookupError):
                scheduler.remove_job(self.job_id)
            self.client.cancel()  # no more waiting out a 429: the ledger keeps what is not written
            async with self._lock:  # the poll in hand finishes its sends and its write
                pass
            await self.ctx.holds.let_go(self._hold)
            if own:
                scheduler.shutdown(wait=False)

    async def scheduled_poll(self) -> None:
        try:
            await self.poll()
        except SourceError as e:
            self.activity.failed(f"poll failed: {e}")
            log.error("sheet poll failed; statuses wait in the ledger", source=self.name, error=str(e))
        except Exception:
            log.exception("sheet poll failed; statuses wait in the ledger", source=self.name)

    async def once(self) -> None:
        await self.poll()

    # -- one poll -----------------------------------------------------------------------------------

    async def poll(self) -> int:
        """Read, process, write back. Answers how many status cells were written.

        With several instances on one ledger, one polls (the hold on the sheet, which it keeps
        while it lives) and the others skip their turn: the sheet is read once per schedule."""
        async with self._lock:
            epoch = await self.ctx.holds.hold(self._hold)
            if epoch != self._epoch:
                log.info(
                    "sheet polled by another instance" if epoch is None else "this instance polls the sheet",
                    source=self.name,
                )
                self._epoch = epoch
            if epoch is None:
                return 0
            table = await self._blocking(self._read_table)
            self.activity.did(f"polled: {len(table.due)} row(s) due")
            if table.due:
                await self._known_resends(table)
            statuses = await self._process(table)
            resent = [r.origin for r, s in zip(table.due, statuses, strict=True) if s and is_resend(r.cell)]
            for origin in resent:  # durable before the write: a failed write must not send it again
                await self.ctx.notes.set_note(self._scope, origin, "resent")
            changed = {
                row.origin: status
                for row, status in zip(table.due, statuses, strict=True)
                if status is not None and status != row.cell
            }
            late = await self.ctx.notes.notes_in(self._late_scope)
            held = {**late, **self._held}
            if not changed and not held:
                return 0
            if not await self.ctx.holds.holding(self._hold, epoch):
                # Silent past its lease: the new poller writes these statuses from the ledger.
                log.warning("sheet taken over by another instance; statuses left to it", source=self.name)
                return 0
            written = await self._blocking(self._locate_and_write, _write_of(table, {**held, **changed}))
            for origin, status in held.items():
                if self._held.get(origin) == status:
                    del self._held[origin]
            for origin in resent:
                await self.ctx.notes.set_note(self._scope, origin, "")
            await self.ctx.notes.drop_notes(self._late_scope, list(late))
            return written

    async def flush(self) -> None:
        """Statuses decided in this process (`connector resolve`) written now, unless another
        instance polls the sheet: its next poll writes them from the ledger's notes."""
        async with self._lock:
            if await self.ctx.holds.hold(self._hold) is None:
                return
            try:
                late = await self.ctx.notes.notes_in(self._late_scope)
                if late:
                    table = await self._blocking(self._read_table)
                    await self._blocking(self._locate_and_write, _write_of(table, late))
                    await self.ctx.notes.drop_notes(self._late_scope, list(late))
            finally:
                await self.ctx.holds.let_go(self._hold)

    async def _process(self, table: Table) -> list[str | None]:
        """A status per due row, a chunk at a time. Once stopping, no chunk is started after the
        first: the rows not reached get no status, and the next poll takes them."""
        records = [row.record for row in table.due]
        statuses: list[str | None] = [None] * len(records)
        with self._progress(table) as progress:
            for start in range(0, len(records), self.chunk_rows):
                if start and self.ctx.stopping.is_set():
                    break
                chunk = records[start : start + self.chunk_rows]
                answered = await self.ctx.process(chunk)
                if len(answered) != len(chunk):
                    raise SourceError(f"{len(answered)} statuses came back for {len(chunk)} records")
                statuses[start : start + len(chunk)] = answered
                progress.add(len(chunk))
        return statuses

    def _progress(self, table: Table) -> Progress:
        sheet = table.grid.title
        return Progress(f"{self.name} {sheet}", len(table.due), fields={"source": self.name, "sheet": sheet})

    async def _known_resends(self, table: Table) -> None:
        """`resend` cells whose forced send already happened (its status was never written)."""
        for index, row in enumerate(table.due):
            if row.record.status and await self.ctx.notes.get_note(self._scope, row.origin):
                plain = Record(
                    source=row.record.source,
                    row=row.record.row,
                    origin=row.record.origin,
                    key=row.record.key,
                    status="",
                    problem=row.record.problem,
                    where=row.record.where,
                )
                table.due[index] = SheetRow(row.number, row.origin, row.cell, plain)

    def _read_table(self) -> Table:
        block = self.client.read()
        return read_table(self.name, self.config, self.client.grid(), block)

    def _locate_and_write(self, write: _Write) -> int:
        """Find each row where it is now, then write every status in one batch. Blocking."""
        grid = self.client.grid()
        key_prefix = f"sheet:{grid.spreadsheet_id}:{grid.sheet_id}:key:"
        if write.key_col and all(origin.startswith(key_prefix) for origin in write.statuses):
            located = self._locate_by_key(write.key_col, key_prefix)
        else:
            located = self._table_now().rows_by_origin
        cells: list[Cell] = []
        for origin, status in write.statuses.items():
            rows = located.get(origin, [])
            if not rows:
                log.warning(
                    "row gone before its status was written; the ledger keeps it",
                    source=self.name,
                    origin=origin,
                    status=status,
                )
            elif len(rows) > 1 and origin not in write.duplicates:
                log.warning(
                    "key now on several rows; status not written, the ledger keeps it",
                    source=self.name,
                    origin=origin,
                    rows=rows,
                )
            else:
                cells.extend(Cell(row, write.status_col, status) for row in rows)
        if not cells:
            return 0
        if write.add_header:
            self.client.widen(write.status_col)
            cells.append(Cell(self.config.header_row, write.status_col, self.config.status_column))
        ranges = self.client.write(cells)
        log.info("sheet statuses written", source=self.name, cells=len(cells), ranges=ranges)
        return len(cells)

    def _locate_by_key(self, key_col: int, key_prefix: str) -> dict[str, list[int]]:
        """One read of the key column: where each key is now."""
        letter = column_letter(key_col)
        located: dict[str, list[int]] = defaultdict(list)
        for number, cells in rows_by_number(self.client.read(f"{letter}:{letter}")).items():
            key = cells[key_col - 1].strip() if len(cells) >= key_col else ""
            if number > self.config.header_row and key:
                located[key_prefix + key].append(number)
        return located

    def _table_now(self) -> Table:
        return read_table(self.name, self.config, self.client.grid(), self.client.read())

    # -- statuses that change later, preview, check -------------------------------------------------

    async def write_back(self, updates: Sequence[StatusUpdate]) -> None:
        if self._epoch is None:
            # Not the poller: whichever instance polls next writes these (a pending cell is read
            # again anyway, but a decision on a settled one would never be seen otherwise).
            # At once, not one after another: the ledger commits them together, not a commit each.
            await asyncio.gather(
                *(self.ctx.notes.set_note(self._late_scope, u.origin, u.status) for u in updates)
            )
            return
        for update in updates:
            if update.origin.startswith("sheet:"):
                self._held[update.origin] = update.status
            else:
                log.warning(
                    "sheet status update with a foreign origin", source=self.name, origin=update.origin
                )

    def preview(self) -> Iterator[Record]:
        table = self._read_table()
        with self._progress(table) as progress:
            for row in table.due:
                progress.add(1)  # handed over to be examined now (the preview renders it)
                yield row.record

    async def check(self, *, online: bool = True) -> str:
        return await self._blocking(self._check if online else self._check_offline)

    def _check_offline(self) -> str:
        """The key file read and parsed here; nothing is asked of Google (`check --offline`)."""
        if self.client.key_file is None:
            raise SourceError("no credentials: set `credentials` or GOOGLE_APPLICATION_CREDENTIALS")
        email = load_credentials(self.client.key_file).service_account_email
        where = self.config.worksheet or "first worksheet"
        return f"spreadsheet {self.config.spreadsheet} / {where}: key of {email} read; not opened (--offline)"

    def _check(self) -> str:
        grid = self.client.grid()
        row = self.config.header_row
        table = read_table(self.name, self.config, grid, self.client.read(f"{row}:{row}"))
        if not table.names:
            raise SourceError(f"header row {row} of {grid.title!r} is empty")
        status = "present" if table.status_exists else "will be added"
        key = f", key {self.config.key_column!r}" if self.config.key_column else ", rows found by fingerprint"
        return (
            f"{grid.spreadsheet_title!r} / {grid.title!r}: {len(table.names)} columns{key}, "
            f"status column {self.config.status_column!r} {status}"
        )

"""Statuses that change after a CSV file was processed: its results file rewritten in place.

A held message sent later (by this instance or, with several, by whichever sweeps) comes back as a
status update for `<file id>:<line>`. Three cases:
- the file is being taken by this process right now: the update waits in memory for its results;
- the file was finished (the ledger has its results format): the results file is rewritten, under
  a hold so that two instances never rewrite one file at once;
- the file is not finished yet, or is being taken by another instance: the update is kept in the
  ledger as a late status, and whoever finishes the file writes it. Kept first, checked second,
  while the finisher records the format first and reads late statuses second: whatever the
  interleaving, one of the two sees the other, so no status is lost between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import structlog

from sources.base import SourceContext, StatusUpdate
from sources.csv_files import BadFile, ResultsFormat, rewrite_statuses

log = structlog.get_logger(__name__)

HOLD_WAIT_S = 30.0  # for another instance to finish its rewrite of the same results file
HOLD_POLL_S = 0.2


class ResultsUpdates:
    def __init__(self, source: str, scope: str, processed: Path, ctx: SourceContext) -> None:
        self.source = source
        self.scope = scope  # notes: file id -> results format
        self.processed = processed
        self.ctx = ctx
        self.active: str | None = None  # file id in hand; its updates wait for its results file
        self.deferred: dict[int, str] = {}
        self._rewriting = asyncio.Lock()

    def begin(self, file_id: str) -> None:
        self.active, self.deferred = file_id, {}

    def end(self) -> None:
        self.active = None

    def _late_scope(self, file_id: str) -> str:
        return f"{self.scope}:late:{file_id}"

    async def finished(self, file_id: str, fmt: ResultsFormat) -> None:
        """The file's results are committed and its format recorded: write what came meanwhile."""
        changes = dict(self.deferred)
        late = await self.ctx.notes.notes_in(self._late_scope(file_id))
        changes.update({int(line): status for line, status in late.items()})
        if changes:
            await self.rewrite(fmt, changes)
        await self.ctx.notes.drop_notes(self._late_scope(file_id), list(late))

    async def write_back(self, updates: Sequence[StatusUpdate]) -> None:
        by_file: dict[str, dict[int, str]] = {}
        for update in updates:
            file_id, _, line = update.origin.rpartition(":")
            if not file_id or not line.isdigit():
                log.warning(
                    "csv status update with a foreign origin", source=self.source, origin=update.origin
                )
                continue
            by_file.setdefault(file_id, {})[int(line)] = update.status
        for file_id, changes in by_file.items():
            if file_id == self.active:
                self.deferred.update(changes)
                continue
            note = await self.ctx.notes.get_note(self.scope, file_id)
            if note is None:
                await self._keep_late(file_id, changes)
                continue
            await self.rewrite(ResultsFormat.from_json(note), changes)

    async def _keep_late(self, file_id: str, changes: dict[int, str]) -> None:
        scope = self._late_scope(file_id)
        for line, status in changes.items():
            await self.ctx.notes.set_note(scope, str(line), status)
        note = await self.ctx.notes.get_note(self.scope, file_id)  # finished in the meantime?
        if note is None:
            log.info("csv statuses kept for a file not finished yet", source=self.source, rows=len(changes))
            return
        late = await self.ctx.notes.notes_in(scope)
        await self.rewrite(ResultsFormat.from_json(note), {int(k): v for k, v in late.items()})
        await self.ctx.notes.drop_notes(scope, list(late))

    async def rewrite(self, fmt: ResultsFormat, changes: dict[int, str]) -> None:
        hold = f"{self.scope}:results:{fmt.results}"
        async with self._rewriting:
            if not await self._wait_for(hold):
                log.error(
                    "csv results file held by another instance too long; the ledger keeps the statuses",
                    source=self.source,
                    file=fmt.results,
                )
                return
            try:
                changed = await asyncio.to_thread(
                    rewrite_statuses, self.processed / fmt.results, fmt, changes
                )
            except (OSError, BadFile) as e:
                error = str(e)
            else:
                log.info("csv statuses updated", source=self.source, file=fmt.results, rows=changed)
                return
            finally:
                await self.ctx.holds.let_go(hold)
        log.error("csv results file cannot be updated", source=self.source, file=fmt.results, error=error)

    async def _wait_for(self, hold: str) -> bool:
        deadline = asyncio.get_running_loop().time() + HOLD_WAIT_S
        while await self.ctx.holds.hold(hold) is None:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(HOLD_POLL_S)
        return True

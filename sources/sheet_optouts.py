"""A tab of a Google Sheet as an opt-out list (`suppress: - sheet: ...`), beside list files.

The team keeps the numbers that asked to stop where it keeps the rest: a tab of a spreadsheet.
It is read like a list file (`connector.optouts`): a column of numbers, a header recognised by not
being a number, normalised to E.164 and kept in the ledger's notes for the next start.

A sheet cannot say it changed without being read, so it is read again at most every `every` (one
values.get each time, from the quota the Sheets sources also draw on) and taken up again only when
what it holds changed. When Google cannot be reached or refuses, the numbers last read stay
suppressed (those kept by the last start, when none were read yet): an outage must not send to
people who asked not to be sent to.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from pathlib import Path

from pydantic import Field, field_validator

from connector.optout_lists import ListConfigBase, ListReader, ListUnreadable
from connector.types import Duration
from sources.sheets_access import SheetsAccess
from sources.sheets_auth import SheetsError, spreadsheet_key


class SheetListConfig(ListConfigBase, SheetsAccess):
    """A tab of a Google Sheet whose `column` (default: the first) holds numbers."""

    sheet: str = Field(description="The spreadsheet's key, or its URL from the browser.")
    tab: str | None = Field(default=None, description="The tab (worksheet) title; default: the first.")
    every: Duration = Field(
        default=60.0, description="Read it again at most this often (one Sheets API request each time)."
    )
    max_retry_time: Duration = Field(
        default=10.0, description="Retries of one read (429, 5xx) give up after this long."
    )

    @field_validator("sheet")
    @classmethod
    def _spreadsheet_key(cls, value: str) -> str:
        return spreadsheet_key(value)

    def describe(self) -> str:
        where = f"sheet {self.sheet} / {self.tab or 'first tab'}"
        return where + (f" (column {self.column})" if self.column else "")

    def reader(self, base_dir: Path) -> ListReader:
        return SheetList(self, base_dir)


class SheetList:
    """Reads the tab through the Sheets source's client (auth, routing, retries, Retry-After)."""

    remote = True
    keeps_last = True

    def __init__(self, config: SheetListConfig, base_dir: Path) -> None:
        self.column, self.country = config.column, config.country
        self.name = f"sheet {config.sheet} / {config.tab or 'first tab'}"
        self._every = config.every
        self._client = config.client(
            base_dir, spreadsheet=config.sheet, worksheet=config.tab, source=self.name
        )
        self._asked: float | None = None  # monotonic time of the last read, failed or not
        self._digest: str | None = None  # of what the last good read held

    def fetch(self) -> bytes | None:
        now = time.monotonic()
        if self._asked is not None and now - self._asked < self._every:
            return None
        self._asked = now  # a failing read is not repeated at every sweep either
        try:
            values = self._client.read().values
        except SheetsError as exc:
            self._digest = None  # readable again: taken up again, and said so
            raise ListUnreadable(str(exc)) from None
        text = io.StringIO()
        csv.writer(text).writerows(values)
        data = text.getvalue().encode()
        digest = hashlib.blake2b(data).hexdigest()
        if digest == self._digest:
            return None
        self._digest = digest
        return data

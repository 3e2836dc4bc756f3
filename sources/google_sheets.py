"""Google Sheets source (config only in this version; polling arrives with the Sheets issue)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import model_validator

from connector.types import STRICT, Duration
from sources.base import SourceConfigBase


class GoogleSheetsConfig(SourceConfigBase):
    model_config = STRICT
    type: Literal["google_sheets"]
    spreadsheet: str
    worksheet: str | None = None
    credentials: Path | None = None
    every: Duration | None = None
    cron: str | None = None
    header_row: int = 1
    key_column: str | None = None
    status_column: str = "SMS Status"
    api_url: str = "https://sheets.googleapis.com"

    @model_validator(mode="after")
    def _one_schedule(self) -> Self:
        if self.every is not None and self.cron is not None:
            raise ValueError("give either `every` or `cron`, not both")
        return self

"""How a config reaches a Google Sheet: the fields a sheet source and a sheet opt-out list share,
and the client built from them (`sources.sheets_client`)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

from connector.types import STRICT, Duration
from sources.sheets_client import SheetsClient


class SheetsAccess(BaseModel):
    """The key file, the API's address, and how long one request and its retries may take."""

    model_config = STRICT
    credentials: Path | None = Field(
        default=None,
        description="Service-account key file (share the sheet with its e-mail); default: "
        "$GOOGLE_APPLICATION_CREDENTIALS.",
    )
    api_url: str = Field(
        default="https://sheets.googleapis.com", description="The Sheets API; an emulator's in tests."
    )
    timeout: Duration = Field(default=30.0, description="Timeout of one API request.")
    max_retry_time: Duration = Field(
        default=120.0, description="Retries of one call (429, 5xx) give up after this long."
    )

    def client(self, base_dir: Path, *, spreadsheet: str, worksheet: str | None, source: str) -> SheetsClient:
        """A client of that worksheet; the key file is relative to the config file's folder."""
        return SheetsClient(
            key_file=self._key_file(base_dir),
            spreadsheet=spreadsheet,
            worksheet=worksheet,
            api_url=self.api_url,
            timeout=self.timeout,
            max_retry_time=self.max_retry_time,
            source=source,
        )

    def _key_file(self, base_dir: Path) -> Path | None:
        key_file = self.credentials
        if key_file is None and os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            key_file = Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"])
        if key_file is not None and not key_file.is_absolute():
            key_file = base_dir / key_file
        return key_file

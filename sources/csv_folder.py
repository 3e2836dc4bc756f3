"""CSV drop folder: an ERP writes files into a folder; each settled file is processed once."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from connector.types import STRICT, Duration
from sources.base import SourceConfigBase


class CsvFolderConfig(SourceConfigBase):
    model_config = STRICT
    type: Literal["csv_folder"]
    path: Path
    pattern: str = "*.csv"
    settle: Duration = 2.0  # a file unchanged this long is complete
    key_column: str | None = None
    status_column: str = "SMS Status"
    rescan: Duration = 60.0  # safety net beside watchdog events (network shares can miss them)

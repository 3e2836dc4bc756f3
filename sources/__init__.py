"""Source registry: one module per source type, one line here per module."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from sources.base import Source
from sources.csv_folder import CsvFolderConfig, CsvFolderSource
from sources.google_sheets import GoogleSheetsConfig, GoogleSheetsSource
from sources.webhook import WebhookConfig, WebhookSource

SourceConfig = Annotated[CsvFolderConfig | GoogleSheetsConfig | WebhookConfig, Field(discriminator="type")]

SOURCE_TYPES: dict[str, type[Source]] = {
    CsvFolderSource.type_name: CsvFolderSource,
    GoogleSheetsSource.type_name: GoogleSheetsSource,
    WebhookSource.type_name: WebhookSource,
}

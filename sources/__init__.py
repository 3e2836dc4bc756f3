"""Source registry: one module per source type, one line here per module."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from connector.plugins import config_union, load
from sources.base import Source, SourceConfigBase

REGISTERED: tuple[type[Source], ...] = load(
    Source,
    "sources.csv_folder.CsvFolderSource",
    "sources.google_sheets.GoogleSheetsSource",
    "sources.webhook.WebhookSource",
)

SOURCE_TYPES: dict[str, type[Source]] = {source.type_name: source for source in REGISTERED}

if TYPE_CHECKING:
    SourceConfig: TypeAlias = SourceConfigBase
else:  # one config model per source, chosen by its `type`
    SourceConfig = config_union([source.config_model for source in REGISTERED])

"""What an opt-out list is (`suppress:`), for the plug-ins that provide a kind of list.

`connector.optouts` reads every list through a `ListReader` and merges their numbers; files are
its own kind. A plug-in that can reach lists kept elsewhere (a Google Sheet tab: `sources`) gives
a config model built on `ListConfigBase` whose `reader` reaches them; it needs nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, field_validator

from connector.types import STRICT


class ListUnreadable(Exception):
    """A list cannot be read now; the message says why."""


class ListReader(Protocol):
    """One opt-out list, as `OptOuts` reads it. `fetch` blocks (it is called in a thread)."""

    name: str  # how logs name it, and its key in the ledger's notes
    column: str | None
    country: str | None
    remote: bool  # reached over the network: not read by commands that must stay offline
    keeps_last: bool  # unreadable: its last numbers stay suppressed (else: none of them until it is back)

    def fetch(self) -> bytes | None:
        """The list as CSV bytes when it may have changed since the last fetch; None when not.
        Raises ListUnreadable."""
        ...


class ListConfig(Protocol):
    """A `suppress` entry: says what it is, and builds its reader."""

    def describe(self) -> str: ...
    def reader(self, base_dir: Path) -> ListReader: ...


class ListConfigBase(BaseModel):
    """What every kind of `suppress` list names: where the numbers are in it, and how to read them."""

    model_config = STRICT
    column: str | None = Field(default=None, description="The column of the numbers; default: the first.")
    country: str | None = Field(
        default=None, description="Region of numbers written without a prefix, e.g. RO."
    )

    @field_validator("country")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import phonenumbers  # noqa: PLC0415 - heavy import kept out of the config module's import time

        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a country code that phone numbers know (use RO, PK, ...)")
        return value.upper()

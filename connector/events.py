"""The values that travel through the pipeline: records in, messages to sinks, outcomes back."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Record:
    """One row of a sheet or CSV file, or one webhook object.

    `origin` says where the record came from, stable across a crash and a re-read of the same
    batch (for CSV: the file's identity plus the data row number). The ledger uses it to tell
    "the same record seen again after a restart" from "a duplicate that arrived again".
    """

    source: str
    row: Mapping[str, Any]
    origin: str
    key: str | None = None  # value of key_column when the source has one
    status: str = ""  # the status cell as it stands ("" when empty, "resend" to ask again)
    problem: str | None = None  # set by the source when the row itself is malformed (ragged row)
    where: str = ""  # for people: "orders.csv line 12"


@dataclass(frozen=True, slots=True)
class Event:
    """What `accept` answers for one (record, rule): the ledger key is the event's id."""

    id: str
    rule: str
    state: str  # a ledger state, or "skipped" for a duplicate
    reason: str


@dataclass(frozen=True, slots=True)
class Message:
    """One SMS to send. `id` is the ledger's idempotency key."""

    id: str
    to: str  # E.164, with the plus: +40740123456
    text: str
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Cost:
    """What one message costs at its provider, in the provider's own unit (RO credits, PK SMS)."""

    amount: int
    unit: str  # singular, e.g. "RO credit"

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}(s)"


class OutcomeKind(enum.Enum):
    SENT = "sent"  # provider accepted it
    FAILED = "failed"  # will not be sent as it stands
    HELD = "pending"  # not sent, provably not taken: sink paused, retries exhausted
    UNKNOWN = "unknown"  # the request left and we cannot tell whether it was taken
    LOST = "lost"  # not this instance's any more (its lease lapsed): nothing sent, nothing to record


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    detail: str  # provider id or code for SENT; the reason otherwise

    @classmethod
    def sent(cls, detail: str) -> Outcome:
        return cls(OutcomeKind.SENT, detail)

    @classmethod
    def failed(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.FAILED, reason)

    @classmethod
    def held(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.HELD, reason)

    @classmethod
    def unknown(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.UNKNOWN, reason)

    @classmethod
    def lost(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.LOST, reason)

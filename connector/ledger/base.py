"""What the engine needs from durable state, small enough that PostgreSQL can implement it too.

States of one send (one idempotency key):

    pending --> sending --> sent | failed | unknown
       ^           |
       +-- held ---+   (sink paused / provider down: back to pending, retried by itself)

`sending` is durable before the request leaves. A process that dies leaves `sending` rows behind;
`recover()` turns them into `unknown`, which nothing resends by itself.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class State(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Claim:
    """A message the engine wants to send, or a record that failed before it became one."""

    key: str
    source: str
    rule: str
    sink: str
    origin: str
    recipient: str
    text: str
    expires_at: float | None  # fingerprint identities are forgotten after the rule's dedupe_window
    force: bool = False  # `resend` typed into the status cell
    failed: str | None = None  # set: recorded straight as failed with this reason (render/number problem)


class ClaimResult(enum.Enum):
    NEW = "new"  # recorded as pending now: send it
    RESUME = "resume"  # this very record was claimed before (same origin): carry on from its state
    DUPLICATE = "duplicate"  # another record already claimed this message: do not send


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    source: str
    rule: str
    sink: str
    origin: str
    recipient: str
    text: str
    state: State
    detail: str
    attempts: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Transition:
    key: str
    state: State
    detail: str


@dataclass(frozen=True, slots=True)
class Counts:
    source: str
    rule: str
    state: State
    count: int


Remember = Callable[[list[tuple[ClaimResult, Entry]]], tuple[str, str, str]]
"""From the claims' results, a note to write in their own transaction: (scope, key, value)."""


class Ledger(abc.ABC):
    @abc.abstractmethod
    async def claim(
        self, claims: Sequence[Claim], remember: Remember | None = None
    ) -> list[tuple[ClaimResult, Entry]]:
        """Record intent for each claim in one transaction; answer what to do with each.

        `remember`, when given, is called with the results inside that transaction and its note is
        written with them: a webhook's answer is durable together with what it answers for.
        """

    @abc.abstractmethod
    async def mark_sending(self, keys: Sequence[str]) -> None:
        """Durable before it returns: the requests for these keys may leave after this."""

    @abc.abstractmethod
    async def record(self, transitions: Sequence[Transition]) -> None:
        """Outcomes; durable before it returns (group-committed with whatever else is queued)."""

    @abc.abstractmethod
    async def recover(self) -> int:
        """At start-up: `sending` left by a dead process becomes `unknown`. Returns how many."""

    @abc.abstractmethod
    async def pending(self, sinks: Sequence[str], limit: int, claimed_before: float) -> list[Entry]:
        """Messages to retry, oldest first: those held with a reason, and those claimed before
        `claimed_before` (by an earlier process). A fresh claim of this process belongs to the
        path that claimed it: taking it here too is how one message would be sent twice."""

    @abc.abstractmethod
    async def entries(self, keys: Sequence[str]) -> list[Entry]:
        """The entries that exist among `keys` (any order)."""

    @abc.abstractmethod
    async def counts(self) -> list[Counts]: ...

    @abc.abstractmethod
    async def recent(self, states: Sequence[State], limit: int) -> list[Entry]: ...

    @abc.abstractmethod
    async def get_note(self, scope: str, key: str) -> str | None: ...

    @abc.abstractmethod
    async def set_note(self, scope: str, key: str, value: str) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raises when the ledger cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None: ...

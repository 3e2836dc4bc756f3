"""What the engine needs from durable state, small enough for SQLite and PostgreSQL alike.

States of one send (one idempotency key):

    pending --> sending --> sent | failed | unknown
       ^           |
       +-- held ---+   (sink paused / provider down: back to pending, retried by itself)

`sending` is durable before the request leaves. Several processes may share one ledger (SPEC
"Several processes and instances"), so every open message has an owner: the instance that claimed
or took it. Each process registers as an instance and renews a lease; only the owner, with its
lease live, may turn a message into `sending` (one conditional write: the fence). A message whose
owner's lease expired is released: `sending` becomes `unknown` (never resent by itself), `pending`
becomes unowned and any instance's sweeper takes it. Holds are the same idea for whole jobs: a CSV
file being taken, a sheet's poll, the held-message sweeper.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connector.policy import Gate


class State(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"  # deliberately not sent: a send policy said so (opted out, cap, expired)


OPEN_STATES = (State.PENDING, State.SENDING)


@dataclass(slots=True, eq=False)
class Claim:
    """A message the engine wants to send, or a record that failed before it became one. Built by
    the engine, judged in place by the policy step (`PolicyStep.admit`), then handed to the ledger
    and never changed again. Not frozen: building one frozen cost 3 us, twice a message."""

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
    skipped: str | None = None  # set: recorded straight as skipped, with this reason (a send policy)
    due_at: float | None = None  # when it is due (a scheduled send), kept for the checks before it leaves
    not_before: float | None = None  # set: it waits until then (quiet hours, a schedule), owned by no one
    waiting: str = ""  # why it waits: the status reads `pending: <this>`
    # set: what the ledger checks (caps, budgets, its opt-out list) as this message is let go in the
    # claim's own transaction; a new claim that passes is sent without a second trip to the ledger
    gate: Gate | None = None


class ClaimResult(enum.Enum):
    NEW = "new"  # recorded as pending now, owned by this instance: send it
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
    owner: str | None = None  # the instance moving it forward; None once settled or released
    due_at: float | None = None  # when it became due (a scheduled send), for the checks before it leaves
    not_before: float | None = None  # a waiting message is not taken before this


@dataclass(frozen=True, slots=True)
class Transition:
    key: str
    state: State
    detail: str
    # Of the claim the attempt was made for: an answer that comes late never settles a newer
    # claim of the same key (a `resend` since), which would then not be sent, or be sent twice.
    created_at: float | None = None
    not_before: float | None = None  # PENDING only: it waits until then (quiet hours, a budget)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message was not let go right before its request: skipped, or waiting until `until`."""

    state: State  # SKIPPED, or PENDING
    reason: str
    until: float | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    source: str
    rule: str
    state: State
    count: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """A note written in the claims' own transaction, once: a webhook delivery and its answer.

    When a note under (scope, key) exists already, nothing is claimed and its value is answered:
    the same delivery taken by two instances at once is still one delivery with one answer.
    """

    scope: str
    key: str
    answer: Callable[[list[tuple[ClaimResult, Entry]]], str]  # the note's value, from the claims


@dataclass(frozen=True, slots=True)
class Claimed:
    answers: list[tuple[ClaimResult, Entry]]
    replayed: str | None = None  # the delivery was recorded before: its first answer, nothing claimed
    note: str | None = None  # the note written with these claims
    admitted: frozenset[str] = frozenset()  # keys let go by their gate in the claim (Claim.gate)


@dataclass(frozen=True, slots=True)
class Instance:
    """A process sharing the ledger, as `connector status` lists it."""

    id: str
    host: str
    pid: int
    started_at: float
    renewed_at: float
    expires_at: float
    holds: tuple[str, ...] = ()
    sending: int = 0  # messages it has on the wire now
    owned: int = 0  # pending messages it has claimed and not sent yet


class Ledger(abc.ABC):
    """Every method is one transaction (group-committed with whatever else is queued)."""

    instance_id: str  # this process's identity in the ledger; it changes only if the lease is lost
    lease: float
    held: dict[str, int]  # the holds this process has taken: name -> epoch

    @property
    def writable(self) -> bool:
        """False while writes wait out an outage: nothing can be sent meanwhile."""
        return True

    @property
    @abc.abstractmethod
    def lease_left(self) -> float:
        """Seconds of lease this process can count on (0 before it joined, or once it lapsed)."""

    @abc.abstractmethod
    async def claim(self, claims: Sequence[Claim], delivery: Delivery | None = None) -> Claimed:
        """Record intent for each claim in one transaction; answer what to do with each.

        NEW claims, and RESUME claims of pending messages nobody live owns, are owned by this
        instance when this returns. With `delivery`, see `Delivery`.
        """

    @abc.abstractmethod
    async def mark_sending(self, keys: Sequence[str]) -> None:
        """Durable before it returns: the requests for these keys may leave after this.

        Raises Fenced, marking none of them, unless this instance owns every key and its lease is
        live at the ledger's clock.
        """

    @abc.abstractmethod
    async def record(self, transitions: Sequence[Transition]) -> float:
        """Outcomes of messages this process owns (or owned under an earlier lease, or that were
        recorded `unknown` while it had them on the wire); releases them. Durable on return.
        Answers the ledger's time of the record: the time their statuses show."""

    @abc.abstractmethod
    async def take_pending(self, sinks: Sequence[str], limit: int) -> list[Entry]:
        """Unowned pending messages of these sinks, oldest first, now owned by this instance."""

    @abc.abstractmethod
    async def next_wake(self) -> float | None:
        """When the earliest waiting message may go; None when none waits."""

    @abc.abstractmethod
    async def idle_pending(self, sinks: Sequence[str], limit: int, idle: float) -> list[Entry]:
        """This instance's own pending messages, untouched for `idle` seconds: claimed, and then no
        path of the process went on with them (a claim that committed after its caller gave up)."""

    @abc.abstractmethod
    async def release(self, keys: Sequence[str]) -> None:
        """Pending messages of this instance it will not send after all: any sweeper may take them."""

    @abc.abstractmethod
    async def recover(self) -> int:
        """Release what instances whose lease expired held; answers how many `sending` became
        `unknown`. Cheap when nothing expired: every sweep runs it."""

    @abc.abstractmethod
    async def renew(self) -> bool:
        """Extend this instance's lease; False when it had lapsed (everything it held is lost and a
        new identity is registered: nothing held under the old one is sent by this process)."""

    @abc.abstractmethod
    async def hold(self, name: str) -> int | None:
        """Take or keep the hold `name` (a file, a poll, a singleton job): its epoch, which grows at
        every change of holder; None while another live instance holds it."""

    @abc.abstractmethod
    async def holding(self, name: str, epoch: int) -> bool:
        """Whether this instance still has `name` at `epoch` (checked before acting on it)."""

    @abc.abstractmethod
    async def let_go(self, name: str) -> None: ...

    @abc.abstractmethod
    async def instances(self) -> list[Instance]: ...

    @abc.abstractmethod
    async def admit(self, gates: Sequence[Gate]) -> dict[str, Refusal]:
        """Let these messages go, in one transaction with their checks (the ledger's opt-out
        list, caps, budgets: connector/ledger/gates.py); answers the refused ones by key."""

    @abc.abstractmethod
    async def spent(self, day: str) -> dict[str, int]:
        """What each sink has spent of its budget on `day`."""

    @abc.abstractmethod
    async def optout_add(self, numbers: Sequence[str], note: str = "") -> int:
        """Numbers (E.164) never to send to; answers how many were new."""

    @abc.abstractmethod
    async def optout_remove(self, numbers: Sequence[str]) -> int: ...

    @abc.abstractmethod
    async def optouts(self) -> list[tuple[str, float, str]]:
        """(number, when added, note) for every number on the ledger's opt-out list."""

    @abc.abstractmethod
    async def entries(self, keys: Sequence[str]) -> list[Entry]:
        """The entries that exist among `keys` (any order)."""

    @abc.abstractmethod
    async def counts(self) -> list[Counts]: ...

    async def counts_aside(self) -> list[Counts]:
        """`counts`, read where it holds up no write if the ledger can (it reads every row)."""
        return await self.counts()

    @abc.abstractmethod
    async def recent(self, states: Sequence[State], limit: int) -> list[Entry]: ...

    @abc.abstractmethod
    async def get_note(self, scope: str, key: str) -> str | None: ...

    @abc.abstractmethod
    async def set_note(self, scope: str, key: str, value: str) -> None: ...

    @abc.abstractmethod
    async def notes_in(self, scope: str) -> dict[str, str]:
        """Every note of a scope (small scopes only: a file's late statuses)."""

    @abc.abstractmethod
    async def drop_notes(self, scope: str, keys: Sequence[str]) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raises when the ledger cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release everything this instance holds (a graceful stop), then disconnect."""

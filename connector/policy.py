"""The send policy step's words (SPEC "Send policies"), shared by the engine and the policies.

Between rendering and sending, every message goes through the registered policies (`policies/`).
Each answers one Verdict: send now, wait until a time (with the reason a person reads in the
status cell), skip (deliberately not sent), or fail (cannot be sent as it stands). The verdicts
combine: a failure beats a skip, a skip beats a wait, and waits add up (a scheduled time, then the
quiet hours after it: the later wins).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo


class Act(enum.IntEnum):
    """Ordered: the strongest verdict wins when policies disagree."""

    SEND = 0
    WAIT = 1
    SKIP = 2
    FAIL = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    act: Act
    until: float | None = None  # WAIT: not before this (epoch seconds)
    reason: str = ""

    def __str__(self) -> str:
        if self.act is Act.SEND:
            return "would send now"
        return f"would {self.act.name.lower()}: {self.reason}"


SEND = Verdict(Act.SEND)


def wait(until: float, reason: str) -> Verdict:
    return Verdict(Act.WAIT, until, reason)


def skip(reason: str) -> Verdict:
    return Verdict(Act.SKIP, None, reason)


def fail(reason: str) -> Verdict:
    return Verdict(Act.FAIL, None, reason)


@dataclass(slots=True, eq=False)
class Candidate:
    """A message as the policies see it. `row` is the record while it is being claimed; a message
    checked again right before it leaves has only what the ledger kept (`due_at`). Policies read
    it and never change it; it is not frozen only because building a frozen one cost 2 us, twice
    a message."""

    rule: str
    sink: str
    to: str  # E.164
    text: str
    row: Mapping[str, Any] | None = None
    due_at: float | None = None  # when it became due (a scheduled send), as kept by the ledger
    meta: Mapping[str, str] = field(default_factory=dict)


class Policy(Protocol):
    """One send policy, for one rule (or for every rule). `check` answers for the message as it
    would stand at `at` (now, or the time an earlier wait ends)."""

    def check(self, candidate: Candidate, at: float) -> Verdict: ...


@runtime_checkable
class Scheduling(Protocol):
    """A policy that says when a message is due (else: when it is claimed)."""

    def due(self, candidate: Candidate, now: float) -> float:
        """ValueError, saying why, when the record's time cannot be read (the record fails)."""


class OptOutList(Protocol):
    """Numbers never to send to (E.164): the `suppress` files and the ledger's own list."""

    def __contains__(self, number: object) -> bool: ...


@dataclass(frozen=True, slots=True)
class Budget:
    """A sink's `daily_budget`: `limit` units a day, a message costing `cost(text)` of them."""

    limit: int
    cost: Callable[[str], int]


@dataclass(frozen=True, slots=True)
class Cap:
    """`max_per_recipient: N/PERIOD`."""

    count: int
    period: float  # seconds
    written: str  # as in the config, for the reason: "3 per 24h"


@dataclass(slots=True)
class Gate:
    """What the ledger checks for one message in the same transaction as every other's, right
    before the requests leave, so that racing messages (and instances) can never pass together.
    Built once a message and filled in by each gating policy: not frozen, because rebuilding a
    frozen one per policy cost more than the rest of the step."""

    key: str
    recipient: str
    cap: Cap | None = None
    sink: str = ""
    cost: int = 0  # with `limit`: reserved from the sink's budget for `day`
    limit: int | None = None
    day: str = ""  # the budget's day, in the top-level zone
    resumes: float = 0.0  # when the next day starts (a message over budget waits until then)


@runtime_checkable
class Gating(Protocol):
    """A policy whose check needs the ledger: it says what to check, the ledger checks it. Its own
    `check` says send (the step does not ask it)."""

    def gate(self, gate: Gate, candidate: Candidate, now: float) -> None:
        """Fill in what the ledger must check for this policy (the gate's own fields)."""


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What the policies are lent: the zone times are written in (top-level `timezone`), the
    opt-out list."""

    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    optouts: OptOutList = frozenset()
    budgets: Mapping[str, Budget] = field(default_factory=dict)  # by sink


class PolicyFactory(Protocol):
    """A registered policy class: the policy for a rule, or None when the rule does not use it."""

    def for_rule(self, rule: Any, context: PolicyContext) -> Policy | None: ...


_ROUNDS = 4  # a wait may end inside another's quiet time: look again at the new time, a few times


def decide(
    policies: Sequence[Policy],
    candidate: Candidate,
    now: float,
    schedulers: Sequence[Scheduling] | None = None,
) -> tuple[Verdict, float]:
    """The combined verdict for a message, and when it is due (filled in on the candidate, which
    each caller builds for this). A candidate with `due_at` (kept by the ledger) is checked again
    as it is: its due time is not worked out a second time.
    `schedulers`: those of `policies` that schedule, when the caller knows them already (asking
    a runtime-checkable Protocol for each message cost more than the policies themselves)."""
    verdict, judged = judge(policies, candidate, now, schedulers)
    return verdict, due_of(judged, now)


def due_of(candidate: Candidate, now: float) -> float:
    """When a judged candidate is due: `now`, unless a schedule worked out another time."""
    return now if candidate.due_at is None else candidate.due_at


def judge(
    policies: Sequence[Policy],
    candidate: Candidate,
    now: float,
    schedulers: Sequence[Scheduling] | None = None,
) -> tuple[Verdict, Candidate]:
    """As `decide`, answering the candidate as judged: its due time worked out and filled in (the
    caller's candidate is built for this), for the caller to go on with (its gate)."""
    due = candidate.due_at
    if due is None:
        due = now
        if schedulers is None:
            schedulers = [p for p in policies if isinstance(p, Scheduling)]
        for scheduler in schedulers:
            try:
                due = scheduler.due(candidate, now)
            except ValueError as exc:
                return fail(str(exc)), candidate
        candidate.due_at = due  # the caller's own candidate, built for this judgement
    for policy in policies:  # nearly every message: each says send, nothing to combine
        if policy.check(candidate, now) is not SEND:
            break
    else:
        return SEND, candidate
    verdicts = [policy.check(candidate, now) for policy in policies]
    at, reason = now, ""
    for round_ in range(_ROUNDS):
        if round_:
            verdicts = [policy.check(candidate, at) for policy in policies]
        strongest = max(verdicts, key=lambda v: v.act, default=SEND)
        if strongest.act >= Act.SKIP and at == now:
            return strongest, candidate
        # Later times only move the wait: a skip is judged when the message would really go
        # (checked again then), never foretold (`expired` before it expired reads as a lie).
        waits = [v for v in verdicts if v.act is Act.WAIT and v.until is not None and v.until > at]
        if not waits:
            break
        latest = max(waits, key=lambda v: v.until or 0.0)
        at, reason = latest.until or at, latest.reason
    return (wait(at, reason) if at > now else SEND), candidate


def utc(epoch: float) -> str:
    """A time as statuses write it: `2026-12-07T09:00:00Z`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

"""Messages on their way, as the engine hands them around: the plain-value rows a send queue holds,
the entries as the policies or the providers left them, and what the ledger records of an outcome."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from connector.events import Message, Outcome, OutcomeKind
from connector.ledger import Entry, State, Transition

STATE_OF = {
    OutcomeKind.SENT: State.SENT,
    OutcomeKind.FAILED: State.FAILED,
    OutcomeKind.HELD: State.PENDING,
    OutcomeKind.UNKNOWN: State.UNKNOWN,
    OutcomeKind.LOST: State.PENDING,  # never recorded: the status only, until its new owner sends it
}
TAKEN_OVER = "another instance took it over; it sends it"

Row = tuple[str, str, str, str, str, str, str, str, str, int, float, float, float | None]
"""An Entry as a tuple of plain values, while it waits in a send queue: the garbage collector stops
tracking such tuples, so thousands of queued messages add nothing to every full collection."""


def as_row(e: Entry) -> Row:
    return (
        e.key,
        e.source,
        e.rule,
        e.sink,
        e.origin,
        e.recipient,
        e.text,
        e.state.value,
        e.detail,
        e.attempts,
        e.created_at,
        e.updated_at,
        e.due_at,
    )


def from_row(r: Row) -> Entry:
    return Entry(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], State(r[7]), r[8], r[9], r[10], r[11], due_at=r[12]
    )


def paired(entries: Sequence[Entry], transitions: Sequence[Transition]) -> list[tuple[Entry, Transition]]:
    by_key = {e.key: e for e in entries}
    return [(by_key[t.key], t) for t in transitions]


def held(entry: Entry, t: Transition, at: float) -> Entry:
    """An entry as the policies left it before its request: waiting, skipped or failed."""
    return dataclasses.replace(
        entry, state=t.state, detail=t.detail, updated_at=at, owner=None, not_before=t.not_before
    )


def transitions_of(
    messages: Sequence[Message], outcomes: Sequence[Outcome], claimed: Mapping[str, float]
) -> list[Transition]:
    """What to record, each for the claim it was sent for (`claimed`: key -> created_at); nothing
    for a message another instance has taken over (it records it)."""
    return [
        Transition(m.id, STATE_OF[o.kind], o.detail, claimed.get(m.id))
        for m, o in zip(messages, outcomes, strict=True)
        if o.kind is not OutcomeKind.LOST
    ]


def settled(entry: Entry, outcome: Outcome, now: float) -> Entry:
    return Entry(
        key=entry.key,
        source=entry.source,
        rule=entry.rule,
        sink=entry.sink,
        origin=entry.origin,
        recipient=entry.recipient,
        text=entry.text,
        state=STATE_OF[outcome.kind],
        detail=TAKEN_OVER if outcome.kind is OutcomeKind.LOST else outcome.detail,
        attempts=entry.attempts + 1,
        created_at=entry.created_at,
        updated_at=now,
    )

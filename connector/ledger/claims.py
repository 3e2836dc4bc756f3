"""Deciding a batch of claims against what the ledger already holds, as a program (steps.py).

Claims are decided key by key, in the order they came: two records of one batch that claim the
same key are told apart exactly as if they had come in two batches. Each key ends in at most one
write, made on the condition that its row is still as it was read. With SQLite nothing can change
in between (the writer holds the lock); with PostgreSQL another instance may have claimed the
same key meanwhile: its write then changes nothing, and that key is read and decided again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from connector.errors import LedgerUnavailable
from connector.ledger.base import Claim, Claimed, ClaimResult, Delivery, Entry, Refusal, State
from connector.ledger.gates import Letting, Tally, let_go, spend, take_back, tally
from connector.ledger.steps import Insert, Now, Program, Rows, Run, rows_in

COLUMNS = (
    "key, source, rule, sink, origin, recipient, text, state, detail, attempts, created_at, updated_at, "
    "owner, due_at, not_before"
)
ROUNDS = 8  # re-reads of keys another instance claimed in the same moment, before giving up

_Known = dict[str, tuple[Entry, float | None]]  # key -> (entry, expires_at)
_COLUMNS = (*COLUMNS.split(", "), "expires_at", "admitted_at", "charged", "charged_day", "counted_at")
_TYPES = (
    ("text",) * 9
    + ("bigint", "double precision", "double precision", "text")
    + ("double precision",) * 4
    + ("bigint", "text", "double precision")
)
_NOT_LET = (None, None, None, None)  # not let go (yet): no admission, no charge, not counted
_Let = Letting | tuple[None, None, None, None]


def entry_of(row: Sequence[Any]) -> Entry:
    return Entry(
        key=row[0],
        source=row[1],
        rule=row[2],
        sink=row[3],
        origin=row[4],
        recipient=row[5],
        text=row[6],
        state=State(row[7]),
        detail=row[8],
        attempts=int(row[9]),
        created_at=row[10],
        updated_at=row[11],
        owner=row[12],
        due_at=row[13],
        not_before=row[14],
    )


def live_instances(now: float) -> Program[set[str]]:
    rows = yield Rows("SELECT id FROM instances WHERE expires_at > ?", [now])
    return {row[0] for row in rows}


def read_known(keys: Sequence[str]) -> Program[_Known]:
    rows = yield from rows_in(f"SELECT {COLUMNS}, expires_at FROM sends WHERE key IN ({{in}})", keys)
    return {row[0]: (entry_of(row), row[15]) for row in rows}


def claim(claims: Sequence[Claim], me: str, delivery: Delivery | None) -> Program[Claimed]:
    now = yield Now()
    if delivery is not None:
        placed = yield Run(
            "INSERT INTO notes (scope, key, value) VALUES (?, ?, '') ON CONFLICT (scope, key) DO NOTHING",
            [delivery.scope, delivery.key],
        )
        if not placed:
            first = yield Rows(
                "SELECT value FROM notes WHERE scope = ? AND key = ?", [delivery.scope, delivery.key]
            )
            resumed = yield from _resume(claims, me, now)
            return Claimed(resumed, replayed=str(first[0][0]) if first else "")
    live: set[str] | None = None  # read only when a row another instance owns is met
    groups: dict[str, list[int]] = {}
    for index, c in enumerate(claims):
        groups.setdefault(c.key, []).append(index)
    answers: list[tuple[ClaimResult, Entry] | None] = [None] * len(claims)
    todo = list(groups)
    admitted: dict[str, Letting] = {}
    t: Tally | None = None
    for round_ in range(ROUNDS):
        known = yield from read_known(todo)
        if live is None and any(e.owner not in (None, me) for e, _ in known.values()):
            live = yield from live_instances(now)
        decided: list[_Row] = []
        for key in todo:
            row = _decide(claims, groups[key], known.get(key), me, live or set(), now, answers)
            if row is not None:
                decided.append(row)
        if round_ == 0:  # later rounds' claims are let go the usual way, right before their requests
            t = yield from _let_go(decided, me, now, admitted, answers, groups)
        inserts = [row for row in decided if row.read is None]
        lost = yield from _insert(inserts, admitted)
        for row in decided:
            if row.read is None:
                continue
            let = None if row.by is None else admitted.get(row.entry.key, _NOT_LET)
            if not (yield from _replace(row.read, row.entry, row.expires_at, let)):
                lost.append(row.entry.key)
        if t is not None and lost:  # decided again next round, from what the other instance wrote
            by_key = {row.entry.key: row for row in decided}
            for key in lost:
                letting, by = admitted.pop(key, None), by_key[key].by
                if letting is not None and by is not None and by.gate is not None:
                    take_back(t, by.gate, letting)
        todo = lost
        if not todo:
            break
    else:
        raise LedgerUnavailable(f"{len(todo)} claim(s) kept racing other instances; try again")
    if t is not None:
        yield from spend(t)
    done = [a for a in answers if a is not None]
    assert len(done) == len(claims), "every claim is decided"
    note = None
    if delivery is not None:
        note = delivery.answer(done)
        yield Run(
            "UPDATE notes SET value = ? WHERE scope = ? AND key = ?", [note, delivery.scope, delivery.key]
        )
    return Claimed(done, note=note, admitted=frozenset(admitted))


@dataclass(slots=True)
class _Row:
    """A row to write: a new claim's (`by`), or a claim taken up again."""

    entry: Entry
    expires_at: float | None
    read: Entry | None  # as it was read (None: a new row), the condition of the write
    by: Claim | None  # the claim made now that it records, if any


def _decide(
    claims: Sequence[Claim],
    indexes: list[int],
    found: tuple[Entry, float | None] | None,
    me: str,
    live: set[str],
    now: float,
    answers: list[tuple[ClaimResult, Entry] | None],
) -> _Row | None:
    """Answer every claim of one key; the row to write, or None to leave it."""
    current, expires_at = found if found is not None else (None, None)
    dirty = False
    by: Claim | None = None
    for index in indexes:
        c = claims[index]
        if current is not None:
            expired = expires_at is not None and expires_at < now
            same_record = current.origin == c.origin
            retry_failed = current.state in (State.FAILED, State.SKIPPED) and not same_record
            # `resend` never interrupts a send in flight: that is how two SMS would go out.
            forced = c.force and current.state is not State.SENDING
            if not ((expired and current.state is not State.SENDING) or retry_failed or forced):
                if same_record and _left_behind(current, me, live, now):
                    current = dataclasses.replace(current, owner=me, updated_at=now, not_before=None)
                    dirty = True
                result = ClaimResult.RESUME if same_record else ClaimResult.DUPLICATE
                answers[index] = (result, current)
                continue
        state, detail = _first_state(c)
        waits = state is State.PENDING and c.not_before is not None
        owner = me if state is State.PENDING and not waits else None  # a waiting one: the sweeper's, when due
        current = Entry(
            c.key, c.source, c.rule, c.sink, c.origin, c.recipient, c.text, state, detail, 0, now, now, owner,
            c.due_at, c.not_before if waits else None,
        )  # fmt: skip
        expires_at = c.expires_at
        dirty, by = True, c
        answers[index] = (ClaimResult.NEW, current)
    if not dirty or current is None:
        return None
    return _Row(current, expires_at, None if found is None else found[0], by)


def _let_go(
    rows: list[_Row],
    me: str,
    now: float,
    admitted: dict[str, Letting],
    answers: list[tuple[ClaimResult, Entry] | None],
    groups: dict[str, list[int]],
) -> Program[Tally | None]:
    """New claims to be sent at once whose rule has gates: let go here, in the claim's transaction
    (counted against their number, charged to their budget), or written as what their refusal
    makes of them (skipped; waiting for the next day's budget)."""
    pending = State.PENDING  # read off the enum class once: ~50 ns a time on Python 3.11
    gated = [
        (row, row.by.gate)
        for row in rows
        if row.by is not None and row.by.gate is not None and row.entry.owner == me
        and row.entry.state is pending
    ]  # fmt: skip
    if not gated:
        return None
    t = yield from tally([gate for _, gate in gated], now)
    for row, gate in gated:
        verdict = let_go(t, gate)
        if not isinstance(verdict, Refusal):
            admitted[row.entry.key] = verdict
            continue
        e = row.entry
        row.entry = Entry(
            e.key, e.source, e.rule, e.sink, e.origin, e.recipient, e.text, verdict.state, verdict.reason,
            e.attempts, e.created_at, e.updated_at, None, e.due_at, verdict.until,
        )  # fmt: skip
        for index in groups[e.key]:
            if (found := answers[index]) is not None and found[1] is e:
                answers[index] = (found[0], row.entry)
    return t


def _first_state(c: Claim) -> tuple[State, str]:
    if c.failed is not None:
        return State.FAILED, c.failed
    if c.skipped is not None:
        return State.SKIPPED, c.skipped
    return State.PENDING, c.waiting if c.not_before is not None else ""


def _left_behind(entry: Entry, me: str, live: set[str], now: float) -> bool:
    """Pending and due, and no live instance (other than this one) owns it: whoever asks may take it."""
    return (
        entry.state is State.PENDING
        and entry.owner != me
        and (entry.owner is None or entry.owner not in live)
        and (entry.not_before is None or entry.not_before <= now)
    )


def _insert(rows: list[_Row], admitted: dict[str, Letting]) -> Program[list[str]]:
    """New rows; answers the keys another instance inserted first (to be decided again)."""
    if not rows:
        return []
    values = []
    for row in rows:
        e = row.entry
        let = admitted.get(e.key, _NOT_LET)
        values.append(
            (*_texts(e), e.attempts, e.created_at, e.updated_at, e.owner, e.due_at, e.not_before,
             row.expires_at, *let)
        )  # fmt: skip
    taken = set((yield Insert("sends", _COLUMNS, _TYPES, values, "key")))
    return [row.entry.key for row in rows if row.entry.key not in taken]


def _texts(e: Entry) -> tuple[str, ...]:
    return (e.key, e.source, e.rule, e.sink, e.origin, e.recipient, e.text, e.state.value, e.detail)


def _replace(read: Entry, e: Entry, expires_at: float | None, let: _Let | None = None) -> Program[bool]:
    """Overwrite a row on the condition that it is still as read; False when it changed meanwhile.
    `let`: a new claim over an old row is a new message, let go (these values) or not yet (Nones)
    afresh: an earlier message's admission and charge are neither its own nor to be refunded for
    it. Without: a row taken up again keeps what it was let go with."""
    changed = yield Run(
        "UPDATE sends SET source = ?, rule = ?, sink = ?, origin = ?, recipient = ?, text = ?, state = ?, "
        "detail = ?, attempts = ?, created_at = ?, updated_at = ?, expires_at = ?, owner = ?, due_at = ?, "
        "not_before = ?"
        + ("" if let is None else ", admitted_at = ?, charged = ?, charged_day = ?, counted_at = ?")
        + " WHERE key = ? AND state = ? AND updated_at = ? "
        "AND (owner = ? OR (owner IS NULL AND CAST(? AS TEXT) IS NULL))",
        [
            *_texts(e)[1:],
            e.attempts,
            e.created_at,
            e.updated_at,
            expires_at,
            e.owner,
            e.due_at,
            e.not_before,
            *(let or ()),
            e.key,
            read.state.value,
            read.updated_at,
            read.owner,
            read.owner,
        ],
    )
    return bool(changed)


def _resume(claims: Sequence[Claim], me: str, now: float) -> Program[list[tuple[ClaimResult, Entry]]]:
    """A repeated delivery: nothing new is claimed, but what the first one left pending and nobody
    live owns is taken (its first taker may have died, or lost the answer to its commit)."""
    live = yield from live_instances(now)
    origins = {c.key: c.origin for c in claims}
    known = yield from read_known(list(origins))
    resumed: list[tuple[ClaimResult, Entry]] = []
    for key, (entry, expires_at) in known.items():
        if entry.origin != origins[key]:
            continue
        current = entry
        if _left_behind(entry, me, live, now):
            taken = dataclasses.replace(entry, owner=me, updated_at=now, not_before=None)
            if (yield from _replace(entry, taken, expires_at)):
                current = taken
        resumed.append((ClaimResult.RESUME, current))
    return resumed

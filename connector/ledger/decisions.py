"""A person's decision on a message (`connector resolve`), and the history a message leaves.

A decision is taken on what the ledger holds when it is written, not on what the person saw: a
message some instance has on the wire (`sending`) or has claimed to send is never decided, and one
that is not `unknown` is decided only when asked with `force`. `resend` claims the message again
for this instance with a new claim time, so an answer still due to the earlier attempt can never
settle the new one (records match their claim's time), and it then goes the normal way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from connector.ledger.base import Entry, State
from connector.ledger.claims import COLUMNS, entry_of
from connector.ledger.keys import key_range
from connector.ledger.schema import counted_at
from connector.ledger.steps import Now, Program, Rows, Run, RunMany, marks, rows_in


class Verdict(StrEnum):
    SENT = "sent"  # the provider did take it: a person checked the phone or the provider's portal
    FAILED = "failed"  # it did not go and is not to be sent
    RESEND = "resend"  # it did not go: send it once more


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    note: str
    actor: str  # who decided: the OS user
    force: bool = False  # decide a message that is not `unknown`


@dataclass(frozen=True, slots=True)
class Resolution:
    key: str
    entry: Entry | None  # as it stands after the decision (None: no such message)
    refused: str = ""  # why nothing was decided; "" when it was


@dataclass(frozen=True, slots=True)
class Step:
    """One state a message passed through."""

    at: float
    state: str
    detail: str
    actor: str = ""


def hand_detail(verdict: Verdict, note: str, actor: str) -> str:
    """The reason a decided message shows: who decided, and their note."""
    said = f"resolved by hand by {actor}" if actor else "resolved by hand"
    if verdict is Verdict.SENT:
        return f"({said}: {note})" if note else f"({said})"
    if verdict is Verdict.FAILED:
        return f"{said}: {note}" if note else said
    return f"resend asked by {actor or 'hand'}" + (f": {note}" if note else "")


def resolve(keys: Sequence[str], decision: Decision, me: str) -> Program[list[Resolution]]:
    now = yield Now()
    rows = yield from rows_in(f"SELECT {COLUMNS} FROM sends WHERE key IN ({{in}}) {{for_update}}", keys)
    found = {e.key: e for e in map(entry_of, rows)}
    answers: list[Resolution] = []
    decided: list[Entry] = []
    for key in dict.fromkeys(keys):
        entry = found.get(key)
        refused = _refusal(entry, decision)
        if entry is None or refused:
            answers.append(Resolution(key, entry, refused))
            continue
        decided.append(entry)
    if not decided:
        return answers
    # What the message was before the decision, unless its history has it already.
    yield RunMany(
        "INSERT INTO history (key, at, state, detail) SELECT ?, ?, ?, ? WHERE NOT EXISTS "
        "(SELECT 1 FROM history WHERE key = ? AND at = ? AND state = ?)",
        [(e.key, e.updated_at, e.state.value, e.detail, e.key, e.updated_at, e.state.value) for e in decided],
    )
    detail = hand_detail(decision.verdict, decision.note, decision.actor)
    again = decision.verdict is Verdict.RESEND
    state = State.PENDING if again else State(decision.verdict.value)
    counted = counted_at(state, now)  # when it counts against a cap
    for entry in decided:
        if again:
            # Claimed again by this process, as new: its earlier attempt's answers no longer apply,
            # and the policies and the budget look at it afresh before it leaves.
            changed = yield Run(
                "UPDATE sends SET state = 'pending', detail = ?, owner = ?, created_at = ?, updated_at = ?, "
                "not_before = NULL, due_at = NULL, admitted_at = NULL, charged = NULL, charged_day = NULL, "
                "counted_at = NULL "
                "WHERE key = ? AND state = ? AND updated_at = ?",
                [detail, me, now, now, entry.key, entry.state.value, entry.updated_at],
            )
        else:
            changed = yield Run(
                "UPDATE sends SET state = ?, detail = ?, updated_at = ?, counted_at = ?, owner = NULL, "
                "not_before = NULL WHERE key = ? AND state = ? AND updated_at = ?",
                [state.value, detail, now, counted, entry.key, entry.state.value, entry.updated_at],
            )
        if not changed:  # changed since it was read (another instance settled it): read again
            answers.append(Resolution(entry.key, entry, "it changed meanwhile: look at it again"))
            continue
        yield Run(
            "INSERT INTO history (key, at, state, detail, actor) VALUES (?, ?, ?, ?, ?)",
            [entry.key, now, decision.verdict.value, detail, decision.actor],
        )
        after = dataclasses.replace(
            entry,
            state=state,
            detail=detail,
            updated_at=now,
            owner=me if again else None,
            created_at=now if again else entry.created_at,
            not_before=None,
            due_at=None if again else entry.due_at,
        )
        answers.append(Resolution(entry.key, after))
    return answers


def _refusal(entry: Entry | None, decision: Decision) -> str:
    if entry is None:
        return "no message with this id"
    if entry.state is State.SENDING:
        return "its request is with the provider right now: wait for the answer"
    if entry.state is State.PENDING and entry.owner is not None:
        return "an instance has claimed it to send: wait for the outcome"
    if entry.state is not State.UNKNOWN and not decision.force:
        return f"it is {entry.state.value}, not unknown: add --force to decide it anyway"
    return ""


def unknown_keys(sources: Sequence[str], rules: Sequence[str], limit: int) -> Program[list[str]]:
    """The `unknown` messages, oldest first, of these sources and rules (empty: all)."""
    where = ["state = 'unknown'"]
    params: list[object] = []
    for column, names in (("source", sources), ("rule", rules)):
        if names:
            where.append(f"{column} IN ({marks(len(names))})")
            params += names
    rows = yield Rows(
        f"SELECT key FROM sends WHERE {' AND '.join(where)} ORDER BY updated_at LIMIT ?", [*params, limit]
    )
    return [str(r[0]) for r in rows]


def full_keys(prefixes: Sequence[str]) -> Program[dict[str, list[str]]]:
    """The keys each prefix names (at most two: one is an answer, two say it is ambiguous). The
    status page shows ids cut short; a person pastes what they see."""
    found: dict[str, list[str]] = {}
    for prefix in prefixes:
        low, high = key_range(prefix.lower())
        bound, params = ("key >= ? AND key < ?", [low, high]) if high is not None else ("key >= ?", [low])
        rows = yield Rows(f"SELECT key FROM sends WHERE {bound} ORDER BY key LIMIT 2", params)
        found[prefix] = [str(r[0]) for r in rows]
    return found


def history(key: str) -> Program[list[Step]]:
    """Every state the message passed through, oldest first: its claim, what the history table
    kept (waits, unknowns, decisions), and where it stands now."""
    rows = yield Rows(f"SELECT {COLUMNS} FROM sends WHERE key = ?", [key])
    if not rows:
        return []
    entry = entry_of(rows[0])
    kept = yield Rows("SELECT at, state, detail, actor FROM history WHERE key = ? ORDER BY at", [key])
    steps = [Step(float(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in kept]
    first = Step(entry.created_at, "claimed", f"rule {entry.rule}, from {entry.source} {entry.origin}")
    now = Step(entry.updated_at, entry.state.value, entry.detail)
    if not steps or (steps[-1].at, steps[-1].state, steps[-1].detail) != (now.at, now.state, now.detail):
        steps.append(now)
    return sorted([first, *steps], key=lambda s: s.at)

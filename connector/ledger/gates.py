"""Letting messages go, right before their requests: the checks only the ledger can make, for a
whole batch in one transaction (SPEC "Send policies"): the ledger's opt-out list, frequency caps
and daily budgets.

A message let go is marked `admitted`: it counts against its number's cap, and its cost is
reserved from its sink's budget for the day. Caps count what was sent or is unknown (it may have
been taken) over the cap's period, plus what is admitted and not settled: a row's `counted_at`
says which (schema.py). The numbers of a batch are locked first (PostgreSQL; SQLite's writer is
alone anyway), so two messages to one number racing on two instances cannot both pass. A message
that ends without being taken (refused, held, skipped) gives its cost back (`refund`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from connector.ledger.base import Refusal, State, Transition
from connector.ledger.schema import ON_ITS_WAY
from connector.ledger.steps import Lock, Now, Program, Rows, Run, rows_in, run_in
from connector.policy import Gate, utc

REFUNDED = (State.FAILED, State.PENDING, State.SKIPPED)


@dataclass(slots=True)
class Tally:
    """What the checks of one transaction read (opted-out numbers, what each capped number has had,
    what each budget has spent) and what the messages let go in it have added since."""

    now: float
    opted: set[str]
    counts: dict[str, list[float]]
    budgets: dict[tuple[str, str], int]  # as read
    spent: dict[tuple[str, str], int] = field(default_factory=dict)  # as it now stands


Letting = tuple[float, int | None, str | None, float]
"""A message let go: (admitted_at, charged, charged_day, counted_at), the values its row is
written with (counted_at: ON_ITS_WAY, until it settles)."""


def tally(gates: Sequence[Gate], now: float) -> Program[Tally]:
    """Read what the checks of these gates need, locking their numbers and budgets."""
    numbers = sorted({g.recipient for g in gates})
    opted: set[str] = set()
    # Most ledgers' own list is empty: one look, instead of one per number of the batch.
    if (yield Rows("SELECT 1 FROM optouts LIMIT 1", [])):
        found = yield from rows_in("SELECT number FROM optouts WHERE number IN ({in})", numbers)
        opted = {str(r[0]) for r in found}
    capped = [g for g in gates if g.cap is not None]
    counted = numbers if len(capped) == len(gates) else sorted({g.recipient for g in capped})
    counts = yield from _counts(capped, now, counted)
    budgets = yield from _budgets([g for g in gates if g.limit is not None])
    return Tally(now, opted, counts, budgets, dict(budgets))


def let_go(t: Tally, gate: Gate) -> Refusal | Letting:
    """The message refused, or let go: counted against its number and charged to its budget.
    (Once a message, on the writer's thread: written for the common case, a number not seen.)"""
    to, now = gate.recipient, t.now
    if to in t.opted:
        return Refusal(State.SKIPPED, "opted out")
    times = t.counts.get(to)
    if gate.cap is not None and times:
        since = now - gate.cap.period
        if sum(1 for at in times if at >= since) >= gate.cap.count:
            return Refusal(State.SKIPPED, f"frequency cap ({gate.cap.written})")
    charged: int | None = None
    if gate.limit is not None:
        budget = (gate.sink, gate.day)
        if t.spent[budget] + gate.cost > gate.limit:
            reason = f"daily budget of {gate.limit} reached; resumes {utc(gate.resumes)}"
            return Refusal(State.PENDING, reason, gate.resumes)
        charged = gate.cost
        t.spent[budget] += charged
    if times is None:
        t.counts[to] = [now]
    else:
        times.append(now)
    return (now, charged, gate.day if charged is not None else None, ON_ITS_WAY)


def take_back(t: Tally, gate: Gate, letting: Letting) -> None:
    """A message let go whose row was not written after all (another instance's came first)."""
    if letting[1] is not None:
        t.spent[(gate.sink, gate.day)] -= letting[1]
    t.counts[gate.recipient].remove(letting[0])


def spend(t: Tally) -> Program[None]:
    """The budgets' new totals, where messages were charged."""
    for (sink, day), total in t.spent.items():
        if total != t.budgets[(sink, day)]:
            yield Run("UPDATE budgets SET spent = ? WHERE sink = ? AND day = ?", [total, sink, day])


def admit(gates: Sequence[Gate]) -> Program[dict[str, Refusal]]:
    """Each message let go or refused, in order; answers the refused ones by key."""
    now = yield Now()
    admitted_before = {
        str(r[0])
        for r in (
            yield from rows_in(
                "SELECT key FROM sends WHERE admitted_at IS NOT NULL AND key IN ({in})",
                [g.key for g in gates],
            )
        )
    }
    t = yield from tally(gates, now)
    refused: dict[str, Refusal] = {}
    letting: dict[Letting, list[str]] = defaultdict(list)  # one statement for the many alike
    for gate in gates:
        if gate.key in admitted_before:
            continue  # let go before (its cost reserved then): a retry, or a new owner after a lapse
        verdict = let_go(t, gate)
        if isinstance(verdict, Refusal):
            refused[gate.key] = verdict
        else:
            letting[verdict].append(gate.key)
    for values, keys in letting.items():
        yield from run_in(
            "UPDATE sends SET admitted_at = ?, charged = ?, charged_day = ?, counted_at = ? "
            "WHERE key IN ({in})",
            keys,
            values,
        )
    yield from spend(t)
    return refused


def _counts(gates: Sequence[Gate], now: float, numbers: list[str]) -> Program[dict[str, list[float]]]:
    """For each capped number (`numbers`: those of `gates`, sorted): when each message counted
    against it went (now, for those on their way). The numbers are locked first, so no other
    transaction counts them meanwhile."""
    counts: dict[str, list[float]] = defaultdict(list)
    if not gates:
        return counts
    yield Lock("cap:", numbers)
    longest = max(g.cap.period for g in gates if g.cap is not None)
    for number, at in (
        yield from rows_in(
            "SELECT recipient, counted_at FROM sends WHERE counted_at IS NOT NULL AND counted_at >= ? "
            "AND recipient IN ({in})",
            numbers,
            [now - longest],
        )
    ):
        counts[str(number)].append(now if at >= ON_ITS_WAY else float(at))
    return counts


def _budgets(gates: Sequence[Gate]) -> Program[dict[tuple[str, str], int]]:
    """What each (sink, day) has spent, its row locked for this transaction."""
    spent: dict[tuple[str, str], int] = {}
    for sink, day in sorted({(g.sink, g.day) for g in gates}):
        yield Run(
            "INSERT INTO budgets (sink, day, spent) VALUES (?, ?, 0) ON CONFLICT (sink, day) DO NOTHING",
            [sink, day],
        )
        rows = yield Rows("SELECT spent FROM budgets WHERE sink = ? AND day = ? {for_update}", [sink, day])
        spent[(sink, day)] = int(rows[0][0])
    return spent


def refund(transitions: Sequence[Transition]) -> Program[None]:
    """Messages that ended without being taken give their reserved cost back, and count no more."""
    keys = [t.key for t in transitions if t.state in REFUNDED]
    if not keys:
        return
    rows = yield from rows_in(
        "SELECT key, sink, charged_day, charged FROM sends WHERE charged IS NOT NULL "
        "AND state IN ('failed', 'pending', 'skipped') AND key IN ({in})",
        keys,
    )
    back: Counter[tuple[str, str]] = Counter()
    for _, sink, day, charged in rows:
        back[(str(sink), str(day))] += int(charged)
    for (sink, day), amount in sorted(back.items()):
        yield Run("UPDATE budgets SET spent = spent - ? WHERE sink = ? AND day = ?", [amount, sink, day])
    yield from run_in(
        "UPDATE sends SET admitted_at = NULL, charged = NULL, charged_day = NULL, counted_at = NULL "
        "WHERE admitted_at IS NOT NULL AND state IN ('failed', 'pending', 'skipped') AND key IN ({in})",
        keys,
    )


def spent(day: str) -> Program[dict[str, int]]:
    """What each sink has spent on `day`."""
    rows = yield Rows("SELECT sink, spent FROM budgets WHERE day = ?", [day])
    return {str(r[0]): int(r[1]) for r in rows}

"""`daily_budget` on a sink: RO credits or PK SMS segments a day (the sink's own cost of a message),
the day in the top-level `timezone`. The cost is reserved by the ledger, atomically, before the
request leaves, so concurrent sends and several instances can never spend past it; it is given
back when the message ends without being taken (refused, held). A message that would go over
waits as `pending: daily budget of N reached; resumes <UTC time>` (the next midnight)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from connector.policy import SEND, Budget, Candidate, Gate, PolicyContext, Verdict, utc


class HasSink(Protocol):
    @property
    def sink(self) -> str: ...


def day_of(now: float, zone: ZoneInfo) -> tuple[str, float]:
    """(the day `now` falls on in `zone`, when the next one starts)."""
    today = datetime.fromtimestamp(now, zone).date()
    midnight = datetime.combine(today + timedelta(days=1), time(0), tzinfo=zone)
    return today.isoformat(), midnight.timestamp()


class BudgetPolicy:
    def __init__(self, sink: str, budget: Budget, zone: ZoneInfo) -> None:
        self.sink = sink
        self.budget = budget
        self.zone = zone
        self._today = ("", 0.0)  # the day and when it ends: worked out once a day, not per message

    @classmethod
    def for_rule(cls, rule: HasSink, context: PolicyContext) -> BudgetPolicy | None:
        budget = context.budgets.get(rule.sink)
        return None if budget is None else cls(rule.sink, budget, context.zone)

    def check(self, candidate: Candidate, at: float) -> Verdict:
        return SEND  # only the ledger knows what was spent, right before the request leaves (`gate`)

    def gate(self, gate: Gate, candidate: Candidate, now: float) -> None:
        day, resumes = self._today
        if not day or now >= resumes or now < resumes - 86400 * 2:
            day, resumes = self._today = day_of(now, self.zone)
        gate.sink, gate.cost, gate.limit = self.sink, self.budget.cost(candidate.text), self.budget.limit
        gate.day, gate.resumes = day, resumes


def budget_reason(limit: int, resumes: float) -> str:
    return f"daily budget of {limit} reached; resumes {utc(resumes)}"

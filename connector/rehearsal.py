"""What the engine would do with a record, without a ledger and without sending: the rules, the
sink's way of writing the number, and the send policies at a given moment. `connector preview`
shows it, `connector test` compares it with what a rule test expects: both see what a real pass
would do, through the same code (CompiledRule.evaluate, Sink.recipient, PolicyStep.verdict).

What only the ledger can tell is not known here: duplicates of earlier sends, frequency caps and
daily budgets (they are counted in the ledger as the requests leave), and the ledger's own
opt-out list unless the caller has read it into the policy context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from connector.events import Record
from connector.policy import Act, Verdict, fail
from connector.policy_step import PolicyStep
from connector.rules import CompiledRule, Decision
from connector.status import is_resend
from sinks.base import Sink

STATE_OF = {Act.SEND: "sent", Act.WAIT: "pending", Act.SKIP: "skipped", Act.FAIL: "failed"}


@dataclass(frozen=True, slots=True)
class Rehearsed:
    """One rule's message for one record: what it would be and what would become of it."""

    rule: CompiledRule
    decision: Decision
    verdict: Verdict  # a decision that did not render (or whose number is unusable) fails
    recipient: str | None  # the number as the sink writes it (PK: without the plus); None: failed

    @property
    def state(self) -> str:
        """The status word it would get: sent, pending, skipped or failed."""
        return STATE_OF[self.verdict.act]


@dataclass(frozen=True, slots=True)
class Outlook:
    """What would become of one record."""

    record: Record
    problem: str | None = None  # the record itself is malformed: it fails, no rule is asked
    kept: str | None = None  # it already has a status (not `resend`): left alone
    messages: list[Rehearsed] = field(default_factory=list)  # one per rule that wants it


def rehearse(
    record: Record, rules: Sequence[CompiledRule], sinks: Mapping[str, Sink], step: PolicyStep, now: float
) -> Outlook:
    """The record through the rules of its source, as the engine would take it at `now`."""
    if record.status and not is_resend(record.status):
        return Outlook(record, kept=record.status)
    if record.problem:
        return Outlook(record, problem=record.problem)
    messages: list[Rehearsed] = []
    for rule in rules:
        decision = rule.evaluate(record.row)
        if decision is None:
            continue
        if decision.problem or decision.to is None or decision.text is None:
            messages.append(Rehearsed(rule, decision, fail(decision.problem or "not rendered"), None))
            continue
        sink = sinks.get(rule.sink)
        recipient = sink.recipient(decision.to) if sink is not None else decision.to
        verdict, _ = step.verdict(rule.name, rule.sink, decision, now)
        messages.append(Rehearsed(rule, decision, verdict, recipient))
    return Outlook(record, messages=messages)

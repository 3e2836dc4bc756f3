"""The send policy step of the engine (SPEC "Send policies"): between rendering and sending.

Twice for each message: when its record is claimed (the verdict becomes the claim: a wait, a skip
or a failure is recorded as such, with the reason a person reads in the status cell), and again
right before its request leaves, since a message may have waited for hours (a window may have
closed, a number may have opted out, it may have expired meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from types import MappingProxyType

from connector.ledger import Claim, Entry, Refusal, State, Transition
from connector.policy import (
    SEND,
    Act,
    Candidate,
    Gate,
    Gating,
    Policy,
    PolicyContext,
    Scheduling,
    Verdict,
    decide,
    due_of,
    judge,
)
from connector.rules import CompiledRule, Decision
from policies import policies_for
from policies.schedule import SEND_AT

FRESH_S = 5.0  # a claim judged this recently needs no second look before its request (a batch
# of a big file takes a few seconds from its claim to its requests under load)
_STATE_OF = {Act.WAIT: State.PENDING, Act.SKIP: State.SKIPPED, Act.FAIL: State.FAILED}
_NO_META: Mapping[str, str] = MappingProxyType({})  # shared: policies never change a candidate


def _as(
    c: Claim,
    *,
    failed: str | None = None,
    skipped: str | None = None,
    due_at: float | None = None,
    not_before: float | None = None,
    waiting: str = "",
    gate: Gate | None = None,
) -> Claim:
    """The claim as judged, changed in place (it is the engine's own, not yet handed on)."""
    c.failed, c.skipped, c.due_at, c.not_before, c.waiting, c.gate = (
        failed or c.failed,
        skipped,
        due_at,
        not_before,
        waiting,
        gate,
    )
    return c


class PolicyStep:
    def __init__(self, rules: Sequence[CompiledRule], context: PolicyContext | None = None) -> None:
        self.context = context = context or PolicyContext()
        self._by_rule: dict[str, list[Policy]] = {r.name: policies_for(r.config, context) for r in rules}
        # Sorted once: which policies schedule and which need the ledger, per rule.
        self._scheduling = {
            name: [p for p in found if isinstance(p, Scheduling)] for name, found in self._by_rule.items()
        }
        self._gating = {
            name: [p for p in found if isinstance(p, Gating)] for name, found in self._by_rule.items()
        }
        # What is asked of each message: a gating policy's own check always says send.
        self._checking = {
            name: [p for p in found if not isinstance(p, Gating)] for name, found in self._by_rule.items()
        }
        self.on_wait: Callable[[float], None] | None = None  # a message now waits until then

    def policies(self, rule: str) -> list[Policy]:
        return self._by_rule.get(rule, [])

    def verdict(self, rule: str, sink: str, decision: Decision, now: float) -> tuple[Verdict, float]:
        """What the policies say of a rendered message (and when it is due)."""
        verdict, judged = self._judge(rule, sink, decision, now)
        return verdict, due_of(judged, now)

    def _judge(self, rule: str, sink: str, decision: Decision, now: float) -> tuple[Verdict, Candidate]:
        meta = _NO_META if decision.send_at is None else {SEND_AT: decision.send_at}
        candidate = Candidate(rule, sink, decision.to or "", decision.text or "", None, None, meta)
        return judge(self._checking.get(rule, ()), candidate, now, self._scheduling.get(rule, ()))

    def admit(self, claim: Claim, decision: Decision, now: float) -> Claim:
        """The claim as the policies have it: sent now, waiting, skipped or failed. One sent now
        carries what the ledger checks as it is let go (its gate), in the claim's transaction."""
        if not self._by_rule.get(claim.rule) or claim.failed is not None:
            return claim
        verdict, judged = self._judge(claim.rule, claim.sink, decision, now)
        due = due_of(judged, now)
        # Nearly always judge's own SEND: told by identity, as reading Act's members off the
        # class costs ~50 ns each on Python 3.11, three times a message.
        if verdict is not SEND and verdict.act is not Act.SEND:
            return self._held(claim, verdict, due)
        gating = self._gating.get(claim.rule)
        return _as(claim, due_at=due, gate=self._gate(claim.key, judged, gating, now) if gating else None)

    def _held(self, claim: Claim, verdict: Verdict, due: float) -> Claim:
        if verdict.act is Act.FAIL:
            return _as(claim, failed=verdict.reason)
        if verdict.act is Act.SKIP:
            return _as(claim, skipped=verdict.reason, due_at=due)
        self._waits(verdict)
        return _as(claim, not_before=verdict.until, waiting=verdict.reason, due_at=due)

    def recheck(
        self, entries: Sequence[Entry], now: float, judged: float | None = None
    ) -> tuple[list[Entry], list[Transition]]:
        """Right before the requests leave: those still to send, and what becomes of the others.
        Messages whose claim was judged a moment ago (`judged`: this very batch) are not judged twice."""
        if judged is not None and judged > now - FRESH_S:
            return list(entries), []
        going: list[Entry] = []
        held: list[Transition] = []
        for entry in entries:
            checking = self._checking.get(entry.rule)
            if not checking:  # no policy, or only gating ones (the ledger's to check)
                going.append(entry)
                continue
            due = entry.due_at if entry.due_at is not None else entry.created_at
            candidate = Candidate(entry.rule, entry.sink, entry.recipient, entry.text, due_at=due)
            verdict, _ = decide(checking, candidate, now, self._scheduling.get(entry.rule, ()))
            if verdict.act is Act.SEND:
                going.append(entry)
                continue
            until = verdict.until if verdict.act is Act.WAIT else None
            held.append(
                Transition(entry.key, _STATE_OF[verdict.act], verdict.reason, entry.created_at, until)
            )
            self._waits(verdict)
        return going, held

    def gates(
        self, entries: Sequence[Entry], now: float, admitted: AbstractSet[str] = frozenset()
    ) -> list[Gate]:
        """What the ledger must check as these messages go (caps, budgets); none for most rules,
        nor for those it let go already as it recorded their claim (`admitted`)."""
        gates: list[Gate] = []
        for e in entries:
            if e.key in admitted or not (gating := self._gating.get(e.rule)):
                continue
            candidate = Candidate(e.rule, e.sink, e.recipient, e.text, due_at=e.due_at)
            gates.append(self._gate(e.key, candidate, gating, now))
        return gates

    @staticmethod
    def _gate(key: str, candidate: Candidate, gating: Sequence[Gating], now: float) -> Gate:
        gate = Gate(key, candidate.to)
        for policy in gating:
            policy.gate(gate, candidate, now)
        return gate

    def refused(
        self, entries: Sequence[Entry], refusals: Mapping[str, Refusal]
    ) -> tuple[list[Entry], list[Transition]]:
        """The entries the ledger let go, and what becomes of those it did not."""
        going: list[Entry] = []
        held: list[Transition] = []
        for entry in entries:
            refusal = refusals.get(entry.key)
            if refusal is None:
                going.append(entry)
                continue
            held.append(Transition(entry.key, refusal.state, refusal.reason, entry.created_at, refusal.until))
            if refusal.until is not None and self.on_wait is not None:
                self.on_wait(refusal.until)
        return going, held

    def _waits(self, verdict: Verdict) -> None:
        if verdict.act is Act.WAIT and verdict.until is not None and self.on_wait is not None:
            self.on_wait(verdict.until)

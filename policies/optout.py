"""Opt-outs: a number on a `suppress` list or on the ledger's own list (`connector optout add`) is
never sent to: `skipped: opted out`. Numbers are compared in E.164. Checked when the record is
claimed and again right before the request leaves, so a number that opts out while its message
waits is not sent."""

from __future__ import annotations

from typing import Any

from connector.policy import SEND, Candidate, OptOutList, PolicyContext, Verdict, skip

OPTED_OUT = "opted out"


class OptOutPolicy:
    def __init__(self, numbers: OptOutList) -> None:
        self.numbers = numbers

    @classmethod
    def for_rule(cls, rule: Any, context: PolicyContext) -> OptOutPolicy:
        return cls(context.optouts)  # every rule: a person who opted out did so from all of them

    def check(self, candidate: Candidate, at: float) -> Verdict:
        return skip(OPTED_OUT) if candidate.to in self.numbers else SEND

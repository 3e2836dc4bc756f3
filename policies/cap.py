"""`max_per_recipient: N/PERIOD`: a message that would be the (N+1)th to one number, from any rule,
within PERIOD is `skipped: frequency cap (N per PERIOD)`. `sent` and `unknown` count, and so do
messages on their way. The count is taken by the ledger in the transaction that lets messages go,
so two messages to one number racing (on any instances) cannot both pass the cap."""

from __future__ import annotations

import re
from typing import Annotated, Protocol

from pydantic import BeforeValidator, PlainSerializer

from connector.policy import SEND, Candidate, Cap, Gate, PolicyContext, Verdict
from connector.types import written_as
from connector.units import parse_duration

_CAP = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")


def parse_cap(value: object) -> Cap:
    if isinstance(value, Cap):
        return value
    match = _CAP.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a cap: write N/PERIOD, e.g. 3/24h or 1/7d")
    count, period = int(match.group(1)), parse_duration(match.group(2))
    if count < 1 or period <= 0:
        raise ValueError("a cap needs at least 1 message over a period longer than 0s")
    return Cap(count, period, f"{count} per {match.group(2)}")


CapSetting = Annotated[
    Cap,
    BeforeValidator(parse_cap),
    PlainSerializer(lambda c: c.written.replace(" per ", "/")),
    written_as({"type": "string", "pattern": _CAP.pattern}, examples=["3/24h", "1/7d"]),
]


class HasCap(Protocol):
    @property
    def max_per_recipient(self) -> Cap | None: ...


class CapPolicy:
    def __init__(self, cap: Cap) -> None:
        self.cap = cap

    @classmethod
    def for_rule(cls, rule: HasCap, context: PolicyContext) -> CapPolicy | None:
        return None if rule.max_per_recipient is None else cls(rule.max_per_recipient)

    def check(self, candidate: Candidate, at: float) -> Verdict:
        return SEND  # only the ledger can count, right before the request leaves (`gate`)

    def gate(self, gate: Gate, candidate: Candidate, now: float) -> None:
        gate.cap = self.cap


def cap_reason(cap: Cap) -> str:
    return f"frequency cap ({cap.written})"

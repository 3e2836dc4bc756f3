"""`send_at` (+ `send_offset`) and `expire_after`: a message waits for its time.

`send_at` is a template whose value is a date-time: ISO 8601, `YYYY-MM-DD HH:MM` or
`DD.MM.YYYY HH:MM`, in the top-level `timezone` unless it names a zone. The message waits as
`pending: scheduled for <UTC time>`; a time already past sends at once, unless `expire_after` has
passed since it: then `skipped: expired (was due <UTC time>)`. Without `send_at`, a message is due
when it is claimed, and `expire_after` still bounds how long it may wait (quiet hours, a budget).
An unreadable date fails that record, with the value in the reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from connector.policy import SEND, Candidate, PolicyContext, Verdict, skip, utc, wait

SEND_AT = "send_at"  # Candidate.meta key of the rendered `send_at`
_FORMS = ("%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y", "%d/%m/%Y %H:%M")


def parse_moment(text: str, zone: ZoneInfo) -> float:
    """The instant a record's date-time names; ValueError saying what was expected."""
    value = text.strip()
    if not value:
        raise ValueError("send_at is empty")
    moment: datetime | None = None
    try:
        moment = datetime.fromisoformat(value)  # 2026-12-08T10:00, 2026-12-08 10:00, ...+02:00, ...Z
    except ValueError:
        for form in _FORMS:
            try:
                moment = datetime.strptime(value, form)
                break
            except ValueError:
                continue
    if moment is None:
        raise ValueError(
            f"send_at {value!r} is not a date-time "
            "(write 2026-12-08T10:00, 2026-12-08 10:00 or 08.12.2026 10:00)"
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


class HasSchedule(Protocol):
    @property
    def send_at(self) -> str | None: ...
    @property
    def send_offset(self) -> float: ...
    @property
    def expire_after(self) -> float | None: ...


class ExpiryPolicy:
    """`expire_after` without `send_at`: the message is due when it is claimed, and is skipped if
    it has waited (quiet hours, a budget) past its expiry. Not a scheduler: nothing to work out."""

    def __init__(self, expire_after: float | None) -> None:
        self.expire_after = expire_after

    def check(self, candidate: Candidate, at: float) -> Verdict:
        due = candidate.due_at
        if due is None:
            return SEND
        if due > at:
            return wait(due, f"scheduled for {utc(due)}")
        if self.expire_after is not None and at > due + self.expire_after:
            return skip(f"expired (was due {utc(due)})")
        return SEND


class SchedulePolicy(ExpiryPolicy):
    def __init__(self, rule: HasSchedule, zone: ZoneInfo) -> None:
        super().__init__(rule.expire_after)
        self.offset = rule.send_offset
        self.zone = zone

    @classmethod
    def for_rule(cls, rule: HasSchedule, context: PolicyContext) -> ExpiryPolicy | None:
        if rule.send_at is None:
            return None if rule.expire_after is None else ExpiryPolicy(rule.expire_after)
        return cls(rule, context.zone)

    def due(self, candidate: Candidate, at: float) -> float:
        """When the message is due: its scheduled time. ValueError when unreadable."""
        return parse_moment(candidate.meta.get(SEND_AT, ""), self.zone) + self.offset

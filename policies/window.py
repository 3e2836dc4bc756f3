"""`send_window`: quiet hours. Outside the window a message waits as `pending: quiet hours until
<UTC time>` and goes when the window opens.

Days are `mon-fri`, `sat,sun`, `daily`, or a list; times are the window's `timezone`, else the
top-level one. A window that ends before it starts spans midnight and belongs to the day it
starts on (`fri` 22:00 to 06:00 runs into Saturday morning). Local times are turned into instants
by `zoneinfo` day by day, so a DST change moves the instant, never the local hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Annotated, Any, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connector.policy import SEND, Candidate, PolicyContext, Verdict, utc, wait
from connector.types import STRICT, TimeZone, written_as

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_LOOK_AHEAD = 8  # days: every weekday comes round within a week, one more for a window past midnight


def parse_days(value: object) -> frozenset[int]:
    """`mon-fri`, `sat,sun`, `daily`, `mon-wed,fri`, or a list of those: weekday numbers (Monday 0)."""
    parts: list[str]
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    elif isinstance(value, Sequence):
        parts = [str(p).strip() for p in value]
    else:
        raise ValueError("days are written mon-fri, sat,sun, daily, or a list of days")  # noqa: TRY004
    days: set[int] = set()
    for part in parts:
        word = part.lower()
        if word in ("daily", "every day", "all"):
            days.update(range(7))
        elif "-" in word:
            first, _, last = (w.strip() for w in word.partition("-"))
            start, end = _day(first), _day(last)
            days.update((start + i) % 7 for i in range((end - start) % 7 + 1))
        else:
            days.add(_day(word))
    if not days:
        raise ValueError("name at least one day")
    return frozenset(days)


def _day(word: str) -> int:
    for number, full in enumerate(_FULL_DAYS):
        if len(word) >= 3 and full.startswith(word):
            return number
    raise ValueError(f"{word!r} is not a day (write {', '.join(_DAYS)} or daily)")


def parse_time(value: object) -> time:
    if isinstance(value, int) and not isinstance(value, bool):  # YAML reads 08:00 unquoted as minutes
        value = f"{value // 60:02d}:{value % 60:02d}"
    if not isinstance(value, str):
        raise ValueError("a time of day is written HH:MM, e.g. 08:00")  # noqa: TRY004
    try:
        hour, _, minute = value.strip().partition(":")
        return time(int(hour), int(minute or 0))
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day: write HH:MM, e.g. 08:00 or 20:30") from None


def _yaml_keys(schema: dict[str, Any]) -> None:
    """The JSON Schema says `from` and `to`, as the YAML does."""
    renamed = {"start": "from", "end": "to"}
    schema["properties"] = {renamed.get(k, k): v for k, v in schema["properties"].items()}
    schema["required"] = [renamed.get(k, k) for k in schema.get("required", [])]


_CLOCK = written_as(
    {"type": "string", "pattern": r"^\s*\d{1,2}(:\d{2})?\s*$"},
    {"type": "integer", "minimum": 0},  # YAML 1.1 reads 08:00 unquoted as minutes (480)
    examples=["08:00", "20:30"],
)


class SendWindow(BaseModel):
    model_config = STRICT | ConfigDict(json_schema_extra=_yaml_keys)
    days: Annotated[
        frozenset[int],
        written_as(
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}},
            examples=["mon-fri", "sat,sun", "daily", ["mon", "wed", "fri"]],
        ),
    ] = Field(
        default=frozenset(range(7)),
        description="Days it is open: mon-fri, sat,sun, daily, or a list of days.",
        json_schema_extra={"default": "daily"},
    )
    start: Annotated[time, _CLOCK] = Field(
        title="From", description='Opens at this time of day, HH:MM (quote it: "08:00").'
    )
    end: Annotated[time, _CLOCK] = Field(
        title="To", description="Closes at this time of day, HH:MM; before `from`: the window spans midnight."
    )
    timezone: TimeZone | None = Field(
        default=None, description="The zone of the times; default: the top-level timezone."
    )

    @model_validator(mode="before")
    @classmethod
    def _spelled(cls, data: Any) -> Any:
        # `from` is a Python keyword: the YAML says from/to, the model start/end.
        if isinstance(data, dict):
            data = dict(data)
            for yaml_key, field in (("from", "start"), ("to", "end")):
                if yaml_key in data:
                    data[field] = data.pop(yaml_key)
        return data

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: object) -> frozenset[int]:
        return parse_days(value)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: object) -> time:
        return parse_time(value)

    @model_validator(mode="after")
    def _not_empty(self) -> SendWindow:
        if self.start == self.end:
            raise ValueError("`from` and `to` are the same time: leave send_window out to send at any hour")
        return self

    def opening(self, at: float, zone: tzinfo) -> float | None:
        """None when `at` is inside the window; else the instant it opens next."""
        inside, change = self.state(at, zone)
        return None if inside else change

    def state(self, at: float, zone: tzinfo) -> tuple[bool, float]:
        """(inside, when that changes): inside until the window closes, or outside until it opens."""
        zone = self.timezone or zone
        today = datetime.fromtimestamp(at, zone).date()
        spans = self.end < self.start
        soonest = at + _LOOK_AHEAD * 86400.0
        for offset in range(-1, _LOOK_AHEAD):
            day = today + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            start = _instant(day, self.start, zone)
            end = _instant(day + timedelta(days=1) if spans else day, self.end, zone)
            if start <= at < end:
                return True, end
            if at < start < soonest:
                soonest = start
        return False, soonest


def _instant(day: date, clock: time, zone: tzinfo) -> float:
    return datetime.combine(day, clock, tzinfo=zone).timestamp()


class HasWindow(Protocol):
    @property
    def send_window(self) -> SendWindow | None: ...


class WindowPolicy:
    """Waits outside the rule's window; checked again right before the request leaves."""

    def __init__(self, window: SendWindow, zone: ZoneInfo) -> None:
        self.window = window
        self.zone = zone
        # The answer holds for a while (inside until the window closes; outside until it opens):
        # [from, until) and the opening then (None: inside). Thousands of messages share it.
        self._known: tuple[float, float, float | None] = (0.0, 0.0, None)

    @classmethod
    def for_rule(cls, rule: HasWindow, context: PolicyContext) -> WindowPolicy | None:
        return None if rule.send_window is None else cls(rule.send_window, context.zone)

    def check(self, candidate: Candidate, at: float) -> Verdict:
        start, until, opens = self._known
        if not start <= at < until:
            inside, until = self.window.state(at, self.zone)
            opens = None if inside else until
            self._known = (at, until, opens)
        return SEND if opens is None else wait(opens, f"quiet hours until {utc(opens)}")

"""Durations (`500ms`, `2s`, `5m`, `1h`, `7d`) and rates (`10/s`, `600/m`) as written in config.yaml."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

DURATION_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$"
RATE_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*$"
_DURATION = re.compile(DURATION_PATTERN)
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(RATE_PATTERN)


def parse_duration(value: object) -> float:
    """Seconds in a duration. A bare number is seconds."""
    # Only ValueError reaches the user as a located config problem: pydantic lets a TypeError escape.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a duration such as 500ms, 2s, 5m, 1h or 7d")  # noqa: TRY004 - see above
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a duration must be a finite number")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration: write it as 500ms, 2s, 5m, 1h or 7d")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Seconds as config.yaml writes them, in the largest unit that says them exactly: 7d, 5m, 500ms."""
    sign, size = ("-" if seconds < 0 else ""), abs(seconds)
    if size == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        count = size / _SECONDS[unit]
        if count >= 1 and count == int(count):
            return f"{sign}{int(count)}{unit}"
    return f"{sign}{size * 1000:g}ms" if size < 1 else f"{sign}{size:g}s"


def parse_signed_duration(value: object) -> float:
    """A duration that may be negative: `-1d` (the day before), `+2h`, `30m`."""
    if isinstance(value, str) and value.strip()[:1] in "-+":
        text = value.strip()
        return (-1.0 if text[0] == "-" else 1.0) * parse_duration(text[1:])
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        return -parse_duration(-value)
    return parse_duration(value)


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` events per `per` seconds."""

    count: float
    per: float

    @property
    def per_second(self) -> float:
        return self.count / self.per

    def __str__(self) -> str:
        return f"{self.count:g}/s" if self.per == 1 else f"{self.count:g}/{self.per:g}s"


def parse_rate(value: object) -> Rate:
    """A rate such as `10/s`, `600/m` or `5/2s` (5 every 2 seconds)."""
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        # A bare number does not say per what: 10 a second and 10 a minute are both plausible.
        # ValueError, not TypeError: only ValueError becomes a located config problem.
        raise ValueError("expected a rate with its period, such as 10/s, 600/m or 5/2s")  # noqa: TRY004
    match = _RATE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a rate: write it as 10/s, 600/m or 5/2s")
    count = float(match.group(1))
    per = float(match.group(2) or 1) * _SECONDS[match.group(3)]
    if count <= 0 or per <= 0:
        raise ValueError("a rate must be positive")
    return Rate(count, per)

"""Field types shared by the config models of the engine, the sources and the sinks."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, ConfigDict, PlainSerializer

from connector.units import Rate, parse_duration, parse_rate, parse_signed_duration

Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(lambda s: f"{s:g}s")]
"""Seconds, written in config.yaml as 500ms, 2s, 5m, 1h or 7d."""

RateLimit = Annotated[Rate, BeforeValidator(parse_rate), PlainSerializer(str)]
"""A ceiling such as 10/s."""

SignedDuration = Annotated[
    float, BeforeValidator(parse_signed_duration), PlainSerializer(lambda s: f"{s:g}s")
]
"""Seconds that may be negative: `-1d` is the day before."""


def parse_zone(value: object) -> ZoneInfo:
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a time zone is named like Europe/Bucharest, Asia/Karachi or UTC")
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a time zone zoneinfo knows (e.g. Europe/Bucharest, Asia/Karachi, UTC)"
        ) from None


TimeZone = Annotated[ZoneInfo, BeforeValidator(parse_zone), PlainSerializer(str)]
"""An IANA time zone name, checked against zoneinfo's database."""

STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, coerce_numbers_to_str=True)
"""Unknown keys are errors: a typo in config.yaml must never be silently ignored.

Numbers are taken as text where text is expected: YAML reads `device_id: 42` or `worksheet: 2024`
as numbers, and refusing them would only puzzle the person editing the file.
"""

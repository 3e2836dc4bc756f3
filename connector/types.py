"""Field types shared by the config models of the engine, the sources and the sinks."""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, ConfigDict, PlainSerializer, ValidationInfo, WithJsonSchema

from connector.units import (
    DURATION_PATTERN,
    RATE_PATTERN,
    Rate,
    format_duration,
    parse_duration,
    parse_rate,
    parse_signed_duration,
)

PLACEHOLDER: dict[str, Any] = {
    "type": "string",
    "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
    "description": "${VAR} or ${VAR:-default}: replaced from the environment (or .env) when loaded.",
}
"""The JSON Schema of a `${VAR}` reference, allowed wherever a value is not text anyway."""


def written_as(*forms: dict[str, Any], examples: list[Any]) -> WithJsonSchema:
    """The JSON Schema of a value written in one of these forms (or as a `${VAR}` reference)."""
    return WithJsonSchema({"anyOf": [*forms, PLACEHOLDER], "examples": examples})


_DURATION_FORMS = ({"type": "string", "pattern": DURATION_PATTERN}, {"type": "number", "minimum": 0})
_DURATION_EXAMPLES = ["500ms", "2s", "5m", "1h", "7d"]

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration),
    written_as(*_DURATION_FORMS, examples=_DURATION_EXAMPLES),
]
"""Seconds, written in config.yaml as 500ms, 2s, 5m, 1h or 7d."""

RateLimit = Annotated[
    Rate,
    BeforeValidator(parse_rate),
    PlainSerializer(str),
    written_as({"type": "string", "pattern": RATE_PATTERN}, examples=["10/s", "600/m", "5/2s"]),
]
"""A ceiling such as 10/s."""

SignedDuration = Annotated[
    float,
    BeforeValidator(parse_signed_duration),
    PlainSerializer(format_duration),
    written_as(
        {"type": "string", "pattern": r"^\s*[-+]?" + DURATION_PATTERN.removeprefix("^")},
        {"type": "number"},
        examples=["-1d", "-2h", "30m"],
    ),
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


TimeZone = Annotated[
    ZoneInfo,
    BeforeValidator(parse_zone),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "examples": ["UTC", "Europe/Bucharest", "Asia/Karachi"]}),
]
"""An IANA time zone name, checked against zoneinfo's database."""

UNSET_AS_WRITTEN = "unset_as_written"  # the key of pydantic's validation context


def left_as_written(value: str, info: ValidationInfo) -> bool:
    """A `${VAR}` kept as written because it is not set (`connector test` needs no credentials,
    config_loader `unset_as_written`): a validator that checks the value's form passes it."""
    return bool(info.context and info.context.get(UNSET_AS_WRITTEN)) and "${" in value


STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, coerce_numbers_to_str=True)
"""Unknown keys are errors: a typo in config.yaml must never be silently ignored.

Numbers are taken as text where text is expected: YAML reads `device_id: 42` or `worksheet: 2024`
as numbers, and refusing them would only puzzle the person editing the file.
"""

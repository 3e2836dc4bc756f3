"""Field types shared by the config models of the engine, the sources and the sinks."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, ConfigDict, PlainSerializer

from connector.units import Rate, parse_duration, parse_rate

Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(lambda s: f"{s:g}s")]
"""Seconds, written in config.yaml as 500ms, 2s, 5m, 1h or 7d."""

RateLimit = Annotated[Rate, BeforeValidator(parse_rate), PlainSerializer(str)]
"""A ceiling such as 10/s."""

STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, coerce_numbers_to_str=True)
"""Unknown keys are errors: a typo in config.yaml must never be silently ignored.

Numbers are taken as text where text is expected: YAML reads `device_id: 42` or `worksheet: 2024`
as numbers, and refusing them would only puzzle the person editing the file.
"""

"""Field types shared by the config models of the engine, the sources and the sinks."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, ConfigDict, PlainSerializer

from connector.units import Rate, parse_duration, parse_rate

Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(lambda s: f"{s:g}s")]
"""Seconds, written in config.yaml as 500ms, 2s, 5m, 1h or 7d."""

RateLimit = Annotated[Rate, BeforeValidator(parse_rate), PlainSerializer(str)]
"""A ceiling such as 10/s."""

STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
"""Unknown keys are errors: a typo in config.yaml must never be silently ignored."""

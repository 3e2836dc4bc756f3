"""The config.yaml schema (SPEC.md), as pydantic models. Loading and error locating: config_loader."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from connector.types import STRICT, Duration
from sinks import SinkConfig
from sources import SourceConfig

SEVEN_DAYS = 7 * 86400.0

KeyPath = tuple[str | int, ...]

NAMES_ERROR = "unresolved_names"
"""pydantic error type raised by ConnectorConfig when a rule names a missing source or sink."""


class ServerConfig(BaseModel):
    model_config = STRICT
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class LogConfig(BaseModel):
    model_config = STRICT
    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"


class RuleConfig(BaseModel):
    model_config = STRICT
    name: str = Field(min_length=1)
    source: str | list[str]
    when: str | None = None
    to: str
    country: str | None = None  # region for numbers written without a prefix, e.g. RO or PK
    message: str
    sink: str
    dedupe_window: Duration = SEVEN_DAYS

    @property
    def sources(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)

    @field_validator("country")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import phonenumbers  # noqa: PLC0415 - heavy import kept out of the config module's import time

        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a country code that phone numbers know (use RO, PK, ...)")
        return region


class ConnectorConfig(BaseModel):
    model_config = STRICT
    state: str = "sqlite:///connector.db"
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    # SIGTERM: requests already sent get this long to be answered; queued sends stay pending.
    shutdown_grace: Duration = 10.0
    sinks: dict[str, SinkConfig] = Field(default_factory=dict)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_resolve(self) -> Self:
        rules = [{"name": r.name, "source": r.source, "sink": r.sink} for r in self.rules]
        problems = unresolved_names(rules, self.sources, self.sinks)
        if problems:
            # One error carrying every problem; the loader runs the same check on the raw data (so it
            # reports these even when fields elsewhere fail) and drops this error by its type.
            text = "\n".join(f"{keypath(path)}: {message}" for path, message in problems)
            raise PydanticCustomError(NAMES_ERROR, "{problems}", {"problems": text})
        return self

    def secrets(self) -> list[str]:
        found: list[str] = []
        for sink in self.sinks.values():
            found.extend(sink.secrets())
        for source in self.sources.values():
            found.extend(source.secrets())
        return found


def unresolved_names(
    rules: object, sources: Collection[object], sinks: Collection[object]
) -> list[tuple[KeyPath, str]]:
    """Rules naming a missing source or sink, and duplicate rule names, as (key path, message).

    Takes raw config data as well as validated models. The loader calls it on the parsed YAML, so
    these are reported even when fields fail elsewhere (pydantic then skips model validators);
    anything of the wrong shape is passed over here and left to the field errors.
    """
    if not isinstance(rules, list):
        return []
    source_names = {n for n in (_name(s) for s in sources) if n is not None}
    sink_names = {n for n in (_name(s) for s in sinks) if n is not None}
    problems: list[tuple[KeyPath, str]] = []
    first_index: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            continue
        name = _name(rule.get("name"))
        if name:
            if name in first_index:
                problems.append(
                    ((i, "name"), f"a rule named {name!r} already exists (rules.{first_index[name]})")
                )
            else:
                first_index[name] = i
        source = rule.get("source")
        listed: list[tuple[KeyPath, object]] = [(("source",), source)]
        if isinstance(source, list):
            listed = [(("source", j), item) for j, item in enumerate(source)]
            if not source:
                problems.append(((i, "source"), "name at least one source"))
        for where, value in listed:
            wanted = _name(value)
            if wanted is not None and wanted not in source_names:
                problems.append(((i, *where), _missing("source", wanted, source_names)))
        wanted_sink = _name(rule.get("sink"))
        if wanted_sink is not None and wanted_sink not in sink_names:
            problems.append(((i, "sink"), _missing("sink", wanted_sink, sink_names)))
    return [(("rules", *path), message) for path, message in problems]


def keypath(path: KeyPath) -> str:
    """`('rules', 0, 'sink')` as written in messages: `rules.0.sink`."""
    return ".".join(str(part) for part in path)


def _name(value: object) -> str | None:
    # Mirrors what validation makes of a name: strings are stripped, numbers become strings.
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _missing(kind: str, wanted: str, known: set[str]) -> str:
    listed = ", ".join(sorted(known)) or "none defined"
    close = difflib.get_close_matches(wanted, sorted(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"no {kind} named {wanted!r} ({hint}{kind}s: {listed})"

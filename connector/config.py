"""The config.yaml schema (SPEC.md), as pydantic models. Loading and error locating: config_loader."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Literal
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, field_validator

from connector.optouts import SuppressConfig
from connector.rules import RuleConfig
from connector.types import STRICT, Duration, TimeZone
from sinks import SinkConfig
from sources import SourceConfig

KeyPath = tuple[str | int, ...]


class ServerConfig(BaseModel):
    model_config = STRICT
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    token: str | None = Field(
        default=None,
        min_length=1,
        description="When set, everything but /healthz and webhook paths needs `Authorization: Bearer "
        "<token>` (the status page also takes HTTP Basic with it as the password); e.g. ${CONNECTOR_TOKEN}.",
    )


class InstanceConfig(BaseModel):
    """This process as one of several sharing the ledger (SPEC "Several processes and instances")."""

    model_config = STRICT
    # A process silent this long (dead, hung, paused) loses what it holds to the others: its
    # messages on the wire become `unknown`, the rest, its files and its polls are taken over.
    lease: Duration = 30.0

    @field_validator("lease")
    @classmethod
    def _long_enough(cls, value: float) -> float:
        if value < 1:
            raise ValueError("a lease shorter than 1s would lapse between two renewals")
        return value


class LogConfig(BaseModel):
    model_config = STRICT
    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"


class ConnectorConfig(BaseModel):
    model_config = STRICT
    state: str = "sqlite:///connector.db"
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    # SIGTERM: requests already sent get this long to be answered; queued sends stay pending.
    shutdown_grace: Duration = 10.0
    # The zone of send windows, scheduled times written without one, and budgets' days.
    timezone: TimeZone = ZoneInfo("UTC")
    suppress: list[SuppressConfig] = Field(default_factory=list)  # opt-out list files
    instance: InstanceConfig = InstanceConfig()
    sinks: dict[str, SinkConfig] = Field(default_factory=dict)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=list)

    def secrets(self) -> list[str]:
        found: list[str] = [self.server.token] if self.server.token else []
        password = urlsplit(self.state).password  # postgresql://user:password@host/db
        if password:
            found += [password, quote(password, safe="")]
        for sink in self.sinks.values():
            found.extend(sink.secrets())
        for source in self.sources.values():
            found.extend(source.secrets())
        return found


def unresolved_names(
    rules: object, sources: Collection[object], sinks: Collection[object]
) -> list[tuple[KeyPath, str]]:
    """Rules naming a missing source or sink, and duplicate rule names, as (key path, message).

    The one cross-reference check. The loader runs it on the parsed YAML, so these are reported
    even when fields fail elsewhere; anything of the wrong shape is passed over here and left to
    the field errors.
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

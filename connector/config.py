"""The config.yaml schema (SPEC.md), as pydantic models. Loading and error locating: config_loader."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator

from connector.optouts import SuppressConfig
from connector.rules import RuleConfig
from connector.types import STRICT, Duration, TimeZone
from sinks import SinkConfig
from sources import SourceConfig
from sources.sheet_optouts import SheetListConfig

KeyPath = tuple[str | int, ...]


def _list_kind(value: Any) -> str:
    """A `suppress` entry naming a `sheet` is a Google Sheet tab; anything else a file."""
    if isinstance(value, dict):
        return "sheet" if "sheet" in value else "file"
    return "sheet" if isinstance(value, SheetListConfig) else "file"


SuppressList = Annotated[
    Annotated[SuppressConfig, Tag("file")] | Annotated[SheetListConfig, Tag("sheet")],
    Discriminator(_list_kind),
]


class ServerConfig(BaseModel):
    """The HTTP server of `connector run`: webhooks, status page, API, /healthz, /metrics."""

    model_config = STRICT
    host: str = Field(default="127.0.0.1", description="Address to listen on; 0.0.0.0 for every interface.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port to listen on.")
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
    lease: Duration = Field(
        default=30.0,
        description="A process silent this long (dead, hung) loses what it holds to the others: its sends "
        "on the wire become unknown, its files, polls and unsent messages are taken over.",
    )

    @field_validator("lease")
    @classmethod
    def _long_enough(cls, value: float) -> float:
        if value < 1:
            raise ValueError("a lease shorter than 1s would lapse between two renewals")
        return value


class LogConfig(BaseModel):
    """How log lines are written."""

    model_config = STRICT
    format: Literal["console", "json"] = Field(
        default="console", description="console: lines for people; json: one JSON object a line."
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="The least important level written."
    )


class ConnectorConfig(BaseModel):
    model_config = STRICT
    state: str = Field(
        default="sqlite:///connector.db",
        description="The send ledger: sqlite:///connector.db, or postgresql://user:password@host:5432/db "
        "for instances on several hosts. Never delete it: it is what stops double sends.",
    )
    server: ServerConfig = Field(default=ServerConfig(), description="The server of `connector run`.")
    log: LogConfig = Field(default=LogConfig(), description="Log lines: console or json, and the level.")
    # SIGTERM: requests already sent get this long to be answered; queued sends stay pending.
    shutdown_grace: Duration = Field(
        default=10.0,
        description="On SIGTERM, requests already sent get this long to be answered; queued sends stay "
        "pending for the next start.",
    )
    # The zone of send windows, scheduled times written without one, and budgets' days.
    timezone: TimeZone = Field(
        default=ZoneInfo("UTC"),
        description="The zone of send windows, of scheduled times written without one, and of daily "
        "budgets' days, e.g. Europe/Bucharest.",
    )
    suppress: list[SuppressList] = Field(
        default_factory=list,
        description="Opt-out lists (CSV files, or with `sheet:` Google Sheet tabs): numbers on them are "
        "never sent to (skipped: opted out).",
    )
    instance: InstanceConfig = Field(
        default=InstanceConfig(), description="Several processes sharing one ledger."
    )
    sinks: dict[str, SinkConfig] = Field(
        default_factory=dict,
        description="Where messages go, by name: robo_sms_ro, robo_sms_pk, or dry_run (sends nothing).",
    )
    sources: dict[str, SourceConfig] = Field(
        default_factory=dict,
        description="Where records come from, by name: csv_folder, google_sheets or webhook.",
    )
    rules: list[RuleConfig] = Field(
        default_factory=list,
        description="Which records get an SMS, to whom, with what text, through which sink.",
    )

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
                problems.append(((i, *where), missing_name("source", wanted, source_names)))
        wanted_sink = _name(rule.get("sink"))
        if wanted_sink is not None and wanted_sink not in sink_names:
            problems.append(((i, "sink"), missing_name("sink", wanted_sink, sink_names)))
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


def missing_name(kind: str, wanted: str, known: set[str]) -> str:
    """`no sink named 'x' (did you mean 'y'? sinks: y, z)`."""
    listed = ", ".join(sorted(known)) or "none defined"
    close = difflib.get_close_matches(wanted, sorted(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"no {kind} named {wanted!r} ({hint}{kind}s: {listed})"

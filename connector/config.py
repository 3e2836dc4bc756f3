"""The config.yaml schema (SPEC.md), as pydantic models. Loading and error locating: config_loader."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from connector.types import STRICT, Duration
from sinks import SinkConfig
from sources import SourceConfig

SEVEN_DAYS = 7 * 86400.0


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
    sinks: dict[str, SinkConfig] = Field(default_factory=dict)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_resolve(self) -> Self:
        # Collected, not raised one by one: the loader turns each into a located problem.
        problems: list[str] = []
        names: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in names:
                problems.append(f"rules.{i}.name: a rule named {rule.name!r} already exists")
            names.add(rule.name)
            for j, src in enumerate(rule.sources):
                if src not in self.sources:
                    where = f"rules.{i}.source" + ("" if isinstance(rule.source, str) else f".{j}")
                    problems.append(f"{where}: no source named {src!r} (sources: {_names(self.sources)})")
            if rule.sink not in self.sinks:
                problems.append(f"rules.{i}.sink: no sink named {rule.sink!r} (sinks: {_names(self.sinks)})")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def secrets(self) -> list[str]:
        found: list[str] = []
        for sink in self.sinks.values():
            found.extend(sink.secrets())
        for source in self.sources.values():
            found.extend(source.secrets())
        return found


def _names(items: dict[str, object]) -> str:
    return ", ".join(sorted(items)) or "none defined"

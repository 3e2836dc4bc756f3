"""Sink registry: one module per provider, one line here per module."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from connector.plugins import config_union, load
from sinks.base import Sink, SinkConfigBase

REGISTERED: tuple[type[Sink], ...] = load(
    Sink,
    "sinks.dry_run.DryRunSink",
    "sinks.robo_sms_ro.RoboSmsRoSink",
    "sinks.robo_sms_pk.RoboSmsPkSink",
)

SINK_TYPES: dict[str, type[Sink]] = {sink.type_name: sink for sink in REGISTERED}

if TYPE_CHECKING:
    SinkConfig: TypeAlias = SinkConfigBase
else:  # one config model per sink, chosen by its `type`
    SinkConfig = config_union([sink.config_model for sink in REGISTERED])

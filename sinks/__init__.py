"""Sink registry: one module per provider, one line here per module."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from sinks.base import Sink
from sinks.dry_run import DryRunConfig, DryRunSink
from sinks.robo_sms_pk import RoboSmsPkConfig, RoboSmsPkSink
from sinks.robo_sms_ro import RoboSmsRoConfig, RoboSmsRoSink

SinkConfig = Annotated[DryRunConfig | RoboSmsRoConfig | RoboSmsPkConfig, Field(discriminator="type")]

SINK_TYPES: dict[str, type[Sink]] = {
    DryRunSink.type_name: DryRunSink,
    RoboSmsRoSink.type_name: RoboSmsRoSink,
    RoboSmsPkSink.type_name: RoboSmsPkSink,
}

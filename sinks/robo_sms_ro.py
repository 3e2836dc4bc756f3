"""Robo SMS (Romania, robo-sms.com): POST JSON with `Authorization: Basic <token>`."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from connector.types import STRICT
from sinks.http_config import HttpSinkConfig


class RoboSmsRoConfig(HttpSinkConfig):
    model_config = STRICT
    type: Literal["robo_sms_ro"]
    token: SecretStr
    url: str = "https://robo-sms.com/api/sms/"
    device_id: str | None = None

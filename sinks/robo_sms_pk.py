"""Robo SMS Pakistan (portal.robosms.pk): send-message (JSON or form) and check-balance."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from connector.types import STRICT
from sinks.http_config import HttpSinkConfig


class RoboSmsPkConfig(HttpSinkConfig):
    model_config = STRICT
    type: Literal["robo_sms_pk"]
    email: str
    key: SecretStr
    mask: str
    url: str = "https://portal.robosms.pk/api"
    encoding: Literal["json", "form"] = "json"
    bulk: bool = True

"""Config fields shared by the sinks that speak HTTP to a provider."""

from __future__ import annotations

from pydantic import Field, SecretStr

from connector.types import Duration, RateLimit
from sinks.base import SinkConfigBase


class HttpSinkConfig(SinkConfigBase):
    rate: RateLimit | None = None  # optional ceiling, e.g. 10/s
    concurrency: int = Field(default=8, ge=1, le=256)  # requests in flight at once
    retry_ambiguous: bool = False  # resend after a read timeout or 5xx: may pay twice
    timeout: Duration = 30.0  # whole-request read timeout
    connect_timeout: Duration = 5.0
    # Give up retrying 429/503/refused after this long: the message stays pending, the sink pauses.
    max_retry_time: Duration = 300.0

    def secrets(self) -> list[str]:
        found: list[str] = []
        for value in self.__dict__.values():
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
        return [s for s in found if s]

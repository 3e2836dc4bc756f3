"""Config fields shared by the sinks that speak HTTP to a provider."""

from __future__ import annotations

from pydantic import Field, SecretStr

from connector.types import Duration, RateLimit
from sinks.base import SinkConfigBase


class HttpSinkConfig(SinkConfigBase):
    rate: RateLimit | None = Field(default=None, description="A ceiling on sends, e.g. 10/s.")
    concurrency: int = Field(default=8, ge=1, le=256, description="Requests in flight at once.")
    retry_ambiguous: bool = Field(
        default=False,
        description="Resend after a read timeout or 500/502/504 (may pay twice); else such a message is "
        "unknown.",
    )
    timeout: Duration = Field(default=30.0, description="Read timeout of one request.")
    connect_timeout: Duration = Field(default=5.0, description="Connect timeout of one request.")
    # Give up retrying 429/503/refused after this long: the message stays pending, the sink pauses.
    max_retry_time: Duration = Field(
        default=300.0,
        description="Stop retrying 429, 503 and refused connections after this long: the messages stay "
        "pending and the sink pauses.",
    )

    def secrets(self) -> list[str]:
        found: list[str] = []
        for value in self.__dict__.values():
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
        return [s for s in found if s]

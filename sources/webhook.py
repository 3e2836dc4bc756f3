"""Webhook source (config only in this version; the HTTP intake arrives with the webhook issue)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import SecretStr, model_validator

from connector.types import STRICT
from sources.base import SourceConfigBase


class WebhookConfig(SourceConfigBase):
    model_config = STRICT
    type: Literal["webhook"]
    path: str
    secret: SecretStr | list[SecretStr] | None = None
    token: SecretStr | None = None
    auth: Literal["none"] | None = None
    items: str | None = None
    max_body: int = 1024 * 1024
    key_column: str | None = None
    status_column: str = "SMS Status"

    @model_validator(mode="after")
    def _one_auth(self) -> Self:
        given = [n for n, v in (("secret", self.secret), ("token", self.token), ("auth", self.auth)) if v]
        if len(given) != 1:
            raise ValueError("set exactly one of `secret`, `token` or `auth: none`")
        if not self.path.startswith("/"):
            raise ValueError("`path` must start with /")
        return self

    def secrets(self) -> list[str]:
        values = self.secret if isinstance(self.secret, list) else [self.secret] if self.secret else []
        found = [v.get_secret_value() for v in values]
        if self.token:
            found.append(self.token.get_secret_value())
        return found

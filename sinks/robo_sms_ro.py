"""Robo SMS (Romania, robo-sms.com): POST JSON with `Authorization: Basic <token>`.

One request per message. The provider's document lost its numeric answer codes, so an answer is
read by its HTTP status class and the words of its body (the table at the bottom), and the body
is kept in every reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr

from connector.events import Cost, Message
from connector.types import STRICT
from sinks.http import SERVER_ERRORS, HttpSink, Kind, OutcomeRow, Verdict, find_key, json_body, lookup
from sinks.http_config import HttpSinkConfig


class RoboSmsRoConfig(HttpSinkConfig):
    """Robo SMS Romania (robo-sms.com)."""

    model_config = STRICT
    type: Literal["robo_sms_ro"] = Field(description="Robo SMS Romania.")
    token: SecretStr = Field(description="The account's API token, e.g. ${ROBO_SMS_TOKEN}.")
    url: str = Field(default="https://robo-sms.com/api/sms/", description="The send endpoint.")
    device_id: str | None = Field(default=None, description="Send through this device of the account.")


class RoboSmsRoSink(HttpSink):
    config_model = RoboSmsRoConfig
    config: RoboSmsRoConfig

    # The provider's rules.
    chars_per_credit: ClassVar[int] = 480  # 1 credit per 480 characters, whatever the alphabet
    id_keys: ClassVar[tuple[str, ...]] = ("id", "message_id", "sms_id", "uuid")

    def cost(self, text: str) -> Cost:
        # The document says "characters" without saying how it counts them; code points are what a
        # person means by a character. An empty text costs nothing.
        return Cost(math.ceil(len(text) / self.chars_per_credit), "RO credit")

    def request(self, group: Sequence[Message]) -> httpx.Request:
        (message,) = group
        # `country_code` only serves numbers written without their prefix; ours are always E.164.
        body: dict[str, str] = {"content": message.text, "to": self.recipient(message.to)}
        if self.config.device_id:
            body["device_id"] = self.config.device_id
        # The document shows the raw token after "Basic", not base64 of user:password.
        headers = {"Authorization": f"Basic {self.config.token.get_secret_value()}"}
        return self.client.build_request(
            "POST", self.config.url, json=body, headers=headers, timeout=self.timeouts
        )

    def classify(self, group: Sequence[Message], response: httpx.Response) -> Verdict:
        body = json_body(response)
        if response.is_success and not _says_error(body):
            found = find_key(body, self.id_keys)
            return Verdict(Kind.ACCEPTED, str(found) if found is not None else f"HTTP {response.status_code}")
        verdict = lookup(ANSWERS, response)
        assert verdict is not None, "the last row of ANSWERS covers every answer"
        return verdict

    async def check(self) -> str:
        return "robo-sms.com has no balance or token check: the first send proves the token"


def _says_error(body: Any) -> bool:
    """A 2xx whose JSON still says it failed."""
    if not isinstance(body, dict):
        return False
    status = str(body.get("status", "")).lower()
    return body.get("success") is False or bool(body.get("error")) or status in {"error", "fail", "failed"}


# The outcome table, first match wins. The server errors come first: their text is a proxy's or a
# crash's, not a documented answer. Within the words, order matters: the credits sentence also
# says "number", the devices one "sms number".
ANSWERS: tuple[OutcomeRow, ...] = (
    OutcomeRow(Kind.BUSY, "provider busy", statuses=(429, 503)),
    OutcomeRow(Kind.AMBIGUOUS, "provider error", statuses=SERVER_ERRORS),
    OutcomeRow(Kind.ACCOUNT, "wrong token", statuses=(401, 403)),
    OutcomeRow(Kind.ACCOUNT, "wrong token", words=("token", "unauthori", "authenticat")),
    OutcomeRow(Kind.ACCOUNT, "not enough credits", words=("credit",)),
    OutcomeRow(Kind.ACCOUNT, "no device can send it", words=("device", "remaining sms")),
    OutcomeRow(Kind.ACCOUNT, "payment required", statuses=(402,)),
    OutcomeRow(Kind.BUG, "request built wrong", words=("missing", "empty", "content type", "content-type")),
    OutcomeRow(Kind.REFUSED, "invalid number", words=("invalid", "not valid", "phone", "number", "prefix")),
    OutcomeRow(Kind.ACCOUNT, "redirected elsewhere: check the sink's url", statuses=range(300, 400)),
    OutcomeRow(Kind.REFUSED, "refused", statuses=range(400, 500)),
    OutcomeRow(Kind.REFUSED, "refused", statuses=range(200, 300)),  # a 2xx that says it failed
    OutcomeRow(Kind.AMBIGUOUS, "unrecognised answer"),  # 1xx or beyond 599: cannot tell
)

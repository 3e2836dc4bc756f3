"""Robo SMS Pakistan (portal.robosms.pk): send-message (JSON or form) and check-balance.

The same text to many numbers travels as one bulk request (`multiple=1`, comma-separated `to`)
when the sink sets `bulk`; one answer code then speaks for the whole group. The provider answers
with a three-digit code (the table at the bottom); where the HTTP status is all there is, it is
read like any other provider's.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx
import structlog
from pydantic import Field, SecretStr

from connector.errors import AccountError, SinkError
from connector.events import Cost, Message, Outcome
from connector.segments import count_segments
from connector.types import STRICT
from sinks.base import SendingHook
from sinks.http import (
    BY_STATUS,
    MAYBE_TAKEN,
    HttpSink,
    Kind,
    Verdict,
    body_text,
    find_key,
    json_body,
    lookup,
    verdict_of,
)
from sinks.http_config import HttpSinkConfig

log = structlog.get_logger(__name__)


class RoboSmsPkConfig(HttpSinkConfig):
    """Robo SMS Pakistan (portal.robosms.pk)."""

    model_config = STRICT
    type: Literal["robo_sms_pk"] = Field(description="Robo SMS Pakistan.")
    email: str = Field(description="The account's e-mail.")
    key: SecretStr = Field(description="The account's API key, e.g. ${ROBOSMS_PK_KEY}.")
    mask: str = Field(description="The sender name (mask) the account may send as.")
    url: str = Field(
        default="https://portal.robosms.pk/api",
        description="The API's base: send-message and check-balance live under it.",
    )
    encoding: Literal["json", "form"] = Field(default="json", description="How requests are sent.")
    bulk: bool = Field(
        default=True, description="The same text to many numbers goes as one request (multiple=1)."
    )


class RoboSmsPkSink(HttpSink):
    config_model = RoboSmsPkConfig
    config: RoboSmsPkConfig

    checks_account = True  # check-balance answers for the key without sending

    # The provider's rules.
    largest_bulk: ClassVar[int] = 100  # numbers in one bulk request; the document sets no limit
    id_keys: ClassVar[tuple[str, ...]] = ("id", "message_id", "sms_id", "msg_id", "uuid")

    def recipient(self, e164: str) -> str:
        # 923001234567: E.164 without the plus. Numbers of other countries go as digits too: the
        # provider decides whether it can reach them.
        return e164.removeprefix("+")

    def cost(self, text: str) -> Cost:
        return Cost(count_segments(text).segments, "PK SMS")  # the balance is charged per SMS part

    def groups(self, messages: Sequence[Message]) -> list[list[int]]:
        if not self.config.bulk:
            return super().groups(messages)
        # Same text, different numbers: a number twice in one request could be sent once or twice.
        groups: list[list[int]] = []
        open_by_text: dict[str, list[list[int]]] = {}
        for i, message in enumerate(messages):
            chunks = open_by_text.setdefault(message.text, [])
            for chunk in chunks:
                if len(chunk) < self.largest_bulk and all(messages[j].to != message.to for j in chunk):
                    chunk.append(i)
                    break
            else:
                chunk = [i]
                chunks.append(chunk)
                groups.append(chunk)
        return groups

    def request(self, group: Sequence[Message]) -> httpx.Request:
        fields = {
            "email": self.config.email,
            "key": self.config.key.get_secret_value(),
            "mask": self.config.mask,
            "to": ",".join(self.recipient(m.to) for m in group),
            "message": group[0].text,
        }
        if len(group) > 1:
            fields["multiple"] = "1"
        url = self._endpoint("send-message")
        if self.config.encoding == "json":
            return self.client.build_request("POST", url, json=fields, timeout=self.timeouts)
        return self.client.build_request("POST", url, data=fields, timeout=self.timeouts)

    async def deliver(self, group: Sequence[Message], on_sending: SendingHook) -> list[Outcome]:
        verdict = await self.attempt(group, on_sending)
        if len(group) > 1 and verdict.each is None and verdict.code in PER_NUMBER:
            # The code proves nothing was taken but not which number is bad: one by one, only the
            # bad ones fail.
            log.info(
                "bulk refused for one of its numbers, sending one by one",
                sink=self.name,
                numbers=len(group),
                code=verdict.code,
            )
            alone = await asyncio.gather(*(HttpSink.deliver(self, [m], on_sending) for m in group))
            return [outcomes[0] for outcomes in alone]
        return self.outcomes_of(group, verdict)

    def classify(self, group: Sequence[Message], response: httpx.Response) -> Verdict:
        answers = _answers(response)
        if not answers:
            if response.is_success:
                return Verdict(
                    Kind.AMBIGUOUS,
                    f"unrecognised answer (HTTP {response.status_code}): {body_text(response)}{MAYBE_TAKEN}",
                )
            verdict = lookup(BY_STATUS, response)
            assert verdict is not None, "BY_STATUS covers every status from 300 up"
            return verdict
        if len(answers) == 1:
            (answer,) = answers
            if (
                len(group) > 1
                and len(answer.ids) == len(group)
                and CODES.get(answer.code, _UNKNOWN)[0] is Kind.ACCEPTED
            ):
                each = tuple(self._verdict(response, _Said(answer.code, None, i)) for i in answer.ids)
                return Verdict(Kind.ACCEPTED, f"code {answer.code}", code=answer.code, each=each)
            return self._verdict(response, answer)
        return self._per_number(group, response, answers)

    def _per_number(
        self, group: Sequence[Message], response: httpx.Response, answers: list[_Said]
    ) -> Verdict:
        """A list of results, one per number: matched by number, else by position."""
        by_number = {a.number: a for a in answers if a.number}
        if by_number:
            mine = [by_number.get(self.recipient(m.to)) for m in group]
        elif len(answers) == len(group):
            mine = list(answers)
        else:
            mine = [None] * len(group)
        if any(a is None for a in mine) and len({a.code for a in answers}) == 1:
            return self._verdict(response, answers[0])
        each = tuple(
            self._verdict(response, a)
            if a is not None
            else Verdict(Kind.AMBIGUOUS, f"no result for this number: {body_text(response)}{MAYBE_TAKEN}")
            for a in mine
        )
        return Verdict(each[0].kind, each[0].detail, each=each)

    def _verdict(self, response: httpx.Response, said: _Said) -> Verdict:
        kind, meaning = CODES.get(said.code, _UNKNOWN)
        if kind is Kind.ACCEPTED:
            detail = f"code {said.code}" + (f" id {said.id}" if said.id else "")
            return Verdict(kind, detail, code=said.code)
        return verdict_of(kind, meaning, response, body_text(response), code=said.code)

    async def check(self) -> str:
        url = self._endpoint("check-balance")
        key = self.config.key.get_secret_value()
        try:
            response = await self.client.get(url, params={"key": key}, timeout=self.timeouts)
        except httpx.HTTPError as exc:
            # `from None`: the chained exception carries the url, and the url carries the key.
            raise SinkError(
                f"cannot reach {self.config.url} (check-balance): "
                f"{self.redact(str(exc) or type(exc).__name__)}"
            ) from None
        answers = _answers(response)
        body = json_body(response)
        if answers:
            code = answers[0].code
            kind, meaning = CODES.get(code, _UNKNOWN)
            if kind is Kind.ACCEPTED:
                balance, rate = find_key(body, ("balance",)), find_key(body, ("message_rates", "rate"))
                user = find_key(body, ("username", "user"))
                return f"balance {balance} at {rate} per SMS (user {user})"
            if kind is Kind.ACCOUNT:
                raise AccountError(f"{meaning} (code {code})")
            raise SinkError(
                f"check-balance answered {meaning} (code {code}): {self.redact(body_text(response))}"
            )
        if response.status_code in (401, 402, 403):
            raise AccountError(
                f"check-balance refused the account (HTTP {response.status_code}): "
                f"{self.redact(body_text(response))}"
            )
        raise SinkError(
            f"check-balance answered HTTP {response.status_code} without a code: "
            f"{self.redact(body_text(response))}"
        )

    def _endpoint(self, name: str) -> str:
        return f"{self.config.url.rstrip('/')}/{name}"


@dataclass(frozen=True, slots=True)
class _Said:
    """One code found in an answer, with the number and id it came with."""

    code: str
    number: str | None
    id: str | None
    ids: tuple[str, ...] = ()


_CONTAINERS = ("sms", "response", "data", "result", "results")
_NUMBER_KEYS = ("to", "number", "mobile", "msisdn", "recipient")
_TEXT_CODE = re.compile(r"(?<!\d)(\d{3})(?!\d)")


def _answers(response: httpx.Response) -> list[_Said]:
    """Every code in the answer, tolerant of where the provider puts it: the document shows only
    the balance answer (`{"sms": {"code": "000", ...}}`)."""
    body = json_body(response)
    places: list[Any] = [body]
    if isinstance(body, dict):
        places += [body[k] for k in _CONTAINERS if k in body]
    for place in places:
        if isinstance(place, dict) and _code(place.get("code")) is not None:
            return [_said(place)]
        if isinstance(place, list):
            found = [_said(item) for item in place if isinstance(item, dict) and _code(item.get("code"))]
            if found:
                return found
    if body is None and response.is_success:
        # A plain-text answer: its first known three-digit code. Only on a 2xx: an error page
        # of a proxy says "502" and means the status.
        for match in _TEXT_CODE.finditer(response.text):
            if match.group(1) in CODES:
                return [_Said(match.group(1), None, None)]
    return []


def _said(place: dict[str, Any]) -> _Said:
    code = _code(place.get("code"))
    assert code is not None
    number = find_key(place, _NUMBER_KEYS, depth=0)
    found = find_key(place, RoboSmsPkSink.id_keys, depth=0)
    ids = place.get("ids")
    return _Said(
        code,
        str(number) if number is not None and "," not in str(number) else None,
        str(found) if found is not None else None,
        tuple(str(i) for i in ids) if isinstance(ids, list) else (),
    )


def _code(value: Any) -> str | None:
    """ "000", "0" and 0 are the same code."""
    if isinstance(value, bool):
        return None
    text = str(value).strip() if isinstance(value, str | int) else ""
    return text.zfill(3) if text.isdigit() and len(text) <= 3 else None


# The outcome table: the document's codes. Codes that prove the message was taken are SENT.
CODES: dict[str, tuple[Kind, str]] = {
    "000": (Kind.ACCEPTED, "message queued"),
    "100": (Kind.ACCEPTED, "message sent"),
    "101": (Kind.REFUSED, "message sending failed"),
    "102": (Kind.ACCEPTED, "message handed to telecom"),
    "200": (Kind.ACCEPTED, "success"),
    # Not documented as passing or retryable: failed with the provider's words; a person can
    # write `resend` once they know more. Retrying blindly could pay twice.
    "201": (Kind.REFUSED, "general API error"),
    "202": (Kind.BUG, "required parameters missing"),
    "203": (Kind.ACCOUNT, "invalid API key"),
    "204": (Kind.ACCOUNT, "admin balance insufficient"),
    "205": (Kind.ACCOUNT, "user balance insufficient"),
    "206": (Kind.ACCOUNT, "account suspended or blocked"),
    "210": (Kind.ACCOUNT, "IP not whitelisted"),
    "212": (Kind.ACCOUNT, "mask not authorised"),
    "213": (Kind.REFUSED, "character limit exceeded"),
    "215": (Kind.REFUSED, "invalid number format (0345...)"),
    "216": (Kind.REFUSED, "invalid number format (345...)"),
}
PER_NUMBER = frozenset({"215", "216"})  # in a bulk request: one of its numbers, but which?
_UNKNOWN = (Kind.AMBIGUOUS, "unrecognised code")

"""Emulator of Robo SMS Pakistan, written from the provider's document.

Routes (under ``prefix``, default ``/api``, a trailing slash tolerated):

* ``POST /send-message``: JSON or ``application/x-www-form-urlencoded`` (query-string fields are
  merged underneath, as PHP frameworks do); any other method is HTTP 405.
* ``GET /check-balance?key=...``: ``{"sms": {"code": "000", "balance": "12.50", "username": ...,
  "message_rates": "0.50"}}``; a missing key is 202, a wrong one 203.

Every answer of the API, success or refusal, is HTTP 200 with ``{"sms": {"code": "<code>",
"response": "<meaning from the document>", ...}}``. Success is code ``000`` (queued) and adds
``"ids": [...]`` (one per number, in order), ``"id"`` for a single message, ``"balance"`` left and
``"message_rates"``.

Send checks, in order, first failure answers and nothing is taken:

====  ========================================================================================
202   a field of email, key, mask, to, message missing or empty
203   key wrong, or email not the account's (case-insensitive)
206   ``suspended`` is set
210   ``whitelist_ip`` is set and the client's address is not in it
212   mask not in ``approved_masks`` (default: just ``mask``)
213   message longer than ``max_chars`` (612: four concatenated GSM-7 parts)
215   a number starts with ``0`` (``03451234567``)
216   any other bad number: no ``92`` prefix (``3451234567``), a leading ``+``, not exactly
      ``92`` + 10 digits, or a comma in ``to`` without ``multiple=1``
205   balance < rate * number of recipients (one rate per recipient, whatever the length)
====  ========================================================================================

Bulk (``multiple=1``): ``to`` is split on commas; every number is checked first and the first bad
one's code answers for the whole request, nothing taken. 201 (general error) and 204 (admin
balance) only come from ``inject(Fault(code="201"))``; any code can be forced that way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from tests.emulators.base import JSON_TYPE, Emulator, Fault, HttpRequest, Reply, media_type

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_CHARS = 612
FIELDS = ("email", "key", "mask", "to", "message")

MEANINGS = {
    "000": "Message queued successfully",
    "100": "Message sent successfully",
    "101": "Message sending failed",
    "102": "Message handed to telecom",
    "200": "Success response",
    "201": "General API error",
    "202": "Required parameters missing",
    "203": "Invalid API key",
    "204": "Admin balance insufficient",
    "205": "User balance insufficient",
    "206": "Account suspended or blocked",
    "210": "IP not whitelisted",
    "212": "Masking not authorized",
    "213": "Character limit exceeded",
    "215": "Invalid number format (0345…)",
    "216": "Invalid number format (345…)",
}


class PkEmulator(Emulator):
    uses_codes = True

    def __init__(
        self,
        email: str,
        key: str,
        mask: str = "SMS-ALERT",
        balance: float = 1000.0,
        rate: float = 0.5,
        whitelist_ip: str | Iterable[str] | None = None,
        suspended: bool = False,
        approved_masks: Iterable[str] | None = None,
        *,
        username: str | None = None,
        max_chars: int = MAX_CHARS,
        prefix: str = "/api",
        latency: float = 0.0,
        log: str | Path | None = None,
        record_requests: bool = True,
    ) -> None:
        super().__init__(latency=latency, log=log, record_requests=record_requests)
        self.email = email
        self.key = key
        self.mask = mask
        self.balance = balance
        self.rate = rate
        self.whitelist_ip: set[str] | None = (
            None if whitelist_ip is None
            else {whitelist_ip} if isinstance(whitelist_ip, str)
            else set(whitelist_ip)
        )
        self.suspended = suspended
        self.approved_masks = set(approved_masks) if approved_masks is not None else {mask}
        self.username = username or email.split("@", 1)[0]
        self.max_chars = max_chars
        self.prefix = prefix.rstrip("/")

    def handle(self, request: HttpRequest) -> Reply:
        route = request.path.rstrip("/")
        if route == f"{self.prefix}/send-message":
            if request.method != "POST":
                return _not_allowed(request.method, "POST")
            return self._send(_fields(request), request.client)
        if route == f"{self.prefix}/check-balance":
            if request.method not in ("GET", "HEAD"):
                return _not_allowed(request.method, "GET, HEAD")
            return self._balance(dict(parse_qsl(request.query)), request.client)
        return Reply.json(404, {"message": "Not Found"})

    def fault_reply(self, fault: Fault) -> Reply:
        if fault.code is not None:
            return _answer(fault.code)
        return super().fault_reply(fault)

    def _account_code(self, fields: dict[str, str], client: str) -> str | None:
        if fields.get("key") != self.key:
            return "203"
        if "email" in fields and fields["email"].strip().lower() != self.email.lower():
            return "203"
        if self.suspended:
            return "206"
        if self.whitelist_ip is not None and client not in self.whitelist_ip:
            return "210"
        return None

    def _send(self, fields: dict[str, str], client: str) -> Reply:
        if any(not fields.get(name, "").strip() for name in FIELDS):
            return _answer("202")
        code = self._account_code(fields, client)
        if code is not None:
            return _answer(code)
        if fields["mask"] not in self.approved_masks:
            return _answer("212")
        message = fields["message"]
        if len(message) > self.max_chars:
            return _answer("213")
        bulk = fields.get("multiple", "").strip() == "1"
        numbers = [n.strip() for n in fields["to"].split(",")] if bulk else [fields["to"].strip()]
        numbers = [n for n in numbers if n]
        for number in numbers:
            code = _number_code(number)
            if code is not None:
                return _answer(code)
        cost = self.rate * len(numbers)
        if self.balance < cost:
            return _answer("205")
        self.balance = round(self.balance - cost, 6)
        ids = [self.take(number, message) for number in numbers]
        extra: dict[str, Any] = {
            "ids": ids,
            "balance": _money(self.balance),
            "message_rates": _money(self.rate),
        }
        if not bulk:
            extra["id"] = ids[0]
        return _answer("000", **extra)

    def _balance(self, query: dict[str, str], client: str) -> Reply:
        if not query.get("key", "").strip():
            return _answer("202")
        code = self._account_code(query, client)
        if code is not None:
            return _answer(code)
        return Reply.json(
            200,
            {
                "sms": {
                    "code": "000",
                    "balance": _money(self.balance),
                    "username": self.username,
                    "message_rates": _money(self.rate),
                }
            },
        )


def _fields(request: HttpRequest) -> dict[str, str]:
    fields = dict(parse_qsl(request.query, keep_blank_values=True))
    kind = media_type(request)
    if kind == JSON_TYPE:
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            body = None
        if isinstance(body, dict):
            fields.update({k: _text(v) for k, v in body.items() if v is not None})
    elif kind == FORM_TYPE:
        fields.update(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
    return fields


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)


def _number_code(number: str) -> str | None:
    if number.startswith("0"):
        return "215"
    if len(number) == 12 and number.isdigit() and number.isascii() and number.startswith("92"):
        return None
    return "216"


def _money(value: float) -> str:
    return f"{value:.2f}"


def _answer(code: str, **extra: Any) -> Reply:
    return Reply.json(200, {"sms": {"code": code, "response": MEANINGS.get(code, "Unknown"), **extra}})


def _not_allowed(method: str, allow: str) -> Reply:
    text = f"The {method} method is not supported for this route. Supported methods: {allow}."
    return Reply.json(405, {"message": text}, {"allow": allow})

"""Emulator of Robo SMS (Romania): ``POST /api/sms/``, written from the provider's document.

The document lists its errors but lost their numeric codes, so the HTTP statuses are ours. Checks
run in this order; the first that fails answers, with ``{"error": "<sentence>"}``:

====  ===============================================================================
401   ``Authorization`` is not exactly ``Basic <token>``                (incorrect token)
415   ``Content-Type`` is not ``application/json`` (parameters allowed)  (wrong content type)
400   body empty, ``null``, ``{}`` or not JSON at all                    (json body is empty)
400   ``to`` or ``content`` missing, empty or not a string               (fields missing)
400   ``to`` not valid: no ``+`` prefix and no ``country_code``, or not a valid number for it
      according to phonenumbers                                          (invalid number)
402   ceil(len(content) / 480) credits needed but fewer left             (credits)
402   that many SMS needed but fewer left on the devices                 (devices)
====  ===============================================================================

Anything but POST on the path is 405; any other path is 404.

Success is 200 with ``{"status": "success", "message": "Everything is working as expected.",
"id": "<hex>", "to": "+40740123456", "credits": <used>}``; the credits and the device SMS are
spent, and ``accepted`` gets ``{"to": <E.164>, "text": <content>, "id": <hex>}``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import phonenumbers

from tests.emulators.base import JSON_TYPE, Emulator, HttpRequest, Reply, media_type

CHARS_PER_CREDIT = 480

ERR_MISSING = 'The "to" and/or "content" fields are missing.'
ERR_EMPTY = "The json body is empty."
ERR_CONTENT_TYPE = "The provided data doesn't have the correct content type, expected application/json."
ERR_TOKEN = "Incorrect token."
ERR_CREDITS = "Your contacts number counted from \"to\" is bigger than your credits number."
ERR_NUMBER = (
    "The phone number provided is not valid: it misses the phone number prefix and country_code "
    "is not provided, or it isn't valid for the specified country_code."
)
ERR_DEVICES = (
    "Your sms number calculated is bigger than your remaining sms that could be sent from your "
    "devices (1 SMS represents 480 characters), or there isn't any device that can be used."
)
OK_TEXT = "Everything is working as expected."


class RoEmulator(Emulator):
    def __init__(
        self,
        token: str,
        credits: int = 1_000_000,
        device_sms: int = 1_000_000,
        path: str = "/api/sms/",
        *,
        latency: float = 0.0,
        log: str | Path | None = None,
        record_requests: bool = True,
    ) -> None:
        super().__init__(latency=latency, log=log, record_requests=record_requests)
        self.token = token
        self.credits = credits
        self.device_sms = device_sms
        self.path = path

    def handle(self, request: HttpRequest) -> Reply:
        if request.path.rstrip("/") != self.path.rstrip("/"):
            return Reply.json(404, {"error": "Not found."})
        if request.method != "POST":
            return Reply.json(405, {"error": f'Method "{request.method}" not allowed.'}, {"allow": "POST"})
        if request.headers.get("authorization", "").strip() != f"Basic {self.token}":
            return _error(401, ERR_TOKEN)
        if media_type(request) != JSON_TYPE:
            return _error(415, ERR_CONTENT_TYPE)
        try:
            body: Any = json.loads(request.body) if request.body.strip() else None
        except ValueError:
            body = None
        if not body or not isinstance(body, dict):
            return _error(400, ERR_EMPTY)
        to, content = body.get("to"), body.get("content")
        if not (isinstance(to, str) and to.strip() and isinstance(content, str) and content):
            return _error(400, ERR_MISSING)
        number = _e164(to, body.get("country_code"))
        if number is None:
            return _error(400, ERR_NUMBER)
        needed = max(1, math.ceil(len(content) / CHARS_PER_CREDIT))
        if needed > self.credits:
            return _error(402, ERR_CREDITS)
        if needed > self.device_sms:
            return _error(402, ERR_DEVICES)
        self.credits -= needed
        self.device_sms -= needed
        message_id = self.take(number, content)
        return Reply.json(
            200,
            {"status": "success", "message": OK_TEXT, "id": message_id, "to": number, "credits": needed},
        )


def _error(status: int, sentence: str) -> Reply:
    return Reply.json(status, {"error": sentence})


def _e164(to: str, country_code: object) -> str | None:
    """The number in E.164, or None when the provider would call it invalid."""
    to = to.strip()
    if to.startswith("+"):
        region = None
    elif isinstance(country_code, str) and country_code.strip():
        region = country_code.strip().upper()
    else:
        return None
    try:
        parsed = phonenumbers.parse(to, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

"""robo_sms_pk against the Robo SMS Pakistan emulator on loopback, bulk requests included."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl

import httpx

from connector.events import Message, OutcomeKind
from tests.contract.sink_base import SinkHarness, SinkRig, build_sink, recipients_to_ids
from tests.emulators.base import Fault, HttpRequest, Reply
from tests.emulators.robo_pk import PkEmulator
from tests.emulators.server import EmulatorServer

EMAIL = "contract@example.com"
KEY = "contract-pk-key-8e3a5c0f61"
MASK = "SMS-ALERT"
INVALID = "+3451234567"  # code 216 for this number; in a bulk request it refuses the whole request


def fields(request: dict[str, object]) -> dict[str, str]:
    body = request["body"]
    assert isinstance(body, bytes)
    headers = request["headers"]
    assert isinstance(headers, dict)
    if headers.get("content-type", "").startswith("application/json"):
        return {k: str(v) for k, v in json.loads(body).items()}
    return dict(parse_qsl(body.decode()))


class QuotingPkEmulator(PkEmulator):
    """Robo SMS Pakistan as a careless provider can be: once `quoting`, it refuses the key and
    quotes back the key and email it was sent, so a reason that is not redacted shows the key."""

    quoting = False

    def handle(self, request: HttpRequest) -> Reply:
        if not self.quoting:
            return super().handle(request)
        sent = fields(request.as_dict())
        said = f"Invalid API key {sent.get('key')!r} for {sent.get('email')}"
        return Reply.json(200, {"sms": {"code": "203", "response": said}})


class RoboSmsPkHarness(SinkHarness):
    type_name = "robo_sms_pk"
    secrets = (KEY,)

    @contextlib.asynccontextmanager
    async def rig(self, tmp_path: Path, client: httpx.AsyncClient) -> AsyncIterator[SinkRig]:
        emulator = QuotingPkEmulator(email=EMAIL, key=KEY, mask=MASK)
        # Three numbers share a text (one bulk request, refused for the invalid one, then one by one);
        # one text is on its own.
        messages = [
            Message("pk-0", "+923001234560", "Sale today"),
            Message("pk-1", "+923001234561", "Your order P-1 is confirmed."),
            Message("pk-invalid", INVALID, "Sale today"),
            Message("pk-3", "+923001234563", "Sale today"),
        ]
        ids = recipients_to_ids(messages, lambda e164: e164.removeprefix("+"))

        def requests() -> list[frozenset[str]]:
            return [
                frozenset(ids[to] for to in fields(r)["to"].split(","))
                for r in list(emulator.requests)
                if str(r["path"]).rstrip("/").endswith("/send-message")
            ]

        def expected(message: Message) -> tuple[OutcomeKind, str | None]:
            if message.to == INVALID:
                return OutcomeKind.FAILED, None
            (taken,) = [m for m in emulator.accepted if m["to"] == message.to.removeprefix("+")]
            return OutcomeKind.SENT, f"code 000 id {taken['id']}"

        def force_failure() -> None:
            emulator.inject(Fault(status=503, headers={"Retry-After": "0"}))  # retried first: logged
            emulator.quoting = True

        with EmulatorServer(emulator) as base:
            settings = {"email": EMAIL, "key": KEY, "mask": MASK, "url": f"{base}/api", "timeout": "5s",
                        "max_retry_time": "5s"}
            sink = build_sink(self.type_name, settings, client)
            yield SinkRig(sink, messages, requests, expected, force_failure)

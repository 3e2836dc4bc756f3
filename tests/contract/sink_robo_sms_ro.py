"""robo_sms_ro against the Robo SMS (Romania) emulator on loopback."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from connector.events import Message, OutcomeKind
from tests.contract.sink_base import SinkHarness, SinkRig, build_sink, recipients_to_ids
from tests.emulators.base import Fault, HttpRequest, Reply
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.helpers import ro_mobile

TOKEN = "contract-ro-token-4f9c1d7e2b"
INVALID = "+4012"  # the provider refuses this number, and only this message


class QuotingRoEmulator(RoEmulator):
    """Robo SMS as a careless provider can be: once `quoting`, it refuses the token and quotes
    back the Authorization header it was sent, so a reason that is not redacted shows the token."""

    quoting = False

    def handle(self, request: HttpRequest) -> Reply:
        if not self.quoting:
            return super().handle(request)
        said = request.headers.get("authorization", "")
        return Reply.json(401, {"error": f"Incorrect token: {said!r} is not a token of this account."})


class RoboSmsRoHarness(SinkHarness):
    type_name = "robo_sms_ro"
    secrets = (TOKEN,)

    @contextlib.asynccontextmanager
    async def rig(self, tmp_path: Path, client: httpx.AsyncClient) -> AsyncIterator[SinkRig]:
        emulator = QuotingRoEmulator(token=TOKEN)
        messages = [Message(f"ro-{i}", "+4" + ro_mobile(i), f"Order R-{i} is confirmed.") for i in range(3)]
        messages.insert(1, Message("ro-invalid", INVALID, "Order R-x is confirmed."))
        ids = recipients_to_ids(messages, lambda e164: e164)

        def requests() -> list[frozenset[str]]:
            return [frozenset({ids[json.loads(r["body"])["to"]]}) for r in list(emulator.requests)]

        def expected(message: Message) -> tuple[OutcomeKind, str | None]:
            if message.to == INVALID:
                return OutcomeKind.FAILED, None
            (taken,) = [m for m in emulator.accepted if m["to"] == message.to]
            return OutcomeKind.SENT, taken["id"]

        def force_failure() -> None:
            emulator.inject(Fault(status=503, headers={"Retry-After": "0"}))  # retried first: logged
            emulator.quoting = True

        with EmulatorServer(emulator) as base:
            settings = {"token": TOKEN, "url": f"{base}/api/sms/", "timeout": "5s", "max_retry_time": "5s"}
            sink = build_sink(self.type_name, settings, client)
            yield SinkRig(sink, messages, requests, expected, force_failure)

"""Robo SMS Romania sink: one row per documented answer, against the loopback emulator."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from connector.events import Message, OutcomeKind
from sinks import SINK_TYPES
from sinks.robo_sms_ro import RoboSmsRoConfig, RoboSmsRoSink
from tests.emulators.base import Fault
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.helpers import Hook

TOKEN = "ExampleTokenx0x0x0x0x0x0x0x0x0x0"
NUMBER = "+40740123456"


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RoboSmsRoSink, "first_wait", 0.01)


def make_sink(client: httpx.AsyncClient, base: str, **config: Any) -> RoboSmsRoSink:
    settings = {"type": "robo_sms_ro", "token": TOKEN, "url": f"{base}/api/sms/", "timeout": "2s",
                "connect_timeout": "1s", "max_retry_time": "5s", **config}
    return RoboSmsRoSink("ro", RoboSmsRoConfig.model_validate(settings), client)


@dataclass
class Case:
    id: str
    kind: OutcomeKind
    detail: str  # a part of the outcome's detail
    emulator: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    to: str = NUMBER
    accepted: int = 0
    requests: int = 1
    paused: bool = False


CASES = [
    Case("success", OutcomeKind.SENT, "", accepted=1),
    Case("wrong token", OutcomeKind.HELD, 'wrong token (HTTP 401): {"error": "Incorrect token."}',
         config={"token": "not-the-token"}, paused=True),
    Case("no credits", OutcomeKind.HELD, "not enough credits (HTTP 402)", emulator={"credits": 0},
         paused=True),
    Case("device limit", OutcomeKind.HELD, "no device can send it (HTTP 402)", emulator={"device_sms": 0},
         paused=True),
    Case("invalid number", OutcomeKind.FAILED, "invalid number (HTTP 400): {\"error\": \"The phone number",
         to="+4012"),
    Case("429 then success", OutcomeKind.SENT, "", faults=[Fault(status=429, headers={"Retry-After": "1"})],
         accepted=1, requests=2),
    Case("503 burst then success", OutcomeKind.SENT, "", faults=[Fault(status=503)] * 3, accepted=1,
         requests=4),
    Case("503 beyond max_retry_time", OutcomeKind.HELD, "provider unavailable: provider busy (HTTP 503)",
         config={"max_retry_time": "0.5s"}, faults=[Fault(status=503, headers={"Retry-After": "0.3"})] * 9,
         requests=2, paused=True),
    Case("dropped after body", OutcomeKind.UNKNOWN, "connection dropped before the answer",
         faults=[Fault(drop="after_body")]),
    Case("dropped after body, taken", OutcomeKind.UNKNOWN, "the provider may have taken it",
         faults=[Fault(drop="after_body", accept=True)], accepted=1),
    Case("dropped, retry_ambiguous", OutcomeKind.SENT, "", config={"retry_ambiguous": True},
         faults=[Fault(drop="after_body")], accepted=1, requests=2),
    Case("read timeout", OutcomeKind.UNKNOWN, "read timeout after 0.3s: the provider may have taken it",
         config={"timeout": "300ms"}, faults=[Fault(delay=2.0)], accepted=1),
    Case("500", OutcomeKind.UNKNOWN, "provider error (HTTP 500)", faults=[Fault(status=500)]),
    Case("502", OutcomeKind.UNKNOWN, "provider error (HTTP 502)", faults=[Fault(status=502)]),
    Case("504", OutcomeKind.UNKNOWN, "provider error (HTTP 504)", faults=[Fault(status=504)]),
    Case("500, taken", OutcomeKind.UNKNOWN, "HTTP 500", faults=[Fault(status=500, accept=True)], accepted=1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_outcomes_against_the_emulator(case: Case, client: httpx.AsyncClient) -> None:
    emulator = RoEmulator(token=TOKEN, **case.emulator)
    emulator.inject(*case.faults)
    hook = Hook()
    with EmulatorServer(emulator) as base:
        sink = make_sink(client, base, **case.config)
        (outcome,) = await sink.send([Message("m1", case.to, "Hello from the test")], hook)
    assert outcome.kind is case.kind, outcome.detail
    assert case.detail in outcome.detail
    assert len(emulator.accepted) == case.accepted
    assert len(emulator.requests) == case.requests
    assert hook.calls == [["m1"]] * case.requests  # before every request, retries included
    assert sink.paused is case.paused
    if case.kind is OutcomeKind.SENT:
        assert outcome.detail == emulator.accepted[0]["id"]  # the provider's id, captured


async def test_request_is_exactly_as_documented(client: httpx.AsyncClient) -> None:
    emulator = RoEmulator(token=TOKEN)
    with EmulatorServer(emulator) as base:
        plain = make_sink(client, base)
        with_device = make_sink(client, base, device_id="dev-7")
        await plain.send([Message("m1", NUMBER, "Ce mai faci? ăîșț")], Hook())
        await with_device.send([Message("m2", NUMBER, "second")], Hook())
    first, second = emulator.requests
    assert first["method"] == "POST" and first["path"] == "/api/sms/"
    assert first["headers"]["content-type"] == "application/json"
    assert first["headers"]["authorization"] == f"Basic {TOKEN}"  # the raw token, not base64
    assert json.loads(first["body"]) == {"content": "Ce mai faci? ăîșț", "to": NUMBER}  # no country_code
    assert json.loads(second["body"]) == {"content": "second", "to": NUMBER, "device_id": "dev-7"}
    assert [m["text"] for m in emulator.accepted] == ["Ce mai faci? ăîșț", "second"]


async def test_connection_refused_is_retried_then_held(client: httpx.AsyncClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hook = Hook()
    sink = make_sink(client, f"http://127.0.0.1:{port}", max_retry_time="300ms")
    (outcome,) = await sink.send([Message("m1", NUMBER, "hi")], hook)
    assert outcome.kind is OutcomeKind.HELD
    assert outcome.detail.startswith("sink ro paused: provider unavailable: cannot connect")
    assert len(hook.calls) >= 2  # retried, and declared sending before each try
    assert sink.paused


async def test_account_problem_holds_the_rest_of_the_batch(client: httpx.AsyncClient) -> None:
    emulator = RoEmulator(token=TOKEN, credits=2)
    hook = Hook()
    with EmulatorServer(emulator) as base:
        sink = make_sink(client, base, concurrency=1)
        batch = [Message(f"m{i}", NUMBER, "hi") for i in range(5)]
        outcomes = await sink.send(batch, hook)
        again = await sink.send(batch[:1], hook)
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 2 + [OutcomeKind.HELD] * 3
    assert "not enough credits" in outcomes[2].detail
    assert outcomes[3].detail.startswith("sink ro paused: not enough credits")
    assert len(emulator.requests) == 3 and len(hook.calls) == 3
    assert again[0].kind is OutcomeKind.HELD  # paused: nothing leaves
    assert len(emulator.requests) == 3


async def test_the_token_never_reaches_a_log_or_a_reason(client: httpx.AsyncClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": f"Incorrect token {TOKEN}."})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mocked:
        sink = make_sink(mocked, "http://ro.test")
        with capture_logs() as logs:
            (outcome,) = await sink.send([Message("m1", NUMBER, "hi")], Hook())
    assert TOKEN not in outcome.detail and "Incorrect token ***" in outcome.detail
    assert logs and TOKEN not in repr(logs)


# Answers the emulator cannot be made to give, read by the same table.
MAPPING = [
    ("fields missing", 400, {"error": 'The "to" and/or "content" fields are missing.'}, OutcomeKind.FAILED,
     "request built wrong (HTTP 400)"),
    ("empty body", 400, {"error": "The json body is empty."}, OutcomeKind.FAILED, "request built wrong"),
    ("content type", 415, {"error": "The provided data doesn't have the correct content type."},
     OutcomeKind.FAILED, "request built wrong (HTTP 415)"),
    ("2xx success false", 200, {"success": False, "message": "Invalid phone number"}, OutcomeKind.FAILED,
     "invalid number (HTTP 200)"),
    ("2xx error about credits", 200, {"error": "Not enough credits"}, OutcomeKind.HELD, "not enough credits"),
    ("2xx without id", 200, {"status": "success"}, OutcomeKind.SENT, "HTTP 200"),
    ("2xx message_id", 201, {"data": {"message_id": 77}}, OutcomeKind.SENT, "77"),
    ("2xx not json", 200, "OK", OutcomeKind.SENT, "HTTP 200"),
    ("403", 403, {"error": "Forbidden"}, OutcomeKind.HELD, "wrong token (HTTP 403)"),
    ("unauthorized text", 400, {"error": "Unauthorized"}, OutcomeKind.HELD, "wrong token (HTTP 400)"),
    ("402 without words", 402, {"error": "Payment Required"}, OutcomeKind.HELD, "payment required"),
    ("other 4xx", 422, {"error": "Something else"}, OutcomeKind.FAILED, 'refused (HTTP 422): {"error"'),
    ("other 5xx", 507, {"error": "Insufficient Storage"}, OutcomeKind.UNKNOWN, "provider error (HTTP 507)"),
    ("5xx with number words", 500, {"error": "number service down"}, OutcomeKind.UNKNOWN, "HTTP 500"),
    ("redirect", 301, "", OutcomeKind.HELD, "check the sink's url"),
]


@pytest.mark.parametrize(("status", "body", "kind", "detail"), [m[1:] for m in MAPPING],
                         ids=[m[0] for m in MAPPING])
async def test_answer_mapping(status: int, body: object, kind: OutcomeKind, detail: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mocked:
        sink = make_sink(mocked, "http://ro.test")
        with capture_logs() as logs:
            (outcome,) = await sink.send([Message("m1", NUMBER, "hi")], Hook())
    assert outcome.kind is kind, outcome.detail
    assert detail in outcome.detail
    is_bug = detail.startswith("request built wrong")
    assert any(e["log_level"] == "error" and "malformed" in e["event"] for e in logs) is is_bug


async def test_check_makes_no_request_and_says_why() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("check() must not send anything")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mocked:
        sink = make_sink(mocked, "http://ro.test")
        assert "no balance" in await sink.check()
        assert sink.recipient(NUMBER) == NUMBER


def test_registered() -> None:
    assert SINK_TYPES["robo_sms_ro"] is RoboSmsRoSink
    assert RoboSmsRoSink.config_model is RoboSmsRoConfig

"""Robo SMS Pakistan sink: one row per documented code and failure, against the loopback emulator."""

from __future__ import annotations

import io
import json
import logging
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from structlog.testing import capture_logs

from connector import logs
from connector.errors import AccountError, SinkError
from connector.events import Message, OutcomeKind
from sinks import SINK_TYPES
from sinks.robo_sms_pk import RoboSmsPkConfig, RoboSmsPkSink
from tests.emulators.base import Fault
from tests.emulators.robo_pk import PkEmulator
from tests.emulators.server import EmulatorServer
from tests.helpers import Hook

EMAIL = "ops@example.com"
KEY = "pk-secret-key-123"
MASK = "SMS-ALERT"
NUMBER = "+923001234567"


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RoboSmsPkSink, "first_wait", 0.01)


def make_sink(client: httpx.AsyncClient, base: str, **config: Any) -> RoboSmsPkSink:
    settings = {"type": "robo_sms_pk", "email": EMAIL, "key": KEY, "mask": MASK, "url": f"{base}/api",
                "timeout": "2s", "connect_timeout": "1s", "max_retry_time": "5s", **config}
    return RoboSmsPkSink("pk", RoboSmsPkConfig.model_validate(settings), client)


def fields_of(request: dict[str, Any]) -> dict[str, str]:
    if request["headers"]["content-type"] == "application/json":
        return {k: str(v) for k, v in json.loads(request["body"]).items()}
    return {k: v[0] for k, v in parse_qs(request["body"].decode()).items()}


@dataclass
class Case:
    id: str
    kind: OutcomeKind
    detail: str  # a part of the outcome's detail
    emulator: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    to: str = NUMBER
    text: str = "Your order #12345 has been confirmed."
    accepted: int = 0
    requests: int = 1
    paused: bool = False


def code(value: str, kind: OutcomeKind, detail: str, paused: bool = False) -> Case:
    return Case(f"code {value}", kind, detail, faults=[Fault(code=value)], paused=paused)


CASES = [
    # Every code of the document, forced.
    code("000", OutcomeKind.SENT, "code 000"),
    code("100", OutcomeKind.SENT, "code 100"),
    code("101", OutcomeKind.FAILED, "message sending failed (code 101)"),
    code("102", OutcomeKind.SENT, "code 102"),
    code("200", OutcomeKind.SENT, "code 200"),
    code("201", OutcomeKind.FAILED, "general API error (code 201)"),
    code("202", OutcomeKind.FAILED, "required parameters missing (code 202)"),
    code("203", OutcomeKind.HELD, "invalid API key (code 203)", paused=True),
    code("204", OutcomeKind.HELD, "admin balance insufficient (code 204)", paused=True),
    code("205", OutcomeKind.HELD, "user balance insufficient (code 205)", paused=True),
    code("206", OutcomeKind.HELD, "account suspended or blocked (code 206)", paused=True),
    code("210", OutcomeKind.HELD, "IP not whitelisted (code 210)", paused=True),
    code("212", OutcomeKind.HELD, "mask not authorised (code 212)", paused=True),
    code("213", OutcomeKind.FAILED, "character limit exceeded (code 213)"),
    code("215", OutcomeKind.FAILED, "invalid number format (0345...) (code 215)"),
    code("216", OutcomeKind.FAILED, "invalid number format (345...) (code 216)"),
    code("999", OutcomeKind.UNKNOWN, "unrecognised code (code 999)"),
    # The same answers, earned.
    Case("success", OutcomeKind.SENT, "code 000 id ", accepted=1),
    Case("wrong key", OutcomeKind.HELD, "invalid API key (code 203)", config={"key": "nope"}, paused=True),
    Case("wrong email", OutcomeKind.HELD, "(code 203)", config={"email": "x@example.com"}, paused=True),
    Case("no balance", OutcomeKind.HELD, "(code 205)", emulator={"balance": 0.0}, paused=True),
    Case("suspended", OutcomeKind.HELD, "(code 206)", emulator={"suspended": True}, paused=True),
    Case("ip not whitelisted", OutcomeKind.HELD, "(code 210)", emulator={"whitelist_ip": "10.9.9.9"},
         paused=True),
    Case("mask not approved", OutcomeKind.HELD, "(code 212)", config={"mask": "OTHER"}, paused=True),
    Case("too long", OutcomeKind.FAILED, "(code 213)", text="x" * 700),
    Case("0345 number", OutcomeKind.FAILED, "(code 215)", to="+03451234567"),
    Case("345 number", OutcomeKind.FAILED, "(code 216)", to="+3451234567"),
    # HTTP and network failures: as for every provider.
    Case("429 then success", OutcomeKind.SENT, "code 000",
         faults=[Fault(status=429, headers={"Retry-After": "1"})], accepted=1, requests=2),
    Case("503 burst then success", OutcomeKind.SENT, "code 000", faults=[Fault(status=503)] * 3, accepted=1,
         requests=4),
    Case("dropped after body", OutcomeKind.UNKNOWN, "connection dropped", faults=[Fault(drop="after_body")]),
    Case("dropped, retry_ambiguous", OutcomeKind.SENT, "code 000", config={"retry_ambiguous": True},
         faults=[Fault(drop="after_body")], accepted=1, requests=2),
    Case("read timeout", OutcomeKind.UNKNOWN, "read timeout after 0.3s", config={"timeout": "300ms"},
         faults=[Fault(delay=2.0)], accepted=1),
    Case("500", OutcomeKind.UNKNOWN, "provider error (HTTP 500)", faults=[Fault(status=500)]),
    Case("502", OutcomeKind.UNKNOWN, "provider error (HTTP 502)", faults=[Fault(status=502)]),
    Case("504", OutcomeKind.UNKNOWN, "provider error (HTTP 504)", faults=[Fault(status=504)]),
    Case("401 without code", OutcomeKind.HELD, "credentials refused (HTTP 401)", faults=[Fault(status=401)],
         paused=True),
    Case("404 without code", OutcomeKind.FAILED, "refused (HTTP 404)", faults=[Fault(status=404)]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("encoding", ["json", "form"])
async def test_outcomes_against_the_emulator(case: Case, encoding: str, client: httpx.AsyncClient) -> None:
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK, **case.emulator)
    emulator.inject(*case.faults)
    hook = Hook()
    with EmulatorServer(emulator) as base:
        sink = make_sink(client, base, encoding=encoding, **case.config)
        with capture_logs() as logs:
            (outcome,) = await sink.send([Message("m1", case.to, case.text)], hook)
    assert outcome.kind is case.kind, outcome.detail
    assert case.detail in outcome.detail
    assert len(emulator.accepted) == case.accepted
    assert len(emulator.requests) == case.requests
    assert hook.calls == [["m1"]] * case.requests
    assert sink.paused is case.paused
    if case.accepted and case.kind is OutcomeKind.SENT:
        assert outcome.detail == f"code 000 id {emulator.accepted[0]['id']}"
    assert any("malformed" in e["event"] for e in logs) is (case.id == "code 202")
    assert KEY not in outcome.detail and KEY not in repr(logs)


@pytest.mark.parametrize("encoding", ["json", "form"])
async def test_request_is_exactly_as_documented(encoding: str, client: httpx.AsyncClient) -> None:
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK)
    with EmulatorServer(emulator) as base:
        sink = make_sink(client, base, encoding=encoding)
        await sink.send([Message("m1", NUMBER, "Order 12 & more: 100%")], Hook())
    (request,) = emulator.requests
    assert request["method"] == "POST" and request["path"] == "/api/send-message"
    expected_type = "application/json" if encoding == "json" else "application/x-www-form-urlencoded"
    assert request["headers"]["content-type"] == expected_type
    assert fields_of(request) == {
        "email": EMAIL, "key": KEY, "mask": MASK, "to": "923001234567", "message": "Order 12 & more: 100%"
    }
    assert emulator.accepted[0]["to"] == "923001234567"


@pytest.mark.parametrize("encoding", ["json", "form"])
async def test_bulk_sends_identical_texts_in_one_request(encoding: str, client: httpx.AsyncClient) -> None:
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK)
    numbers = ["+923001234561", "+923001234562", "+923001234563"]
    batch = [Message(f"a{i}", n, "Sale today") for i, n in enumerate(numbers)]
    batch += [Message("b0", numbers[0], "Other text"), Message("c0", numbers[0], "Sale today")]
    hook = Hook()
    with EmulatorServer(emulator) as base:
        sink = make_sink(client, base, encoding=encoding)
        outcomes = await sink.send(batch, hook)
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 5
    by_text: dict[tuple[str, str], dict[str, str]] = {}
    for request in emulator.requests:
        sent = fields_of(request)
        by_text[(sent["message"], sent["to"])] = sent
    assert set(by_text) == {
        ("Sale today", "923001234561,923001234562,923001234563"),
        ("Other text", "923001234561"),
        ("Sale today", "923001234561"),  # the same number twice: not in one request
    }
    assert by_text[("Sale today", "923001234561,923001234562,923001234563")]["multiple"] == "1"
    assert "multiple" not in by_text[("Other text", "923001234561")]
    assert sorted(hook.calls) == [["a0", "a1", "a2"], ["b0"], ["c0"]]
    ids = {(m["to"], m["text"]): m["id"] for m in emulator.accepted if m["text"] == "Sale today"}
    assert len(emulator.accepted) == 5
    assert outcomes[1].detail == f"code 000 id {ids[('923001234562', 'Sale today')]}"  # each its own id


async def test_bulk_groups_are_capped(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RoboSmsPkSink, "largest_bulk", 2)
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK)
    batch = [Message(f"m{i}", f"+92300123456{i}", "same") for i in range(5)]
    with EmulatorServer(emulator) as base:
        outcomes = await make_sink(client, base).send(batch, Hook())
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 5
    assert sorted(len(fields_of(r)["to"].split(",")) for r in emulator.requests) == [1, 2, 2]


async def test_bulk_off_sends_one_request_per_message(client: httpx.AsyncClient) -> None:
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK)
    batch = [Message(f"m{i}", f"+92300123456{i}", "same") for i in range(3)]
    with EmulatorServer(emulator) as base:
        outcomes = await make_sink(client, base, bulk=False).send(batch, Hook())
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 3
    assert len(emulator.requests) == 3
    assert all("multiple" not in fields_of(r) for r in emulator.requests)


async def test_bulk_with_an_invalid_number_is_resent_one_by_one(client: httpx.AsyncClient) -> None:
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK)
    batch = [Message("ok1", "+923001234561", "hi"), Message("bad", "+3451234567", "hi"),
             Message("ok2", "+923001234562", "hi")]
    hook = Hook()
    with EmulatorServer(emulator) as base:
        outcomes = await make_sink(client, base).send(batch, hook)
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT, OutcomeKind.FAILED, OutcomeKind.SENT]
    assert "(code 216)" in outcomes[1].detail
    assert sorted(m["to"] for m in emulator.accepted) == ["923001234561", "923001234562"]
    assert len(emulator.requests) == 4  # the bulk one, refused whole, then one each
    assert hook.calls[0] == ["ok1", "bad", "ok2"] and sorted(hook.calls[1:]) == [["bad"], ["ok1"], ["ok2"]]


async def test_bulk_refused_for_length_fails_all_without_a_resend(client: httpx.AsyncClient) -> None:
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK)
    batch = [Message(f"m{i}", f"+92300123456{i}", "x" * 700) for i in range(3)]
    with EmulatorServer(emulator) as base:
        outcomes = await make_sink(client, base).send(batch, Hook())
    assert [o.kind for o in outcomes] == [OutcomeKind.FAILED] * 3
    assert len(emulator.requests) == 1


async def test_account_problem_holds_the_rest_of_the_batch(client: httpx.AsyncClient) -> None:
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK, balance=1.0, rate=0.5)
    batch = [Message(f"m{i}", f"+92300123456{i}", f"text {i}") for i in range(5)]
    with EmulatorServer(emulator) as base:
        outcomes = await make_sink(client, base, concurrency=1).send(batch, Hook())
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 2 + [OutcomeKind.HELD] * 3
    assert "user balance insufficient" in outcomes[2].detail
    assert outcomes[4].detail.startswith("sink pk paused: user balance insufficient")
    assert len(emulator.requests) == 3


async def test_connection_refused_is_retried_then_held(client: httpx.AsyncClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hook = Hook()
    sink = make_sink(client, f"http://127.0.0.1:{port}", max_retry_time="300ms")
    (outcome,) = await sink.send([Message("m1", NUMBER, "hi")], hook)
    assert outcome.kind is OutcomeKind.HELD
    assert outcome.detail.startswith("sink pk paused: provider unavailable: cannot connect")
    assert len(hook.calls) >= 2 and sink.paused


# -- check-balance --------------------------------------------------------------------------


async def test_check_balance(client: httpx.AsyncClient) -> None:
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK, balance=12.5, rate=0.5, username="yourusername")
    with EmulatorServer(emulator) as base, capture_logs() as logs:
        line = await make_sink(client, base).check()
    assert line == "balance 12.50 at 0.50 per SMS (user yourusername)"
    (request,) = emulator.requests
    assert request["method"] == "GET" and request["path"] == "/api/check-balance"
    assert parse_qs(request["query"]) == {"key": [KEY]}
    assert KEY not in repr(logs)


async def test_the_key_in_the_balance_url_never_reaches_httpx_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    logs.configure("json", "info", secrets=[KEY], stream=io.StringIO())  # as the CLI does, once
    logging.getLogger().addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="httpx")
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK)
    with EmulatorServer(emulator) as base:
        await make_sink(client, base).check()
    assert "check-balance?key=***" in caplog.text  # httpx did log the url
    assert KEY not in caplog.text


@pytest.mark.parametrize(("setup", "meaning"), [
    ({"key": "wrong"}, "invalid API key (code 203)"),
    ({"suspended": True}, "account suspended or blocked (code 206)"),
])
async def test_check_balance_refused(setup: dict[str, Any], meaning: str, client: httpx.AsyncClient) -> None:
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK, suspended=setup.get("suspended", False))
    with EmulatorServer(emulator) as base:
        with pytest.raises(AccountError, match=meaning.replace("(", r"\(").replace(")", r"\)")):
            await make_sink(client, base, key=setup.get("key", KEY)).check()


async def test_check_balance_unreachable_raises_sink_error_without_the_key(client: httpx.AsyncClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SinkError) as raised:
        await make_sink(client, f"http://127.0.0.1:{port}").check()
    assert not isinstance(raised.value, AccountError)
    assert KEY not in str(raised.value) and raised.value.__cause__ is None


async def test_check_balance_server_error_is_a_sink_error(client: httpx.AsyncClient) -> None:
    emulator = PkEmulator(email=EMAIL, key=KEY, mask=MASK)
    emulator.inject(Fault(status=503))
    with EmulatorServer(emulator) as base:
        with pytest.raises(SinkError, match="HTTP 503"):
            await make_sink(client, base).check()


# -- answers the emulator does not give: the tolerant reading --------------------------------

READING = [
    ("code as int", 200, {"sms": {"code": 0}}, OutcomeKind.SENT, "code 000"),
    ("code as '0'", 200, {"code": "0", "message_id": "abc"}, OutcomeKind.SENT, "code 000 id abc"),
    ("code under data", 200, {"data": {"code": "205"}}, OutcomeKind.HELD, "(code 205)"),
    ("code under response", 200, {"response": {"code": 213}}, OutcomeKind.FAILED, "(code 213)"),
    ("plain text", 200, "000 Message queued successfully", OutcomeKind.SENT, "code 000"),
    ("plain text refusal", 200, "Error 216: invalid number", OutcomeKind.FAILED, "(code 216)"),
    ("no code", 200, {"status": "ok"}, OutcomeKind.UNKNOWN, 'unrecognised answer (HTTP 200): {"status"'),
    ("empty 200", 200, "", OutcomeKind.UNKNOWN, "unrecognised answer (HTTP 200)"),
    ("html 502", 502, "<html>502 Bad Gateway</html>", OutcomeKind.UNKNOWN, "provider error (HTTP 502)"),
    ("code on a 4xx", 400, {"sms": {"code": "202"}}, OutcomeKind.FAILED, "(code 202)"),
]


@pytest.mark.parametrize(("status", "body", "kind", "detail"), [r[1:] for r in READING],
                         ids=[r[0] for r in READING])
async def test_answer_reading(status: int, body: object, kind: OutcomeKind, detail: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mocked:
        (outcome,) = await make_sink(mocked, "http://pk.test").send([Message("m1", NUMBER, "hi")], Hook())
    assert outcome.kind is kind, outcome.detail
    assert detail in outcome.detail


async def test_per_number_results_in_a_list() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [
            {"to": "923001234562", "code": "216"},
            {"to": "923001234561", "code": "000", "id": "x1"},
        ]})

    batch = [Message("m1", "+923001234561", "hi"), Message("m2", "+923001234562", "hi"),
             Message("m3", "+923001234563", "hi")]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mocked:
        outcomes = await make_sink(mocked, "http://pk.test").send(batch, Hook())
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT, OutcomeKind.FAILED, OutcomeKind.UNKNOWN]
    assert outcomes[0].detail == "code 000 id x1"


def test_recipient_drops_the_plus_only() -> None:
    sink = RoboSmsPkSink("pk", RoboSmsPkConfig.model_validate(
        {"type": "robo_sms_pk", "email": EMAIL, "key": KEY, "mask": MASK}), httpx.AsyncClient())
    assert sink.recipient("+923001234567") == "923001234567"
    assert sink.recipient("+40740123456") == "40740123456"  # not Pakistani: the provider decides


def test_registered() -> None:
    assert SINK_TYPES["robo_sms_pk"] is RoboSmsPkSink
    assert RoboSmsPkSink.config_model is RoboSmsPkConfig

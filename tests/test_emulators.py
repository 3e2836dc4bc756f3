"""The provider emulators speak their documented APIs over real loopback HTTP, and misbehave on cue."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulators import Fault, PkEmulator, RoEmulator
from tests.emulators.robo_ro import (
    ERR_CONTENT_TYPE,
    ERR_CREDITS,
    ERR_DEVICES,
    ERR_EMPTY,
    ERR_MISSING,
    ERR_NUMBER,
    ERR_TOKEN,
)
from tests.emulators.server import EmulatorServer

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tok-123"
AUTH = {"Authorization": f"Basic {TOKEN}"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
PK_AUTH = {"email": "ops@example.com", "key": "pk-key", "mask": "SMS-ALERT"}


@pytest.fixture
def ro() -> Iterator[tuple[RoEmulator, httpx.Client]]:
    emulator = RoEmulator(token=TOKEN)
    with EmulatorServer(emulator) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield emulator, client


@pytest.fixture
def pk() -> Iterator[tuple[PkEmulator, httpx.Client]]:
    emulator = PkEmulator(email="ops@example.com", key="pk-key")
    with EmulatorServer(emulator) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield emulator, client


def ro_send(client: httpx.Client, body: Any = None, **kwargs: Any) -> httpx.Response:
    if body is None:
        body = {"to": "+40740123456", "content": "Hello"}
    kwargs.setdefault("headers", AUTH)
    return client.post("/api/sms/", json=body, **kwargs)


def pk_send(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {**PK_AUTH, "to": "923001234567", "message": "Hi"} | fields
    response = client.post("/api/send-message", json=body)
    assert response.status_code == 200
    sms: dict[str, Any] = response.json()["sms"]
    return sms


# -- Robo SMS (RO) ---------------------------------------------------------------------------


def test_ro_accepts_an_e164_number_and_spends_one_credit_per_480_characters(
    ro: tuple[RoEmulator, httpx.Client],
) -> None:
    emulator, client = ro
    emulator.credits = 10
    response = ro_send(client, {"to": "+40740123456", "content": "x" * 481})
    assert response.status_code == 200
    answer = response.json()
    assert answer["credits"] == 2
    assert emulator.credits == 8
    assert emulator.accepted == [{"to": "+40740123456", "text": "x" * 481, "id": answer["id"]}]
    assert emulator.requests[0]["headers"]["authorization"] == f"Basic {TOKEN}"
    assert json.loads(emulator.requests[0]["body"])["content"] == "x" * 481


def test_ro_formats_a_national_number_with_country_code(ro: tuple[RoEmulator, httpx.Client]) -> None:
    emulator, client = ro
    response = ro_send(client, {"to": "0723555666", "content": "Hi", "country_code": "RO"})
    assert response.status_code == 200
    assert emulator.accepted[0]["to"] == "+40723555666"


def test_ro_ids_are_unique(ro: tuple[RoEmulator, httpx.Client]) -> None:
    emulator, client = ro
    ids = {ro_send(client).json()["id"] for _ in range(5)}
    assert len(ids) == 5
    assert {m["id"] for m in emulator.accepted} == ids


@pytest.mark.parametrize(
    ("headers", "content", "status", "error"),
    [
        ({"Authorization": "Basic wrong", "Content-Type": "application/json"}, b"{}", 401, ERR_TOKEN),
        ({"Content-Type": "application/json"}, b"{}", 401, ERR_TOKEN),
        ({"Authorization": TOKEN, "Content-Type": "application/json"}, b"{}", 401, ERR_TOKEN),
        ({**AUTH, "Content-Type": "text/plain"}, b'{"to": "+40740123456"}', 415, ERR_CONTENT_TYPE),
        ({**AUTH, "Content-Type": "application/x-www-form-urlencoded"}, b"to=1", 415, ERR_CONTENT_TYPE),
        (AUTH, b'{"to": "+40740123456", "content": "a"}', 415, ERR_CONTENT_TYPE),
        (JSON_AUTH, b"", 400, ERR_EMPTY),
        (JSON_AUTH, b"{}", 400, ERR_EMPTY),
        (JSON_AUTH, b"null", 400, ERR_EMPTY),
        (JSON_AUTH, b'{"content": "a"}', 400, ERR_MISSING),
        (JSON_AUTH, b'{"to": "+40740123456"}', 400, ERR_MISSING),
        (JSON_AUTH, b'{"to": "", "content": "a"}', 400, ERR_MISSING),
        (JSON_AUTH, b'{"to": "0740123456", "content": "a"}', 400, ERR_NUMBER),
        (
            JSON_AUTH,
            b'{"to": "0740123", "content": "a", "country_code": "RO"}',
            400,
            ERR_NUMBER,
        ),
        (JSON_AUTH, b'{"to": "+4074", "content": "a"}', 400, ERR_NUMBER),
    ],
)
def test_ro_refuses_as_documented(
    ro: tuple[RoEmulator, httpx.Client], headers: dict[str, str], content: bytes, status: int, error: str
) -> None:
    emulator, client = ro
    response = client.post("/api/sms/", content=content, headers=headers)
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert emulator.accepted == []
    assert emulator.credits == 1_000_000


def test_ro_refuses_when_credits_run_out(ro: tuple[RoEmulator, httpx.Client]) -> None:
    emulator, client = ro
    emulator.credits = 1
    assert ro_send(client).status_code == 200
    response = ro_send(client)
    assert (response.status_code, response.json()["error"]) == (402, ERR_CREDITS)
    assert len(emulator.accepted) == 1


def test_ro_refuses_above_the_devices_remaining_sms(ro: tuple[RoEmulator, httpx.Client]) -> None:
    emulator, client = ro
    emulator.device_sms = 1
    response = ro_send(client, {"to": "+40740123456", "content": "y" * 500})
    assert (response.status_code, response.json()["error"]) == (402, ERR_DEVICES)
    assert emulator.accepted == []
    assert emulator.credits == 1_000_000


def test_ro_token_can_change_at_runtime(ro: tuple[RoEmulator, httpx.Client]) -> None:
    emulator, client = ro
    emulator.token = "rotated"
    assert ro_send(client).status_code == 401
    assert ro_send(client, headers={"Authorization": "Basic rotated"}).status_code == 200


def test_ro_other_methods_and_paths(ro: tuple[RoEmulator, httpx.Client]) -> None:
    _, client = ro
    assert client.get("/api/sms/", headers=AUTH).status_code == 405
    assert client.post("/api/other", json={}, headers=AUTH).status_code == 404


# -- Robo SMS Pakistan -----------------------------------------------------------------------


def test_pk_sends_json_and_answers_queued(pk: tuple[PkEmulator, httpx.Client]) -> None:
    emulator, client = pk
    sms = pk_send(client)
    assert sms["code"] == "000"
    assert sms["response"] == "Message queued successfully"
    assert sms["ids"] == [sms["id"]]
    assert sms["balance"] == "999.50"
    assert emulator.accepted == [{"to": "923001234567", "text": "Hi", "id": sms["id"]}]


def test_pk_sends_form_encoded(pk: tuple[PkEmulator, httpx.Client]) -> None:
    emulator, client = pk
    response = client.post("/api/send-message", data={**PK_AUTH, "to": "923001234567", "message": "Hi there"})
    assert response.json()["sms"]["code"] == "000"
    assert emulator.requests[0]["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert emulator.accepted[0]["text"] == "Hi there"


def test_pk_bulk_takes_every_number(pk: tuple[PkEmulator, httpx.Client]) -> None:
    emulator, client = pk
    response = client.post(
        "/api/send-message",
        data={**PK_AUTH, "multiple": "1", "to": "923151231015,923151231016", "message": "Sale"},
    )
    sms = response.json()["sms"]
    assert sms["code"] == "000"
    assert len(sms["ids"]) == 2
    assert "id" not in sms
    assert [(m["to"], m["id"]) for m in emulator.accepted] == list(
        zip(["923151231015", "923151231016"], sms["ids"], strict=True)
    )
    assert emulator.balance == 999.0


def test_pk_bulk_with_one_bad_number_takes_nothing(pk: tuple[PkEmulator, httpx.Client]) -> None:
    emulator, client = pk
    sms = pk_send(client, multiple=1, to="923151231015,03451234567")
    assert sms["code"] == "215"
    assert emulator.accepted == []
    assert emulator.balance == 1000.0


@pytest.mark.parametrize(
    ("setup", "fields", "code"),
    [
        ({}, {"email": ""}, "202"),
        ({}, {"key": ""}, "202"),
        ({}, {"mask": ""}, "202"),
        ({}, {"to": ""}, "202"),
        ({}, {"message": ""}, "202"),
        ({}, {"key": "wrong"}, "203"),
        ({}, {"email": "someone@example.com"}, "203"),
        ({"balance": 0.4}, {}, "205"),
        ({"balance": 0.9}, {"multiple": "1", "to": "923001234567,923001234568"}, "205"),
        ({"suspended": True}, {}, "206"),
        ({"whitelist_ip": "10.1.2.3"}, {}, "210"),
        ({}, {"mask": "OTHER"}, "212"),
        ({}, {"message": "z" * 613}, "213"),
        ({}, {"to": "03451234567"}, "215"),
        ({}, {"to": "3451234567"}, "216"),
        ({}, {"to": "+923001234567"}, "216"),
        ({}, {"to": "92300123"}, "216"),
        ({}, {"to": "923001234567,923001234568"}, "216"),
    ],
)
def test_pk_refuses_with_documented_codes(
    pk: tuple[PkEmulator, httpx.Client], setup: dict[str, Any], fields: dict[str, Any], code: str
) -> None:
    emulator, client = pk
    for name, value in setup.items():
        setattr(emulator, name, {value} if name == "whitelist_ip" else value)
    balance = emulator.balance
    sms = pk_send(client, **fields)
    assert sms["code"] == code
    assert sms["response"]
    assert emulator.accepted == []
    assert emulator.balance == balance


def test_pk_whitelisted_ip_and_extra_mask_are_allowed() -> None:
    emulator = PkEmulator(
        email="ops@example.com", key="pk-key", whitelist_ip="127.0.0.1", approved_masks=["SMS-ALERT", "SHOP"]
    )
    with EmulatorServer(emulator) as url, httpx.Client(base_url=url) as client:
        assert pk_send(client, mask="SHOP")["code"] == "000"
    assert len(emulator.accepted) == 1


def test_pk_send_message_refuses_get(pk: tuple[PkEmulator, httpx.Client]) -> None:
    emulator, client = pk
    response = client.get("/api/send-message", params={**PK_AUTH, "to": "923001234567", "message": "Hi"})
    assert response.status_code == 405
    assert "GET" in response.json()["message"]
    assert emulator.accepted == []


def test_pk_check_balance(pk: tuple[PkEmulator, httpx.Client]) -> None:
    emulator, client = pk
    emulator.balance = 12.5
    answer = client.get("/api/check-balance", params={"key": "pk-key"}).json()
    assert answer == {"sms": {"code": "000", "balance": "12.50", "username": "ops", "message_rates": "0.50"}}
    assert client.get("/api/check-balance", params={"key": "nope"}).json()["sms"]["code"] == "203"
    assert client.get("/api/check-balance").json()["sms"]["code"] == "202"


def test_pk_forced_code_answers_once_and_takes_nothing(pk: tuple[PkEmulator, httpx.Client]) -> None:
    emulator, client = pk
    emulator.inject(Fault(code="204"), Fault(code="201"))
    assert pk_send(client)["code"] == "204"
    assert pk_send(client)["code"] == "201"
    assert emulator.accepted == []
    assert pk_send(client)["code"] == "000"
    assert len(emulator.accepted) == 1


def test_provider_codes_are_refused_by_ro() -> None:
    with pytest.raises(ValueError, match="no provider codes"):
        RoEmulator(token="t").inject(Fault(code="205"))


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["2", formatdate(usegmt=True)])
def test_status_fault_with_retry_after(ro: tuple[RoEmulator, httpx.Client], retry_after: str) -> None:
    emulator, client = ro
    emulator.inject(Fault(status=503, headers={"Retry-After": retry_after}))
    response = ro_send(client)
    assert response.status_code == 503
    assert response.headers["retry-after"] == retry_after
    assert response.json() == {"error": "Service Unavailable"}
    assert emulator.accepted == []
    assert emulator.faults_pending == 0
    assert ro_send(client).status_code == 200


def test_status_fault_that_accepted_first(ro: tuple[RoEmulator, httpx.Client]) -> None:
    emulator, client = ro
    emulator.inject(Fault(status=502, accept=True))
    assert ro_send(client).status_code == 502
    assert len(emulator.accepted) == 1


@pytest.mark.parametrize("accept", [False, True])
def test_drop_after_body(ro: tuple[RoEmulator, httpx.Client], accept: bool) -> None:
    emulator, client = ro
    emulator.inject(Fault(drop="after_body", accept=accept))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        ro_send(client)
    assert len(emulator.accepted) == int(accept)
    assert json.loads(emulator.requests[0]["body"])["to"] == "+40740123456"
    assert ro_send(client).status_code == 200


def test_drop_before_body(ro: tuple[RoEmulator, httpx.Client]) -> None:
    emulator, client = ro
    emulator.inject(Fault(drop="before_body"))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        ro_send(client)
    assert emulator.accepted == []
    assert emulator.requests[0]["body"] == b""
    assert ro_send(client).status_code == 200
    assert emulator.connections == 2


def test_fault_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="at most one"):
        Fault(status=500, drop="after_body")
    with pytest.raises(ValueError, match="needs the body"):
        Fault(drop="before_body", accept=True)
    with pytest.raises(ValueError, match="final HTTP status"):
        Fault(status=100)


def test_delay_fault_outlasts_the_read_timeout_and_the_message_was_taken(
    ro: tuple[RoEmulator, httpx.Client],
) -> None:
    emulator, client = ro
    emulator.inject(Fault(delay=5))
    with pytest.raises(httpx.ReadTimeout):
        ro_send(client, timeout=httpx.Timeout(5, read=0.2))
    assert len(emulator.wait_accepted(1)) == 1
    assert ro_send(client).status_code == 200


def test_latency_holds_every_answer(ro: tuple[RoEmulator, httpx.Client]) -> None:
    emulator, client = ro
    emulator.latency = 0.5
    with pytest.raises(httpx.ReadTimeout):
        ro_send(client, timeout=httpx.Timeout(5, read=0.1))
    started = time.monotonic()
    assert ro_send(client).status_code == 200
    assert time.monotonic() - started >= 0.45


def test_faults_are_consumed_in_order_and_reset_forgets(ro: tuple[RoEmulator, httpx.Client]) -> None:
    emulator, client = ro
    emulator.inject(Fault(status=429), Fault(status=500))
    assert [ro_send(client).status_code for _ in range(3)] == [429, 500, 200]
    emulator.inject(Fault(status=429))
    emulator.reset()
    assert (emulator.accepted, emulator.requests, emulator.faults_pending) == ([], [], 0)
    assert ro_send(client).status_code == 200


# -- transport -------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(pk: tuple[PkEmulator, httpx.Client]) -> None:
    emulator, client = pk
    for _ in range(5):
        assert pk_send(client)["code"] == "000"
    assert emulator.connections == 1
    response = client.post(
        "/api/send-message",
        json={**PK_AUTH, "to": "923001234567", "message": "x"},
        headers={"Connection": "close"},
    )
    assert response.json()["sms"]["code"] == "000"
    assert pk_send(client)["code"] == "000"
    assert emulator.connections == 2


def test_malformed_request_gets_400() -> None:
    with EmulatorServer(RoEmulator(token="t")) as url, socket.create_connection(
        ("127.0.0.1", int(url.rsplit(":", 1)[1]))
    ) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 400")


def test_stop_ends_a_held_request() -> None:
    server = EmulatorServer(RoEmulator(token="t", latency=60))
    port = int(server.start().rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /api/sms/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        while not server.emulator.requests:
            time.sleep(0.01)
        server.stop()
        sock.settimeout(10)
        assert sock.recv(1024) == b""


async def test_server_starts_inside_a_running_loop() -> None:
    emulator = PkEmulator(email="ops@example.com", key="pk-key")
    with EmulatorServer(emulator) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.get("/api/check-balance", params={"key": "pk-key"})
    assert response.json()["sms"]["code"] == "000"


@pytest.mark.slow
def test_main_runs_as_a_process_and_logs_accepted_messages(tmp_path: Path) -> None:
    log = tmp_path / "accepted.jsonl"
    command = [sys.executable, "-m", "tests.emulators.server", "ro", "--port", "0", "--token", "T"]
    with subprocess.Popen(
        [*command, "--log", str(log), "--latency", "0.01"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("listening on http://127.0.0.1:")
            url = line.split()[-1]
            response = httpx.post(
                f"{url}/api/sms/",
                json={"to": "+40740123456", "content": "logged"},
                headers={"Authorization": "Basic T"},
            )
            assert response.status_code == 200
            refused = httpx.post(f"{url}/api/sms/", json={}, headers={"Authorization": "Basic T"})
            assert refused.status_code == 400
            lines = log.read_text().splitlines()
            assert [json.loads(x) for x in lines] == [
                {"to": "+40740123456", "text": "logged", "id": response.json()["id"]}
            ]
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0

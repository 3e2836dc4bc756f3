"""Webhook intake over real HTTP: authentication, replays, bad input, events, a slow provider."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from sources.webhook import WebhookConfig
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.webhook_support import (
    HOOK_TOKEN,
    OUTBOX,
    SECRET_NEW,
    SECRET_OLD,
    Served,
    config_text,
    encode,
    order,
    ro_sink,
    serve,
    signed,
)

JSON_TYPE = {"content-type": "application/json"}
BEARER = {**JSON_TYPE, "authorization": f"Bearer {HOOK_TOKEN}"}


@pytest.fixture
async def served(tmp_path: Path) -> Served:
    async with serve(tmp_path, config_text(OUTBOX)) as running:
        yield running


async def test_signed_delivery_is_accepted_and_its_event_visible(served: Served) -> None:
    body = encode(order(1))
    answer = await served.post("/hooks/signed", body, signed(body, "msg_1"))
    assert answer.status_code == 202, answer.text
    payload = answer.json()
    assert payload["delivery"] == "msg_1"
    assert payload["records"] == 1
    [event] = payload["events"]
    assert event["rule"] == "notify"
    assert event["record"] == 0
    assert event["state"] in {"pending", "sending", "sent"}
    seen = await served.wait_state(event["id"], "sent")
    assert seen["source"] == "signed"
    assert seen["rule"] == "notify"
    assert seen["to"] == "+********001"  # +40741000001, all but the last 3 digits masked
    assert "Customer" not in json.dumps(seen)  # never the message text
    assert [m["to"] for m in served.outbox()] == ["+40741000001"]


async def test_replayed_webhook_id_gets_the_first_answer_and_sends_nothing(served: Served) -> None:
    body = encode(order(2))
    first = await served.post("/hooks/signed", body, signed(body, "msg_replay"))
    assert first.status_code == 202
    await served.wait_state(first.json()["events"][0]["id"], "sent")
    # A retry of the same delivery, and a later one with the same id but another body.
    again = await served.post("/hooks/signed", body, signed(body, "msg_replay"))
    other = encode(order(3))
    reused = await served.post("/hooks/signed", other, signed(other, "msg_replay"))
    assert again.status_code == reused.status_code == 202
    assert again.content == first.content == reused.content
    # Its id again on a body that is no longer readable: still the first answer, not a 400.
    broken = b'{"order": '
    garbled = await served.post("/hooks/signed", broken, signed(broken, "msg_replay"))
    assert (garbled.status_code, garbled.content) == (202, first.content)
    fresh = await served.post("/hooks/signed", broken, signed(broken, "msg_fresh"))
    assert fresh.status_code == 400 and fresh.json()["error"] == "invalid_json"
    await served.runtime.engine.drain()
    assert len(served.outbox()) == 1


async def test_bearer_retry_of_the_same_body_sends_once(served: Served) -> None:
    body = encode(order(4))
    first = await served.post("/hooks/bearer", body, BEARER)
    second = await served.post("/hooks/bearer", body, BEARER)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert first.json()["delivery"].startswith("sha256-")
    await served.runtime.engine.drain()
    assert len(served.outbox()) == 1


async def test_items_make_one_record_each_and_key_column_identifies_them(served: Served) -> None:
    body = encode({"orders": [order(10), order(11), order(12)], "shop": "x"})
    answer = await served.post("/hooks/open", body, JSON_TYPE)
    assert answer.status_code == 202, answer.text
    payload = answer.json()
    assert payload["records"] == 3
    assert [e["record"] for e in payload["events"]] == [0, 1, 2]
    # The same orders under a new webhook-id: key_column says they are the same records.
    again = await served.post("/hooks/open", body, {**JSON_TYPE, "webhook-id": "another"})
    assert {e["state"] for e in again.json()["events"]} == {"skipped"}
    await served.runtime.engine.drain()
    assert sorted(m["to"] for m in served.outbox()) == ["+40740000010", "+40741000011", "+40742000012"]


async def test_record_no_rule_wants_and_record_failing_its_rule(served: Served) -> None:
    body = encode({"orders": [order(20, phone="not a number"), {"order": "W-21", "name": "x"}]})
    answer = await served.post("/hooks/open", body, JSON_TYPE)
    assert answer.status_code == 202, answer.text
    events = answer.json()["events"]
    # Both records fail their rule (bad number, missing field): accepted, failed, with the reason.
    assert [e["state"] for e in events] == ["failed", "failed"]
    assert all(e["reason"] for e in events)
    shown = (await served.event(events[1]["id"])).json()
    assert shown["state"] == "failed"
    assert "phone" in shown["reason"]
    assert served.outbox() == []


async def test_unknown_event_is_a_json_404(served: Served) -> None:
    answer = await served.event("0" * 32)
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"


# -- authentication -------------------------------------------------------------------------


async def test_rotation_accepts_either_secret_and_refuses_others(served: Served) -> None:
    body = encode(order(30))
    old = await served.post("/hooks/signed", body, signed(body, "msg_old", secret=SECRET_OLD))
    assert old.status_code == 202
    body = encode(order(31))
    new = await served.post("/hooks/signed", body, signed(body, "msg_new", secret=SECRET_NEW))
    assert new.status_code == 202
    stranger = "whsec_" + "c3RyYW5nZXIgc2VjcmV0IGtleSAxMjM0NTY3OA=="
    body = encode(order(32))
    refused = await served.post("/hooks/signed", body, signed(body, "msg_x", secret=stranger))
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"


async def test_several_signatures_in_one_header(served: Served) -> None:
    body = encode(order(33))
    good = signed(body, "msg_multi")
    stranger = signed(body, "msg_multi", secret="whsec_" + "b3RoZXIgc2VjcmV0IGJ5dGVzIGZvciB0ZXN0cw==")
    headers = {**good, "webhook-signature": f"{stranger['webhook-signature']} {good['webhook-signature']}"}
    answer = await served.post("/hooks/signed", body, headers)
    assert answer.status_code == 202, answer.text


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
async def test_timestamp_outside_five_minutes_is_refused(served: Served, skew: timedelta) -> None:
    body = encode(order(34))
    headers = signed(body, "msg_old_ts", when=datetime.now(UTC) + skew)
    answer = await served.post("/hooks/signed", body, headers)
    assert answer.status_code == 401
    assert "timestamp" in answer.json()["detail"]


async def test_a_body_changed_after_signing_is_refused(served: Served) -> None:
    body = encode(order(35))
    headers = signed(body, "msg_tampered")
    answer = await served.post("/hooks/signed", encode(order(36)), headers)
    assert answer.status_code == 401
    assert served.outbox() == []


MALFORMED_SIGNED = [
    ("no signature header", {"webhook-signature": None}, 401),
    ("no id header", {"webhook-id": None}, 401),
    ("signature without comma", {"webhook-signature": "v1abc"}, 401),
    ("signature with two commas", {"webhook-signature": "v1,a,b"}, 401),
    ("signature not base64", {"webhook-signature": "v1,!!!not-base64!!!"}, 401),
    ("unknown version only", {"webhook-signature": "v9,AAAA"}, 401),
    ("empty signature", {"webhook-signature": ""}, 401),
    ("timestamp not a number", {"webhook-timestamp": "yesterday"}, 401),
    ("timestamp nan", {"webhook-timestamp": "nan"}, 401),
    ("timestamp huge", {"webhook-timestamp": "1e400"}, 401),
    ("timestamp overflow", {"webhook-timestamp": "99999999999999999999"}, 401),
]


@pytest.mark.parametrize(("case", "change", "status"), MALFORMED_SIGNED, ids=[c[0] for c in MALFORMED_SIGNED])
async def test_malformed_signature_headers_are_4xx_never_500(
    served: Served, case: str, change: dict[str, str | None], status: int
) -> None:
    body = encode(order(40))
    headers = signed(body, "msg_malformed")
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with capture_logs() as logs:
        answer = await served.post("/hooks/signed", body, headers)
    assert answer.status_code == status, (case, answer.text)
    assert set(answer.json()) == {"error", "detail"}
    refused = [e for e in logs if e["event"] == "webhook refused"]
    assert refused and refused[0]["reason"]
    logged = json.dumps(logs)
    assert SECRET_NEW not in logged
    if headers.get("webhook-signature"):
        assert headers["webhook-signature"] not in logged


async def test_non_utf8_body_on_a_signed_source_is_400(served: Served) -> None:
    body = b'{"name": "\xff\xfe"}'
    headers = signed(b"{}", "msg_bytes")
    answer = await served.post("/hooks/signed", body, headers)
    assert answer.status_code == 400
    assert answer.json()["error"] == "bad_request"


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", "Basic " + HOOK_TOKEN, "Bearer", HOOK_TOKEN, b"Bearer \xe9"]
)
async def test_bearer_token_missing_or_wrong_is_401(
    served: Served, authorization: str | bytes | None
) -> None:
    headers: dict[str, str | bytes] = dict(JSON_TYPE)
    if authorization is not None:
        headers["authorization"] = authorization
    with capture_logs() as logs:
        answer = await served.client.post(
            served.url + "/hooks/bearer", content=encode(order(50)), headers=headers
        )
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert HOOK_TOKEN not in json.dumps(logs)
    assert served.outbox() == []


async def test_auth_none_takes_unsigned_deliveries(served: Served) -> None:
    answer = await served.post("/hooks/open", encode({"orders": [order(51)]}), JSON_TYPE)
    assert answer.status_code == 202


# -- bad input ------------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    return ('{"orders": [' + '{"a": ' * depth + "1" + "}" * depth + "]}").encode()


BAD_INPUT = [
    ("not json", b"{not json", JSON_TYPE, 400, "invalid_json"),
    ("empty body", b"", JSON_TYPE, 400, "invalid_json"),
    ("not utf-8", b'{"orders": ["\xff"]}', JSON_TYPE, 400, "invalid_json"),
    ("NaN", b'{"orders": [{"x": NaN}]}', JSON_TYPE, 400, "invalid_json"),
    ("huge integer", b'{"orders": [{"x": ' + b"9" * 5000 + b"}]}", JSON_TYPE, 400, "invalid_json"),
    ("text/plain", encode({"orders": []}), {"content-type": "text/plain"}, 415, "unsupported_media_type"),
    ("no content type", encode({"orders": []}), {}, 415, "unsupported_media_type"),
    ("array", encode([order(1)]), JSON_TYPE, 422, "not_an_object"),
    ("string", encode("hello"), JSON_TYPE, 422, "not_an_object"),
    ("items missing", encode({"order": order(1)}), JSON_TYPE, 422, "missing_items"),
    ("items not a list", encode({"orders": order(1)}), JSON_TYPE, 422, "invalid_items"),
    ("items not objects", encode({"orders": [order(1), 5]}), JSON_TYPE, 422, "invalid_items"),
    ("too deep", _nested(40), JSON_TYPE, 422, "too_deep"),
    ("deep enough to crash a recursive parser", b"[" * 200_000 + b"]" * 200_000, JSON_TYPE, 422, "too_deep"),
    ("too many items", encode({"orders": [{"i": i} for i in range(1001)]}), JSON_TYPE, 413, "too_many_items"),
    ("long webhook-id", encode({}), {**JSON_TYPE, "webhook-id": "x" * 300}, 400, "invalid_webhook_id"),
]


@pytest.mark.parametrize(
    ("case", "body", "headers", "status", "error"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
async def test_bad_input_is_a_clear_4xx_and_stores_nothing(
    served: Served, case: str, body: bytes, headers: dict[str, str], status: int, error: str
) -> None:
    answer = await served.post("/hooks/open", body, headers)
    assert answer.status_code == status, (case, answer.text)
    assert answer.json()["error"] == error
    assert answer.json()["detail"]
    counts = await served.runtime.ledger.counts()
    assert counts == []
    # ... and the server keeps serving.
    assert (await served.client.get(served.url + "/healthz")).status_code == 200


async def test_body_over_max_body_is_413_without_reading_it_all(tmp_path: Path) -> None:
    small = "  small:\n    type: webhook\n    path: /hooks/small\n    auth: none\n    max_body: 1000\n"
    async with serve(tmp_path, config_text(OUTBOX, extra_sources=small)) as served:
        declared = await served.post("/hooks/small", b"{" + b" " * 2000 + b"}", JSON_TYPE)
        assert declared.status_code == 413
        assert declared.json()["error"] == "too_large"

        async def chunks() -> object:
            # No Content-Length: the limit must hold while the stream is read.
            for _ in range(10_000):
                yield b" " * 1024

        streamed = await served.client.post(served.url + "/hooks/small", content=chunks(), headers=JSON_TYPE)
        assert streamed.status_code == 413
        ok = await served.post("/hooks/small", encode(order(60)), JSON_TYPE)
        assert ok.status_code == 202


async def test_wrong_method_and_unknown_path_answer_json(served: Served) -> None:
    wrong = await served.client.get(served.url + "/hooks/open")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"
    missing = await served.client.post(served.url + "/hooks/nowhere", content=b"{}", headers=JSON_TYPE)
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


# -- a slow or paused provider does not slow the intake ---------------------------------------


async def test_202_does_not_wait_on_a_slow_provider(tmp_path: Path) -> None:
    emulator = RoEmulator(token="ro-token", latency=2.0)
    with EmulatorServer(emulator) as url:
        async with serve(tmp_path, config_text(ro_sink(url, "ro-token"), sink="ro")) as served:
            bodies = [encode(order(70 + i)) for i in range(5)]
            answers = await asyncio.gather(*(served.post("/hooks/bearer", b, BEARER) for b in bodies))
            assert [a.status_code for a in answers] == [202] * 5
            # Every 202 came back while the provider still held every request (2 s each): none of
            # them has an answer yet. (The emulator may already have read a request: it takes a
            # message on reading, answers 2 s later.)
            states = {a.json()["events"][0]["state"] for a in answers}
            assert states <= {"pending", "sending"}
            now = [(await served.event(a.json()["events"][0]["id"])).json()["state"] for a in answers]
            assert set(now) <= {"pending", "sending"}
            for answer in answers:
                await served.wait_state(answer.json()["events"][0]["id"], "sent")
        assert len(emulator.accepted) == 5


async def test_paused_sink_holds_records_pending_and_still_answers(tmp_path: Path) -> None:
    emulator = RoEmulator(token="ro-token")
    with EmulatorServer(emulator) as url:
        async with serve(tmp_path, config_text(ro_sink(url, "ro-token"), sink="ro")) as served:
            served.runtime.sinks["ro"].pause("no credits left")
            answer = await served.post("/hooks/bearer", encode(order(80)), BEARER)
            assert answer.status_code == 202
            event_id = answer.json()["events"][0]["id"]
            await served.runtime.engine.drain()
            assert (await served.event(event_id)).json()["state"] == "pending"
            assert emulator.accepted == []


# -- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"path": "/healthz", "auth": "none"}, "taken by the server"),
        ({"path": "/events/x", "auth": "none"}, "taken by the server"),
        ({"path": "/h", "secret": "whsec_!!!"}, "Standard Webhooks secret"),
        ({"path": "/h", "secret": [SECRET_OLD, "whsec_"]}, "Standard Webhooks secret"),
        ({"path": "/h", "auth": "none", "max_body": 0}, "max_body"),
    ],
)
def test_config_refuses_unservable_settings(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WebhookConfig.model_validate({"type": "webhook", **fields})

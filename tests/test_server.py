"""The HTTP server of `connector run`: health, metrics, OpenAPI, lifecycle, and a kill -9 restart."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector.errors import ConnectorError
from connector.ledger import State, open_ledger
from connector.server import HttpServer, mask_number
from sinks.base import STOPPED
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.helpers import start_connector, wait_for
from tests.webhook_support import (
    HOOK_TOKEN,
    OUTBOX,
    Served,
    config_text,
    encode,
    order,
    ro_sink,
    serve,
    signed,
)

BEARER = {"content-type": "application/json", "authorization": f"Bearer {HOOK_TOKEN}"}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(tmp_path, config_text(OUTBOX)) as running:
        yield running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


# -- /healthz -------------------------------------------------------------------------------


async def sweeping(served: Served) -> None:
    """Until the first sweep of held messages has taken the sweeper's hold (at start-up)."""
    for _ in range(100):
        if "job:sweeper" in served.runtime.ledger.held:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the sweeper never ran")


async def test_healthz_reports_ledger_and_each_sink(served: Served) -> None:
    await sweeping(served)
    answer = await served.client.get(served.url + "/healthz")
    assert answer.status_code == 200
    active = {"outbox": {"state": "active", "reason": ""}}
    health = answer.json()
    instance = health.pop("instance")
    assert health == {"status": "ok", "ledger": "ok", "sinks": active}
    assert instance["id"] == served.runtime.ledger.instance_id
    assert 0 < instance["lease_left_s"] <= 30
    assert "job:sweeper" in instance["holds"]  # the one instance sweeping held messages
    served.runtime.sinks["outbox"].pause("no credits left")
    paused = (await served.client.get(served.url + "/healthz")).json()
    assert paused["sinks"]["outbox"] == {"state": "paused", "reason": "no credits left"}
    assert paused["status"] == "ok"  # a paused sink is news for people, not a dead process


async def test_healthz_is_503_when_the_ledger_cannot_be_reached(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable() -> None:
        raise OSError("database is locked")

    monkeypatch.setattr(served.runtime.ledger, "ping", unreachable)
    answer = await served.client.get(served.url + "/healthz")
    assert answer.status_code == 503
    assert answer.json()["status"] == "unavailable"
    assert answer.json()["ledger"] == "unreachable"


async def test_healthz_is_503_once_the_lease_has_lapsed(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ledger answers, but this process could not renew its lease (an outage, a long pause):
    # whatever it claimed may be another instance's by now, and a load balancer should know.
    monkeypatch.setattr(served.runtime.ledger, "renewed", -1e9)
    answer = await served.client.get(served.url + "/healthz")
    assert answer.status_code == 503
    assert answer.json()["ledger"] == "lease lapsed"
    assert answer.json()["instance"]["lease_left_s"] == 0


# -- /metrics -------------------------------------------------------------------------------


async def test_metrics_parse_and_move_with_deliveries_and_sends(served: Served) -> None:
    before = samples((await served.client.get(served.url + "/metrics")).text)
    assert ("connector_sink_paused", (("sink", "outbox"),)) in before
    body = encode({"orders": [order(1), order(2)]})
    accepted = await served.post("/hooks/open", body, {"content-type": "application/json"})
    assert accepted.status_code == 202
    await served.post("/hooks/open", body, {"content-type": "application/json"})  # a replay
    refused = await served.post("/hooks/bearer", encode(order(3)), {"content-type": "application/json"})
    assert refused.status_code == 401
    await served.runtime.engine.drain()
    await sweeping(served)

    scrape = await served.client.get(served.url + "/metrics")
    assert scrape.headers["content-type"].startswith("text/plain")
    after = samples(scrape.text)
    assert after[("connector_webhook_records_received_total", (("source", "open"),))] == 2
    assert after[("connector_webhook_deliveries_total", (("source", "open"), ("status", "202")))] == 2
    assert after[("connector_webhook_deliveries_total", (("source", "bearer"), ("status", "401")))] == 1
    assert after[("connector_sends_total", (("outcome", "sent"), ("sink", "outbox")))] == 2
    assert after[("connector_send_latency_seconds_count", (("sink", "outbox"),))] >= 1
    ledger = ("connector_ledger_entries", (("rule", "notify"), ("source", "open"), ("state", "sent")))
    assert after[ledger] == 2
    assert 0 < after[("connector_instance_lease_seconds", ())] <= 30
    assert after[("connector_instance_holds", (("hold", "job:sweeper"),))] == 1


# -- /openapi.json --------------------------------------------------------------------------


async def test_openapi_describes_every_endpoint(served: Served) -> None:
    document = (await served.client.get(served.url + "/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/hooks/signed",
        "/hooks/bearer",
        "/hooks/open",
        "/events/{id}",
        "/healthz",
        "/metrics",
        "/",
        "/records/{id}",
    }
    open_hook = document["paths"]["/hooks/open"]["post"]
    assert open_hook["requestBody"]["content"]["application/json"]["schema"]["required"] == ["orders"]
    for status in ("400", "401", "413", "415", "422"):
        schema = open_hook["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
    signed_params = {p["name"] for p in document["paths"]["/hooks/signed"]["post"]["parameters"]}
    assert signed_params == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert "Error" in document["components"]["schemas"]


# -- lifecycle ------------------------------------------------------------------------------


async def test_a_port_another_program_holds_is_a_clear_error(served: Served) -> None:
    assert served.runtime.server is not None
    with socket.socket() as taken:  # a program that does not share its port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        other = HttpServer(served.runtime.server.app, "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(ConnectorError, match=r"cannot listen on 127\.0\.0\.1"):
            await other.start()


async def test_a_second_instance_on_the_host_shares_the_port(served: Served) -> None:
    # A rolling restart on one host: the new process listens while the old one drains.
    assert served.runtime.server is not None
    port = served.runtime.server.port
    second = HttpServer(served.runtime.server.app, "127.0.0.1", port)
    await second.start()
    try:
        async with httpx.AsyncClient() as client:
            answers = [(await client.get(f"http://127.0.0.1:{port}/healthz")).status_code for _ in range(4)]
        assert answers == [200] * 4
    finally:
        await second.stop()


async def test_stopping_answers_the_delivery_in_flight_refuses_new_ones_and_sends_nothing_more(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path, config_text(OUTBOX)) as served:
        body = encode(order(5))
        headers = signed(body, "msg_in_flight")
        reading = asyncio.Event()
        release = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield body[:5]
            reading.set()
            await release.wait()
            yield body[5:]

        hook = served.url + "/hooks/signed"
        posting = asyncio.create_task(served.client.post(hook, content=slow_body(), headers=headers))
        await reading.wait()
        served.runtime.stopping.set()
        assert served.runtime.server is not None
        late_body = encode(order(6))
        late = await served.post("/hooks/signed", late_body, signed(late_body, "msg_late"))
        assert late.status_code == 503
        assert late.json()["error"] == "stopping" and late.headers["retry-after"] == "10"
        assert (await served.client.get(served.url + "/healthz")).status_code == 200  # still serving
        release.set()
        answer = await posting
        assert answer.status_code == 202
        event_id = answer.json()["events"][0]["id"]
        url = served.url
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as fresh:
            await fresh.get(url + "/healthz")
    # Taken in, not sent: it waits in the ledger for the next start (SPEC "Stopping").
    assert served.outbox() == []
    ledger = await open_ledger("sqlite:///connector.db", tmp_path)
    try:
        [entry] = await ledger.entries([event_id])
        late_entries = await ledger.counts()
    finally:
        await ledger.close()
    assert (entry.state, entry.detail) == (State.PENDING, STOPPED)
    assert sum(c.count for c in late_entries) == 1  # the refused delivery left nothing behind


def test_mask_number_keeps_only_the_last_three_digits() -> None:
    assert mask_number("+40740123456") == "+********456"
    assert mask_number("923001234567") == "*********567"
    assert mask_number("12") == "12"
    assert mask_number("") == ""


# -- a restart between the 202 and the send -------------------------------------------------


@pytest.mark.slow
def test_kill_9_after_the_202_then_restart_sends_exactly_once(tmp_path: Path) -> None:
    provider_port, port = free_port(), free_port()
    provider = f"http://127.0.0.1:{provider_port}"
    text = config_text(ro_sink(provider, "ro-token", "    connect_timeout: 500ms\n"), sink="ro", port=port)
    (tmp_path / "config.yaml").write_text(text)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "connector.log"

    def get(path: str) -> httpx.Response | None:
        try:
            return httpx.get(base + path, timeout=5)
        except httpx.TransportError:
            return None

    def state(event_id: str) -> str:
        answer = get(f"/events/{event_id}")
        return "" if answer is None else str(answer.json().get("state"))

    def held(event_id: str) -> bool:
        # A fresh claim is pending too, with no reason; held after the refused attempts, it has one.
        answer = get(f"/events/{event_id}")
        return answer is not None and answer.json()["state"] == "pending" and bool(answer.json()["reason"])

    first = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
    try:
        wait_for(lambda: get("/healthz") is not None, timeout=30, what="the first server")
        body = encode(order(9))
        accepted = httpx.post(base + "/hooks/bearer", content=body, headers=BEARER, timeout=10)
        assert accepted.status_code == 202, accepted.text
        event_id = accepted.json()["events"][0]["id"]
        # The provider is down: the send is refused, retried, then held (pending) behind the ledger.
        wait_for(lambda: held(event_id), timeout=30, what="the send held while the provider is down")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

    emulator = RoEmulator(token="ro-token")
    with EmulatorServer(emulator, port=provider_port):
        second = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        try:
            wait_for(lambda: state(event_id) == "sent", timeout=60, what="the held send after restart")
            again = httpx.post(base + "/hooks/bearer", content=body, headers=BEARER, timeout=10)
            assert again.status_code == 202
            assert again.json() == accepted.json()  # answered from the first delivery
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
    assert len(emulator.accepted) == 1
    assert emulator.accepted[0]["to"] == "+40749000009"
    output = log.read_text()
    assert HOOK_TOKEN not in output
    assert json.dumps("ro-token") not in output

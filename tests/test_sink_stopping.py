"""A provider's `Retry-After` holds the whole sink; `stop()` and `abort()` end sends as SPEC "Stopping"
says. Real HTTP over loopback against the RO emulator, on both client transports."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from connector.events import Message, OutcomeKind
from sinks.base import STOPPED
from sinks.http import ABORTED
from sinks.robo_sms_ro import RoboSmsRoConfig, RoboSmsRoSink
from tests.emulators.base import Fault
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer
from tests.helpers import Hook

TOKEN = "ExampleTokenx0x0x0x0x0x0x0x0x0x0"


def make_sink(client: httpx.AsyncClient, base: str, **config: Any) -> RoboSmsRoSink:
    settings = {"type": "robo_sms_ro", "token": TOKEN, "url": f"{base}/api/sms/", "timeout": "60s",
                "connect_timeout": "1s", "max_retry_time": "30s", **config}
    return RoboSmsRoSink("ro", RoboSmsRoConfig.model_validate(settings), client)


def batch(count: int) -> list[Message]:
    return [Message(f"m{i}", f"+407401234{i:02d}", f"hello {i}") for i in range(count)]


async def until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# -- Retry-After holds every request of the sink ---------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_holds_the_other_messages_too(client: httpx.AsyncClient, status: int) -> None:
    emulator = RoEmulator(token=TOKEN)
    emulator.inject(Fault(status=status, headers={"Retry-After": "1"}))
    with EmulatorServer(emulator) as base:
        # One request at a time: the slot is free while the first message waits out its Retry-After,
        # so only the hold keeps the next messages from going at once.
        sink = make_sink(client, base, concurrency=1)
        outcomes = await sink.send(batch(4), Hook())
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 4
    first, *rest = emulator.requests
    answered_at = first["at"]  # latency 0: answered as it was read
    assert len(rest) == 4
    # Nothing reached the provider within the second it asked for, from any message.
    assert min(r["at"] for r in rest) - answered_at >= 0.95


async def test_requests_already_on_the_wire_are_not_recalled_but_nothing_new_leaves(
    client: httpx.AsyncClient,
) -> None:
    emulator = RoEmulator(token=TOKEN, latency=0.05)
    emulator.inject(Fault(status=429, headers={"Retry-After": "1"}))
    with EmulatorServer(emulator) as base:
        sink = make_sink(client, base, concurrency=4)
        outcomes = await sink.send(batch(12), Hook())
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 12
    times = sorted(r["at"] for r in emulator.requests)
    refused_at = emulator.requests[0]["at"] + 0.05  # when its 429 was answered
    early = [t for t in times if t > refused_at + 0.02 and t - refused_at < 0.95]
    # The first wave of four was already sent; after the 429 came back, the sink waited.
    assert early == []
    assert len(emulator.requests) == 13


# -- stop(): nothing new leaves --------------------------------------------------------------------


async def test_stop_lets_requests_on_the_wire_finish_and_holds_the_queue(client: httpx.AsyncClient) -> None:
    emulator = RoEmulator(token=TOKEN, latency=0.5)
    with EmulatorServer(emulator) as base:
        sink = make_sink(client, base, concurrency=2)
        hook = Hook()
        sending = asyncio.create_task(sink.send(batch(10), hook))
        await until(lambda: len(emulator.requests) == 2)
        sink.stop()
        outcomes = await sending
    kinds = [o.kind for o in outcomes]
    assert kinds.count(OutcomeKind.SENT) == 2 and kinds.count(OutcomeKind.HELD) == 8
    assert all(o.detail == STOPPED for o in outcomes if o.kind is OutcomeKind.HELD)
    assert len(emulator.accepted) == 2 and len(hook.calls) == 2  # only those two were declared sending


async def test_stop_ends_a_back_off_and_a_rate_wait_at_once(client: httpx.AsyncClient) -> None:
    emulator = RoEmulator(token=TOKEN)
    emulator.inject(Fault(status=503, headers={"Retry-After": "30"}))
    with EmulatorServer(emulator) as base:
        waiting = make_sink(client, base, concurrency=1, max_retry_time="5m")
        limited = make_sink(client, base, rate="1/10s")
        backing_off = asyncio.create_task(waiting.send(batch(1), Hook()))
        rated = asyncio.create_task(limited.send(batch(3), Hook()))
        await until(lambda: len(emulator.requests) == 2)  # the 503, and the rate's first token
        await asyncio.sleep(0.1)
        waiting.stop()
        limited.stop()
        async with asyncio.timeout(5):  # both would otherwise wait 30 s and 10 s
            [held] = await backing_off
            rated_outcomes = await rated
    assert (held.kind, held.detail) == (OutcomeKind.HELD, STOPPED)
    assert sorted(o.kind.value for o in rated_outcomes) == ["pending", "pending", "sent"]
    assert len(emulator.requests) == 2


async def test_a_stopped_sink_sends_nothing(client: httpx.AsyncClient) -> None:
    emulator = RoEmulator(token=TOKEN)
    with EmulatorServer(emulator) as base:
        sink = make_sink(client, base)
        sink.stop()
        outcomes = await sink.send(batch(3), Hook())
    assert [(o.kind, o.detail) for o in outcomes] == [(OutcomeKind.HELD, STOPPED)] * 3
    assert emulator.requests == []


# -- abort(): the grace is over ----------------------------------------------------------------------


async def test_abort_ends_unanswered_requests_as_unknown(client: httpx.AsyncClient) -> None:
    emulator = RoEmulator(token=TOKEN, latency=30.0)
    with EmulatorServer(emulator) as base:
        sink = make_sink(client, base, concurrency=3)
        settled: list[list[str]] = []

        async def on_settled(messages: Any, outcomes: Any) -> None:
            settled.append([o.kind.value for o in outcomes])

        sending = asyncio.create_task(sink.send(batch(5), Hook(), on_settled))
        await until(lambda: len(emulator.requests) == 3)
        sink.stop()
        sink.abort()
        async with asyncio.timeout(5):
            outcomes = await sending
    kinds = [o.kind for o in outcomes]
    assert kinds.count(OutcomeKind.UNKNOWN) == 3 and kinds.count(OutcomeKind.HELD) == 2
    assert all(o.detail == ABORTED for o in outcomes if o.kind is OutcomeKind.UNKNOWN)
    assert sorted(s for group in settled for s in group) == ["pending"] * 2 + ["unknown"] * 3


async def test_abort_does_not_swallow_a_cancellation_from_elsewhere(client: httpx.AsyncClient) -> None:
    emulator = RoEmulator(token=TOKEN, latency=30.0)
    with EmulatorServer(emulator) as base:
        sink = make_sink(client, base, concurrency=1)
        sending = asyncio.create_task(sink.send(batch(1), Hook()))
        await until(lambda: len(emulator.requests) == 1)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending

"""The webhook intake's background sends: their workers spread their starts (connector.send_queue)."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time

import pytest

from connector.send_queue import LONGEST_GAP_S, SPREAD, Pace, SendQueues


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_is_spaced_before_a_send_has_been_timed() -> None:
    pace = Pace(8, Clock())
    assert [pace.delay() for _ in range(8)] == [0.0] * 8


def test_starts_that_come_together_are_spread_over_half_a_send() -> None:
    clock = Clock()
    pace = Pace(8, clock)
    pace.took(0.2)
    gap = 0.2 * SPREAD / 8
    delays = [pace.delay() for _ in range(8)]  # eight workers finishing at the same moment
    assert delays == pytest.approx([n * gap for n in range(8)])
    assert delays[-1] < 0.2 * SPREAD  # the last starts within half a send: no throughput is lost


def test_a_worker_coming_back_after_its_slot_starts_at_once() -> None:
    clock = Clock()
    pace = Pace(4, clock)
    pace.took(0.2)
    assert pace.delay() == 0.0
    clock.now += 0.2  # its send took as long as sends take
    assert pace.delay() == 0.0
    assert pace.delay() == pytest.approx(0.2 * SPREAD / 4)


def test_a_slow_or_retrying_provider_does_not_space_starts_further_than_the_cap() -> None:
    clock = Clock()
    pace = Pace(8, clock)
    pace.took(60.0)  # a send held by a long back-off
    pace.delay()
    assert pace.delay() == pytest.approx(LONGEST_GAP_S)


def test_the_estimate_follows_the_provider_without_jumping_to_one_odd_send() -> None:
    clock = Clock()
    pace = Pace(1, clock)
    pace.took(0.02)
    pace.took(0.06)  # one slow answer moves the estimate a fifth of the way
    pace.delay()
    assert pace.delay() == pytest.approx((0.02 + 0.2 * 0.04) * SPREAD)


async def test_workers_that_began_together_fall_out_of_step_after_one_round() -> None:
    starts: list[float] = []
    sent: list[int] = []
    took = 0.06

    async def send(sink: str, item: int) -> None:
        starts.append(time.monotonic())
        await asyncio.sleep(took)
        sent.append(item)

    queues: SendQueues[int] = SendQueues(send, lambda sink: 4)
    for item in range(16):
        assert queues.put("ro", item)
    await asyncio.wait_for(queues.join(), 10)
    assert sorted(sent) == list(range(16))  # each item sent once
    later = starts[4:]  # the first round starts together: nothing was timed yet
    gaps = [b - a for a, b in itertools.pairwise(later)]
    # In step, three of every four gaps would be ~0; spread, each is about took * SPREAD / 4.
    assert statistics.median(gaps) > 0.5 * took * SPREAD / 4
    assert queues.stop() == []

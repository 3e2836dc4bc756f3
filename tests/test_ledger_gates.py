"""Caps, budgets and the ledger's opt-out list, checked by the ledger in one transaction with the
messages they let go: right before the requests (`admit`), or as a new claim is recorded (a claim
that carries its gate), on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connector.ledger import Claim, ClaimResult, Refusal, SqlLedger, State, Transition
from connector.policy import Cap, Gate
from tests.ledgers import BACKENDS, joined, ledger_url
from tests.test_ledger import Opener, claim


@pytest.fixture(params=BACKENDS)
async def instances(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens instances on one ledger, each joined; all closed at the end."""
    with ledger_url(request.param, tmp_path) as url:
        async with contextlib.AsyncExitStack() as opened:

            async def open_one() -> SqlLedger:
                return await opened.enter_async_context(joined(url, tmp_path))

            yield open_one


@pytest.fixture
async def ledger(instances: Opener) -> SqlLedger:
    return await instances()


def budget_gate(key: str, limit: int = 3, cost: int = 1) -> Gate:
    return Gate(key, "+40740123456", sink="ro", cost=cost, limit=limit, day="2026-12-07", resumes=1e10)


async def test_a_budget_is_never_spent_past_and_a_message_not_taken_gives_its_cost_back(
    ledger: SqlLedger,
) -> None:
    keys = [f"b{i}" for i in range(5)]
    for key in keys:
        await ledger.claim([claim(key, f"f:{key}")])
    refused = await ledger.admit([budget_gate(key) for key in keys])
    assert sorted(refused) == ["b3", "b4"]
    assert refused["b3"] == Refusal(
        State.PENDING, "daily budget of 3 reached; resumes 2286-11-20T17:46:40Z", 1e10
    )
    assert await ledger.spent("2026-12-07") == {"ro": 3}
    assert await ledger.admit([budget_gate("b0")]) == {}  # let go before: not charged twice
    assert await ledger.spent("2026-12-07") == {"ro": 3}
    [b1] = await ledger.entries(["b1"])
    await ledger.mark_sending(["b1"])
    await ledger.record([Transition("b1", State.FAILED, "refused by the provider", b1.created_at)])
    assert await ledger.spent("2026-12-07") == {"ro": 2}  # refused: not taken, given back
    assert await ledger.admit([budget_gate("b3")]) == {}


async def test_two_instances_racing_for_one_budget_never_pass_it_together(instances: Opener) -> None:
    first, second = await instances(), await instances()
    keys = [f"r{i}" for i in range(40)]
    await first.claim([claim(key, f"f:{key}") for key in keys])
    pairs = zip([first, second] * 20, keys, strict=True)
    refusals = await asyncio.gather(*(one.admit([budget_gate(key, limit=10)]) for one, key in pairs))
    assert sum(1 for r in refusals if not r) == 10
    assert await first.spent("2026-12-07") == {"ro": 10}


async def test_a_cap_counts_what_was_sent_and_what_is_on_its_way(ledger: SqlLedger) -> None:
    cap = Cap(2, 3600.0, "2 per 1h")
    for key in ("c0", "c1", "c2", "c3"):
        await ledger.claim([claim(key, f"f:{key}")])
    await ledger.mark_sending(["c0"])
    await ledger.record([Transition("c0", State.SENT, "id")])  # one sent to the number
    refused = await ledger.admit([Gate(k, "+40740123456", cap=cap) for k in ("c1", "c2")])
    assert refused == {"c2": Refusal(State.SKIPPED, "frequency cap (2 per 1h)")}  # c1 on its way counts
    other = await ledger.admit([Gate("c3", "+40749999999", cap=cap)])
    assert other == {}  # another number


async def test_a_cap_counts_unknown_outcomes_and_no_longer_what_ended_untaken(ledger: SqlLedger) -> None:
    cap = Cap(2, 3600.0, "2 per 1h")
    for key in ("u0", "u1", "u2", "u3"):
        await ledger.claim([claim(key, f"f:{key}")])
    assert await ledger.admit([Gate(k, "+40740123456", cap=cap) for k in ("u0", "u1")]) == {}
    await ledger.mark_sending(["u0", "u1"])
    made = {e.key: e.created_at for e in await ledger.entries(["u0", "u1"])}
    await ledger.record(
        [
            Transition("u0", State.FAILED, "refused by the provider", made["u0"]),  # not taken
            Transition("u1", State.UNKNOWN, "no answer", made["u1"]),  # may have been taken
        ]
    )
    assert await ledger.admit([Gate("u2", "+40740123456", cap=cap)]) == {}
    assert await ledger.admit([Gate("u3", "+40740123456", cap=cap)]) == {
        "u3": Refusal(State.SKIPPED, "frequency cap (2 per 1h)")
    }


async def test_the_ledgers_opt_out_list_is_checked_as_messages_go(ledger: SqlLedger) -> None:
    await ledger.claim([claim("o1")])
    assert await ledger.optout_add(["+40740123456", "+40740123456"], "asked") == 1
    assert await ledger.admit([Gate("o1", "+40740123456")]) == {"o1": Refusal(State.SKIPPED, "opted out")}
    assert [n for n, _, _ in await ledger.optouts()] == ["+40740123456"]
    assert await ledger.optout_remove(["+40740123456"]) == 1
    assert await ledger.admit([Gate("o1", "+40740123456")]) == {}


# -- let go as the claim is recorded -----------------------------------------------------------------


def gated(key: str, gate: Gate, **changes: Any) -> Claim:
    return dataclasses.replace(claim(key, f"f:{key}"), gate=gate, **changes)


async def test_new_claims_with_gates_are_let_go_as_they_are_recorded_or_recorded_as_refused(
    ledger: SqlLedger,
) -> None:
    keys = [f"b{i}" for i in range(5)]
    claimed = await ledger.claim([gated(key, budget_gate(key)) for key in keys])
    assert claimed.admitted == {"b0", "b1", "b2"}
    assert await ledger.spent("2026-12-07") == {"ro": 3}
    waiting = [entry for _, entry in claimed.answers[3:]]
    assert [(e.state, e.owner, e.not_before) for e in waiting] == [(State.PENDING, None, 1e10)] * 2
    assert waiting[0].detail == "daily budget of 3 reached; resumes 2286-11-20T17:46:40Z"
    assert await ledger.take_pending(["ro"], 10) == []  # they wait for the next day
    assert await ledger.admit([budget_gate("b0")]) == {}  # let go at its claim: not charged twice
    assert await ledger.spent("2026-12-07") == {"ro": 3}
    [b1] = await ledger.entries(["b1"])
    await ledger.mark_sending(["b1"])
    await ledger.record([Transition("b1", State.FAILED, "refused by the provider", b1.created_at)])
    assert await ledger.spent("2026-12-07") == {"ro": 2}  # not taken: given back


async def test_a_claim_is_skipped_at_once_for_a_cap_or_an_opt_out(ledger: SqlLedger) -> None:
    cap = Cap(1, 3600.0, "1 per 1h")
    await ledger.claim([claim("c0", "f:c0")])
    await ledger.mark_sending(["c0"])
    await ledger.record([Transition("c0", State.SENT, "id")])
    await ledger.optout_add(["+40749999999"])
    claimed = await ledger.claim(
        [
            gated("c1", Gate("c1", "+40740123456", cap=cap)),
            gated("c2", Gate("c2", "+40749999999"), recipient="+40749999999"),
            gated("c3", Gate("c3", "+40741111111", cap=cap), recipient="+40741111111"),
        ]
    )
    found = [(result, entry.state, entry.detail, entry.owner) for result, entry in claimed.answers]
    assert found == [
        (ClaimResult.NEW, State.SKIPPED, "frequency cap (1 per 1h)", None),
        (ClaimResult.NEW, State.SKIPPED, "opted out", None),
        (ClaimResult.NEW, State.PENDING, "", ledger.instance_id),
    ]
    assert claimed.admitted == {"c3"}
    [(again, entry)] = (await ledger.claim([gated("c1", Gate("c1", "+40740123456", cap=cap))])).answers
    assert (again, entry.state) == (ClaimResult.RESUME, State.SKIPPED)  # the same record: as it was


async def test_a_message_claimed_anew_over_a_sent_one_is_let_go_and_charged_afresh(ledger: SqlLedger) -> None:
    gate = budget_gate("k1", limit=10, cost=2)
    await ledger.claim([gated("k1", gate)])
    await ledger.mark_sending(["k1"])
    await ledger.record([Transition("k1", State.SENT, "id 1")])
    assert await ledger.spent("2026-12-07") == {"ro": 2}
    [(result, entry)] = (await ledger.claim([gated("k1", gate, force=True)])).answers
    assert result is ClaimResult.NEW
    assert await ledger.spent("2026-12-07") == {"ro": 4}  # a `resend` is another message, and costs
    await ledger.mark_sending(["k1"])
    await ledger.record([Transition("k1", State.FAILED, "refused", entry.created_at)])
    assert await ledger.spent("2026-12-07") == {"ro": 2}  # its own cost given back, not the first's
    # Claimed anew without a gate, it is let go right before its request: charged then, once.
    [(result, entry)] = (await ledger.claim([claim("k1", "f:k1", force=True)])).answers
    assert result is ClaimResult.NEW
    assert await ledger.admit([gate]) == {}
    assert await ledger.spent("2026-12-07") == {"ro": 4}


async def test_two_instances_claiming_for_one_budget_never_pass_it_together(instances: Opener) -> None:
    first, second = await instances(), await instances()
    keys = [f"r{i}" for i in range(40)]
    pairs = zip([first, second] * 20, keys, strict=True)
    claims = [one.claim([gated(key, budget_gate(key, limit=10))]) for one, key in pairs]
    results = await asyncio.gather(*claims)
    assert sum(len(c.admitted) for c in results) == 10
    assert await first.spent("2026-12-07") == {"ro": 10}
    states = [entry.state for c in results for _, entry in c.answers]
    assert states.count(State.PENDING) == 40  # 10 to send now, 30 waiting for the next day

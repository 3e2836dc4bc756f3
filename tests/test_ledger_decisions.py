"""A person's decision on a message and the history a message leaves, on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.ledger import Decision, SqlLedger, State, Transition, Verdict
from tests.ledgers import BACKENDS, joined, ledger_url
from tests.test_ledger import claim


@pytest.fixture(params=BACKENDS)
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlLedger]:
    with ledger_url(request.param, tmp_path) as url:
        async with joined(url, tmp_path) as opened:
            yield opened


async def _unknown(ledger: SqlLedger, key: str) -> float:
    [(_, entry)] = (await ledger.claim([claim(key, origin=f"f:{key}")])).answers
    await ledger.mark_sending([key])
    await ledger.record([Transition(key, State.UNKNOWN, "connection dropped", entry.created_at)])
    return entry.created_at


async def test_an_unknown_decided_as_sent_keeps_who_and_why_in_its_history(ledger: SqlLedger) -> None:
    await _unknown(ledger, "k1")
    [done] = await ledger.resolve(["k1"], Decision(Verdict.SENT, "in the portal", "ana"))
    assert not done.refused and done.entry is not None and done.entry.state is State.SENT
    assert done.entry.detail == "(resolved by hand by ana: in the portal)"
    [entry] = await ledger.entries(["k1"])
    assert (entry.state, entry.owner) == (State.SENT, None)
    steps = await ledger.history("k1")
    assert [s.state for s in steps] == ["claimed", "unknown", "sent"]
    assert steps[-1].actor == "ana" and "in the portal" in steps[-1].detail
    assert steps[1].detail == "connection dropped"


async def test_what_is_not_unknown_needs_force_and_what_is_in_flight_is_never_decided(
    ledger: SqlLedger,
) -> None:
    await _unknown(ledger, "k1")
    await ledger.resolve(["k1"], Decision(Verdict.FAILED, "", "ana"))
    [again] = await ledger.resolve(["k1"], Decision(Verdict.SENT, "", "ana"))
    assert "it is failed, not unknown: add --force" in again.refused
    [forced] = await ledger.resolve(["k1"], Decision(Verdict.SENT, "", "ana", force=True))
    assert not forced.refused and forced.entry is not None and forced.entry.state is State.SENT

    await ledger.claim([claim("k2", origin="f:k2")])
    await ledger.mark_sending(["k2"])
    [busy] = await ledger.resolve(["k2"], Decision(Verdict.FAILED, "", "ana", force=True))
    assert "with the provider right now" in busy.refused
    [missing] = await ledger.resolve(["nope"], Decision(Verdict.SENT, "", "ana"))
    assert missing.entry is None and missing.refused == "no message with this id"
    assert (await ledger.entries(["k2"]))[0].state is State.SENDING


async def test_a_resend_is_claimed_anew_so_a_late_answer_of_the_first_attempt_settles_nothing(
    ledger: SqlLedger,
) -> None:
    first = await _unknown(ledger, "k1")
    [done] = await ledger.resolve(["k1"], Decision(Verdict.RESEND, "did not arrive", "ana"))
    assert done.entry is not None and done.entry.state is State.PENDING
    assert done.entry.owner == ledger.instance_id and done.entry.created_at > first
    # The first attempt's answer arrives now: it is not this claim's.
    await ledger.record([Transition("k1", State.SENT, "late id", first)])
    [entry] = await ledger.entries(["k1"])
    assert entry.state is State.PENDING
    await ledger.mark_sending(["k1"])
    await ledger.record([Transition("k1", State.SENT, "new id", done.entry.created_at)])
    assert (await ledger.entries(["k1"]))[0].state is State.SENT
    assert [s.state for s in await ledger.history("k1")][-2:] == ["resend", "sent"]


async def test_the_unknown_ones_are_listed_by_source_and_rule(ledger: SqlLedger) -> None:
    for key in ("a", "b"):
        await _unknown(ledger, key)
    await ledger.claim([claim("c", origin="f:c")])
    assert sorted(await ledger.unknown_keys()) == ["a", "b"]
    assert sorted(await ledger.unknown_keys(["erp"], ["r"])) == ["a", "b"]
    assert await ledger.unknown_keys(["other"]) == []
    assert await ledger.unknown_keys(rules=["other"]) == []


async def test_a_wait_is_kept_in_the_history_and_a_plain_send_writes_none(ledger: SqlLedger) -> None:
    [(_, entry)] = (await ledger.claim([claim("w", origin="f:w")])).answers
    await ledger.record([Transition("w", State.PENDING, "quiet hours until later", entry.created_at, 1e12)])
    assert [s.state for s in await ledger.history("w")] == ["claimed", "pending"]
    [(_, plain)] = (await ledger.claim([claim("p", origin="f:p")])).answers
    await ledger.mark_sending(["p"])
    await ledger.record([Transition("p", State.SENT, "id-1", plain.created_at)])
    assert [s.state for s in await ledger.history("p")] == ["claimed", "sent"]
    assert await ledger.history("nothing") == []


async def test_an_id_cut_short_names_its_message_when_it_is_the_only_one(ledger: SqlLedger) -> None:
    for key in ("abc123", "abc124", "ffff01"):
        await ledger.claim([claim(key, origin=f"f:{key}")])
    found = await ledger.full_keys(["abc12", "abc123", "ffff", "0000"])
    assert found == {"abc12": ["abc123", "abc124"], "abc123": ["abc123"], "ffff": ["ffff01"], "0000": []}

"""The ledger, on SQLite and on PostgreSQL alike: claims, ownership, the fence, leases, recovery,
holds, deliveries, group commit. Several ledgers opened on one database are several instances."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from connector.ledger import (
    Claim,
    ClaimResult,
    Delivery,
    Fenced,
    LedgerUnavailable,
    Refusal,
    SqlLedger,
    State,
    Transition,
    open_ledger,
    schema,
)
from connector.policy import Cap, Gate
from tests.ledgers import BACKENDS, lapse, ledger_url, raw_sql


def claim(
    key: str,
    origin: str = "f1:2",
    *,
    expires_at: float | None = None,
    force: bool = False,
    failed: str | None = None,
) -> Claim:
    return Claim(
        key=key,
        source="erp",
        rule="r",
        sink="ro",
        origin=origin,
        recipient="+40740123456",
        text="hi",
        expires_at=expires_at,
        force=force,
        failed=failed,
    )


Opener = Callable[[], Awaitable[SqlLedger]]


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    with ledger_url(request.param, tmp_path) as found:
        yield found


@pytest.fixture
async def instance(url: str, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens another instance on the same ledger (joined, with a lease); all closed at the end."""
    opened: list[SqlLedger] = []

    async def open_one() -> SqlLedger:
        ledger = await open_ledger(url, tmp_path)
        await ledger.join(lease=30)
        opened.append(ledger)
        return ledger

    yield open_one
    for ledger in opened:
        await ledger.close()


@pytest.fixture
async def ledger(instance: Opener) -> SqlLedger:
    return await instance()


# -- claims -----------------------------------------------------------------------------------------


async def test_a_new_claim_is_pending_and_owned_and_another_origin_is_a_duplicate(ledger: SqlLedger) -> None:
    [(result, entry)] = (await ledger.claim([claim("k1")])).answers
    assert result is ClaimResult.NEW and entry.state is State.PENDING
    assert entry.owner == ledger.instance_id
    [(again, same)] = (await ledger.claim([claim("k1", origin="f2:2")])).answers
    assert again is ClaimResult.DUPLICATE and same.origin == "f1:2"


async def test_the_same_origin_resumes_with_the_current_state(ledger: SqlLedger) -> None:
    await ledger.claim([claim("k1")])
    await ledger.mark_sending(["k1"])
    await ledger.record([Transition("k1", State.SENT, "id 7")])
    [(result, entry)] = (await ledger.claim([claim("k1")])).answers
    assert result is ClaimResult.RESUME
    assert (entry.state, entry.detail, entry.attempts, entry.owner) == (State.SENT, "id 7", 1, None)


async def test_duplicates_inside_one_batch_are_caught(ledger: SqlLedger) -> None:
    answers = (await ledger.claim([claim("k1", "f1:2"), claim("k1", "f1:3")])).answers
    assert [a[0] for a in answers] == [ClaimResult.NEW, ClaimResult.DUPLICATE]


async def test_an_expired_fingerprint_can_be_sent_again_and_an_unexpired_one_cannot(
    ledger: SqlLedger,
) -> None:
    await ledger.claim([claim("old", expires_at=time.time() - 1)])
    await ledger.mark_sending(["old"])
    await ledger.record([Transition("old", State.SENT, "x")])
    [(result, entry)] = (
        await ledger.claim([claim("old", origin="f9:2", expires_at=time.time() + 60)])
    ).answers
    assert result is ClaimResult.NEW and entry.state is State.PENDING and entry.origin == "f9:2"
    await ledger.claim([claim("new", expires_at=time.time() + 60)])
    [(result, _)] = (await ledger.claim([claim("new", origin="f9:2", expires_at=time.time() + 60)])).answers
    assert result is ClaimResult.DUPLICATE


async def test_failed_is_tried_again_from_a_new_origin_but_not_from_the_same(ledger: SqlLedger) -> None:
    await ledger.claim([claim("k1", failed="bad number")])
    [(same, entry)] = (await ledger.claim([claim("k1")])).answers
    assert same is ClaimResult.RESUME and entry.state is State.FAILED
    [(other, fresh)] = (await ledger.claim([claim("k1", origin="f2:9")])).answers
    assert other is ClaimResult.NEW and fresh.state is State.PENDING


async def test_resend_replaces_a_settled_message_but_never_one_being_sent(ledger: SqlLedger) -> None:
    await ledger.claim([claim("k1")])
    await ledger.mark_sending(["k1"])
    [(result, entry)] = (await ledger.claim([claim("k1", force=True)])).answers
    assert result is ClaimResult.RESUME and entry.state is State.SENDING
    await ledger.record([Transition("k1", State.SENT, "x")])
    [(result, entry)] = (await ledger.claim([claim("k1", force=True)])).answers
    assert result is ClaimResult.NEW and entry.state is State.PENDING and entry.attempts == 0


async def test_a_claim_another_live_instance_owns_is_not_taken(instance: Opener) -> None:
    first, second = await instance(), await instance()
    await first.claim([claim("k1")])
    [(result, entry)] = (await second.claim([claim("k1")])).answers
    assert result is ClaimResult.RESUME and entry.owner == first.instance_id
    with pytest.raises(Fenced):
        await second.mark_sending(["k1"])


# -- the fence, leases and recovery ---------------------------------------------------------------


async def test_sending_is_durable_before_mark_sending_returns(instance: Opener) -> None:
    first, other = await instance(), await instance()
    await first.claim([claim("k1")])
    await first.mark_sending(["k1"])
    [entry] = await other.entries(["k1"])  # another connection, as after a crash
    assert entry.state is State.SENDING and entry.attempts == 1


async def test_mark_sending_marks_all_or_none(instance: Opener) -> None:
    first, second = await instance(), await instance()
    await first.claim([claim("mine")])
    await second.claim([claim("theirs", "f1:3")])
    with pytest.raises(Fenced, match="1 of 2"):
        await first.mark_sending(["mine", "theirs"])
    states = {e.key: e.state for e in await first.entries(["mine", "theirs"])}
    assert states == {"mine": State.PENDING, "theirs": State.PENDING}


async def test_a_lapsed_lease_fences_its_sends_and_renewing_finds_it_lost(url: str, instance: Opener) -> None:
    paused = await instance()
    await paused.claim([claim("k1")])
    lapse(url, paused.instance_id)
    with pytest.raises(Fenced, match="lease"):
        await paused.mark_sending(["k1"])
    old = paused.instance_id
    assert await paused.renew() is False
    assert paused.instance_id != old  # a new identity, owning nothing
    with pytest.raises(Fenced):
        await paused.mark_sending(["k1"])


async def test_recovery_leaves_a_live_instance_alone(instance: Opener) -> None:
    first, second = await instance(), await instance()
    await first.claim([claim("k1"), claim("k2", "f1:3")])
    await first.mark_sending(["k1"])
    assert await second.recover() == 0  # a process starting is no reason to touch another's sends
    assert await second.take_pending(["ro"], 10) == []
    states = {e.key: (e.state, e.owner) for e in await second.entries(["k1", "k2"])}
    assert states == {"k1": (State.SENDING, first.instance_id), "k2": (State.PENDING, first.instance_id)}


async def test_recovery_after_a_lapse_makes_sending_unknown_and_frees_the_rest(
    url: str, instance: Opener
) -> None:
    dead, alive = await instance(), await instance()
    await dead.claim([claim("k1"), claim("k2", "f1:3")])
    await dead.mark_sending(["k1"])
    await dead.hold("csv:erp:orders.csv")
    lapse(url, dead.instance_id)
    assert await alive.recover() == 1
    [k1] = await alive.entries(["k1"])
    assert k1.state is State.UNKNOWN and "not resent" in k1.detail
    [taken] = await alive.take_pending(["ro"], 10)
    assert (taken.key, taken.owner) == ("k2", alive.instance_id)
    assert await alive.hold("csv:erp:orders.csv") is not None
    assert [i.id for i in await alive.instances()] == [alive.instance_id]


async def test_a_dead_process_of_this_host_is_released_without_waiting_for_its_lease(
    url: str, instance: Opener
) -> None:
    dead_pid = 4_194_304 + 1000  # above the largest pid_max Linux allows: no process has it
    alive = await instance()
    far = time.time() + 3600
    for who, pid in (("dead", dead_pid), ("other-host", dead_pid)):
        place = alive.place if who == "dead" else "elsewhere|boot|pid:[1]"
        raw_sql(
            url,
            "INSERT INTO instances (id, host, place, pid, started_at, renewed_at, expires_at) "
            "VALUES (?, 'h', ?, ?, 0, 0, ?)",
            [who, place, pid, far],
        )
        key = f"k-{who}"
        raw_sql(
            url,
            "INSERT INTO sends (key, source, rule, sink, origin, recipient, text, state, detail, attempts, "
            "created_at, updated_at, owner) "
            "VALUES (?, 'erp', 'r', 'ro', ?, '+40', 'hi', 'sending', '', 1, 0, 0, ?)",
            [key, key, who],
        )
    assert await alive.recover() == 1  # kill -9 beside it: known at once, not in an hour
    states = {e.key: e.state for e in await alive.entries(["k-dead", "k-other-host"])}
    assert states == {"k-dead": State.UNKNOWN, "k-other-host": State.SENDING}  # elsewhere: the lease decides


async def test_a_late_outcome_of_a_lapsed_instance_is_still_the_truth(url: str, instance: Opener) -> None:
    slow, other = await instance(), await instance()
    await slow.claim([claim("k1")])
    await slow.mark_sending(["k1"])
    lapse(url, slow.instance_id)
    await other.recover()  # k1 is unknown now
    await slow.renew()  # slow finds out, and its answer arrives afterwards
    await slow.record([Transition("k1", State.SENT, "id 9")])
    [entry] = await other.entries(["k1"])
    assert (entry.state, entry.detail) == (State.SENT, "id 9")


async def test_a_late_answer_never_settles_a_resend_of_the_same_key(url: str, instance: Opener) -> None:
    slow, other = await instance(), await instance()
    [(_, first)] = (await slow.claim([claim("k1")])).answers
    await slow.mark_sending(["k1"])  # request 1 leaves, and takes its time
    lapse(url, slow.instance_id)
    await other.recover()  # k1: unknown
    await slow.renew()  # a new identity
    [(result, second)] = (await slow.claim([claim("k1", force=True)])).answers  # a person's resend
    assert result is ClaimResult.NEW and second.created_at != first.created_at
    await slow.mark_sending(["k1"])  # request 2 leaves
    await slow.record([Transition("k1", State.PENDING, "503 for request 1", first.created_at)])
    assert await other.take_pending(["ro"], 10) == []  # request 1's answer is not request 2's
    [entry] = await other.entries(["k1"])
    assert (entry.state, entry.owner) == (State.SENDING, slow.instance_id)
    await slow.record([Transition("k1", State.SENT, "id 2", second.created_at)])
    [entry] = await other.entries(["k1"])
    assert (entry.state, entry.detail) == (State.SENT, "id 2")


async def test_a_sweep_takes_no_more_than_its_limit(instance: Opener) -> None:
    ledger = await instance()
    for i in range(5):  # one claim after another: oldest first is k0, k1
        await ledger.claim([claim(f"k{i}", f"f:{i}")])
    await ledger.release([f"k{i}" for i in range(5)])
    assert [e.key for e in await ledger.take_pending(["ro"], 2)] == ["k0", "k1"]


async def test_a_stale_hold_back_never_overwrites_another_owners_send(url: str, instance: Opener) -> None:
    stale, other = await instance(), await instance()
    await stale.claim([claim("k1")])
    lapse(url, stale.instance_id)
    await other.recover()
    [taken] = await other.take_pending(["ro"], 10)
    await other.mark_sending([taken.key])
    await stale.record([Transition("k1", State.PENDING, "sink paused")])  # it never learned
    [entry] = await other.entries(["k1"])
    assert (entry.state, entry.owner) == (State.SENDING, other.instance_id)


async def test_a_graceful_close_releases_at_once(url: str, tmp_path: Path, instance: Opener) -> None:
    leaving = await open_ledger(url, tmp_path)
    await leaving.join(lease=30)
    await leaving.claim([claim("k1")])
    await leaving.hold("sheet:orders")
    await leaving.close()
    staying = await instance()
    assert [e.key for e in await staying.take_pending(["ro"], 10)] == ["k1"]
    assert await staying.hold("sheet:orders") is not None
    assert await staying.instances() == [i for i in await staying.instances() if i.id == staying.instance_id]


async def test_two_sweepers_never_take_the_same_message(url: str, instance: Opener) -> None:
    first, second = await instance(), await instance()
    origin = await instance()
    await origin.claim([claim(f"k{i}", f"f:{i}") for i in range(300)])
    await origin.release([f"k{i}" for i in range(300)])
    takes = await asyncio.gather(
        *(ledger.take_pending(["ro"], 40) for _ in range(5) for ledger in (first, second))
    )
    keys = [e.key for taken in takes for e in taken]
    assert len(keys) == len(set(keys)) == 300


async def test_idle_pending_is_this_instances_own_untouched_claims(instance: Opener) -> None:
    mine, theirs = await instance(), await instance()
    await mine.claim([claim("k1"), claim("k2", "f:2")])
    await theirs.claim([claim("k3", "f:3")])
    assert await mine.idle_pending(["ro"], 10, idle=60) == []  # claimed a moment ago
    await mine.mark_sending(["k2"])
    assert [e.key for e in await mine.idle_pending(["ro"], 10, idle=-1)] == ["k1"]  # not sending, not theirs


# -- waiting and skipped messages (send policies) ---------------------------------------------------


async def test_a_waiting_message_belongs_to_nobody_until_its_time_comes(instance: Opener) -> None:
    first, sweeper = await instance(), await instance()
    soon, later = time.time() + 0.3, time.time() + 3600
    await first.claim(
        [
            dataclasses.replace(claim("k1"), not_before=soon, due_at=soon, waiting="scheduled for soon"),
            dataclasses.replace(claim("k2", "f:2"), not_before=later, waiting="quiet hours until later"),
        ]
    )
    k1, _ = sorted(await first.entries(["k1", "k2"]), key=lambda e: e.key)
    assert (k1.state, k1.owner, k1.detail) == (State.PENDING, None, "scheduled for soon")
    assert await first.next_wake() == pytest.approx(soon)
    assert await sweeper.take_pending(["ro"], 10) == []  # not yet
    await asyncio.sleep(0.4)
    [taken] = await sweeper.take_pending(["ro"], 10)
    assert (taken.key, taken.owner, taken.not_before, taken.due_at) == ("k1", sweeper.instance_id, None, soon)
    assert await sweeper.next_wake() == pytest.approx(later)
    [(result, resumed)] = (await first.claim([claim("k2", "f:2")])).answers  # the row read again meanwhile
    assert result is ClaimResult.RESUME and resumed.owner is None  # still waiting: nobody takes it


async def test_a_held_message_may_wait_for_a_time_and_is_then_swept(ledger: SqlLedger) -> None:
    [(_, entry)] = (await ledger.claim([claim("k1")])).answers
    soon = time.time() + 0.3
    await ledger.record([Transition("k1", State.PENDING, "daily budget reached", entry.created_at, soon)])
    assert await ledger.take_pending(["ro"], 10) == []
    assert await ledger.next_wake() == pytest.approx(soon)
    await asyncio.sleep(0.4)
    assert [e.key for e in await ledger.take_pending(["ro"], 10)] == ["k1"]


async def test_a_skipped_message_is_settled_and_a_new_record_is_looked_at_afresh(ledger: SqlLedger) -> None:
    [(_, entry)] = (await ledger.claim([dataclasses.replace(claim("k1"), skipped="opted out")])).answers
    assert (entry.state, entry.detail, entry.owner) == (State.SKIPPED, "opted out", None)
    [(same, _)] = (await ledger.claim([claim("k1")])).answers
    assert same is ClaimResult.RESUME  # the same record read again stays skipped
    [(other, fresh)] = (await ledger.claim([claim("k1", "f:9")])).answers
    assert other is ClaimResult.NEW and fresh.state is State.PENDING  # opted in again since, say
    assert {c.state: c.count for c in await ledger.counts()} == {State.PENDING: 1}


# -- holds ------------------------------------------------------------------------------------------


async def test_a_hold_is_one_instances_and_its_epoch_grows_with_each_holder(
    url: str, instance: Opener
) -> None:
    first, second = await instance(), await instance()
    epoch = await first.hold("sheet:orders")
    assert epoch is not None
    assert await first.hold("sheet:orders") == epoch  # kept, not taken again
    assert await second.hold("sheet:orders") is None
    lapse(url, first.instance_id)
    taken = await second.hold("sheet:orders")
    assert taken == epoch + 1
    assert not await first.holding("sheet:orders", epoch)
    assert await second.holding("sheet:orders", taken)
    await second.let_go("sheet:orders")
    assert await first.renew() is False and await first.hold("sheet:orders") is not None


# -- deliveries -------------------------------------------------------------------------------------


def delivery(key: str, answers_made: list[int]) -> Delivery:
    def answer(answers: list[tuple[ClaimResult, object]]) -> str:
        answers_made.append(len(answers))
        return f"answer of {key}: {[r.value for r, _ in answers]}"

    return Delivery("webhook:shop", key, answer)


async def test_one_delivery_sent_to_two_instances_is_one_delivery(instance: Opener) -> None:
    first, second = await instance(), await instance()
    made: list[int] = []
    claims = [claim("k1", "d1:0"), claim("k2", "d1:1")]
    one, two = await asyncio.gather(
        first.claim(claims, delivery("d1", made)), second.claim(claims, delivery("d1", made))
    )
    assert made == [2]  # answered once
    fresh, replay = (one, two) if one.replayed is None else (two, one)
    assert fresh.note == replay.replayed == "answer of d1: ['new', 'new']"
    owners = {e.owner for e in await first.entries(["k1", "k2"])}
    assert len(owners) == 1


async def test_a_replayed_delivery_takes_what_its_dead_first_taker_left(url: str, instance: Opener) -> None:
    dead, alive = await instance(), await instance()
    claims = [claim("k1", "d1:0")]
    await dead.claim(claims, delivery("d1", []))
    lapse(url, dead.instance_id)
    again = await alive.claim(claims, delivery("d1", []))
    assert again.replayed == "answer of d1: ['new']"
    [(_, entry)] = again.answers
    assert entry.owner == alive.instance_id and entry.state is State.PENDING


# -- group commit and the rest ----------------------------------------------------------------------


async def test_concurrent_callers_share_commits_and_each_gets_its_answer(ledger: SqlLedger) -> None:
    keys = [f"k{i}" for i in range(200)]
    await ledger.claim([claim(k, f"f:{k}") for k in keys])
    await asyncio.gather(*(ledger.mark_sending([k]) for k in keys))
    counts = await ledger.counts()
    assert [(c.state, c.count) for c in counts] == [(State.SENDING, 200)]


async def test_one_bad_job_does_not_undo_the_others(ledger: SqlLedger) -> None:
    bad_claim = Claim(
        key="k2", source="erp", rule="r", sink="ro", origin="o", recipient="x", text=None, expires_at=None
    )  # type: ignore[arg-type]  # NOT NULL violation
    results = await asyncio.gather(
        ledger.claim([claim("k1")]),
        ledger.claim([bad_claim]),
        ledger.set_note("s", "k", "v"),
        return_exceptions=True,
    )
    assert isinstance(results[1], Exception)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    assert [e.key for e in await ledger.entries(["k1", "k2"])] == ["k1"]
    assert await ledger.get_note("s", "k") == "v"
    assert await ledger.get_note("s", "missing") is None


async def test_counts_recent_entries_and_notes(ledger: SqlLedger) -> None:
    await ledger.claim([claim("a"), claim("b", "f:3"), claim("c", "f:4", failed="template error")])
    await ledger.record([Transition("a", State.UNKNOWN, "read timeout")])
    by_state = {c.state: c.count for c in await ledger.counts()}
    assert by_state == {State.PENDING: 1, State.FAILED: 1, State.UNKNOWN: 1}
    assert {e.key for e in await ledger.recent([State.FAILED, State.UNKNOWN], 5)} == {"a", "c"}
    assert {e.key for e in await ledger.entries(["a", "b", "missing"])} == {"a", "b"}
    await ledger.set_note("late:f1", "2", "sent")
    await ledger.set_note("late:f1", "3", "failed: x")
    assert await ledger.notes_in("late:f1") == {"2": "sent", "3": "failed: x"}
    await ledger.drop_notes("late:f1", ["2"])
    assert await ledger.notes_in("late:f1") == {"3": "failed: x"}


async def test_instances_list_what_each_holds(instance: Opener) -> None:
    first, second = await instance(), await instance()
    await first.claim([claim("k1"), claim("k2", "f:2")])
    await first.mark_sending(["k1"])
    await second.hold("sheet:orders")
    listed = {i.id: i for i in await first.instances()}
    assert listed[first.instance_id].sending == 1 and listed[first.instance_id].owned == 1
    assert listed[second.instance_id].holds == ("sheet:orders",)
    assert listed[second.instance_id].expires_at > time.time()


async def test_a_ledger_newer_than_the_code_is_refused(url: str, tmp_path: Path) -> None:
    ledger = await open_ledger(url, tmp_path)
    await ledger.close()
    raw_sql(url, "UPDATE meta SET value = '99' WHERE name = 'schema'")
    with pytest.raises(LedgerUnavailable, match="version 99"):
        await open_ledger(url, tmp_path)


async def test_unsupported_scheme_is_a_config_error(tmp_path: Path) -> None:
    from connector.errors import ConfigError

    with pytest.raises(ConfigError, match="not supported"):
        await open_ledger("mysql://localhost/test", tmp_path)


async def test_a_ledger_of_the_single_process_version_is_migrated(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "old.db")) as db, db:
        db.executescript(
            """
            CREATE TABLE sends (key TEXT PRIMARY KEY, source TEXT NOT NULL, rule TEXT NOT NULL,
                sink TEXT NOT NULL, origin TEXT NOT NULL, recipient TEXT NOT NULL, text TEXT NOT NULL,
                state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL);
            CREATE INDEX sends_pending ON sends (sink, created_at) WHERE state = 'pending';
            CREATE TABLE notes (scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                PRIMARY KEY (scope, key));
            CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema', '1');
            INSERT INTO sends VALUES ('s', 'e', 'r', 'ro', 'f:1', '+40', 'hi', 'sending', '', 1, 1, 1, NULL);
            INSERT INTO sends VALUES ('p', 'e', 'r', 'ro', 'f:2', '+40', 'hi', 'pending', '', 0, 1, 1, NULL);
            """
        )
    ledger = await open_ledger("sqlite:///old.db", tmp_path)
    await ledger.join()
    try:
        states = {e.key: e.state for e in await ledger.entries(["s", "p"])}
        assert states == {"s": State.UNKNOWN, "p": State.PENDING}  # the old process is gone
        assert [e.key for e in await ledger.take_pending(["ro"], 10)] == ["p"]
    finally:
        await ledger.close()
    assert raw_sql(f"sqlite:///{tmp_path / 'old.db'}", "SELECT value FROM meta WHERE name = 'schema'") == [
        (str(schema.VERSION),)
    ]


async def test_a_ledger_of_version_3_counts_its_caps_as_before(tmp_path: Path) -> None:
    # Version 3 counted caps by the state (two indexes); version 4 by `counted_at`: what was sent
    # within the period and what was let go and not settled still count, what ended untaken not.
    now = time.time()
    with contextlib.closing(sqlite3.connect(tmp_path / "v3.db")) as db, db:
        db.executescript(
            """
            CREATE TABLE sends (key TEXT PRIMARY KEY, source TEXT NOT NULL, rule TEXT NOT NULL,
                sink TEXT NOT NULL, origin TEXT NOT NULL, recipient TEXT NOT NULL, text TEXT NOT NULL,
                state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', attempts BIGINT NOT NULL DEFAULT 0,
                created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION, owner TEXT, due_at DOUBLE PRECISION,
                not_before DOUBLE PRECISION, admitted_at DOUBLE PRECISION, charged BIGINT, charged_day TEXT);
            CREATE INDEX sends_admitted ON sends (recipient)
                WHERE admitted_at IS NOT NULL AND state IN ('pending', 'sending');
            CREATE INDEX sends_counted ON sends (recipient, updated_at) WHERE state IN ('sent', 'unknown');
            CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema', '3');
            """
        )
        row = "INSERT INTO sends VALUES (?, 'e', 'r', 'ro', ?, '+40740123456', 'hi', ?, '', 1, ?, ?, " + (
            "NULL, NULL, NULL, NULL, ?, NULL, NULL)"
        )
        db.execute(row, ["sent-lately", "f:1", "sent", now - 60, now - 60, now - 60])
        db.execute(row, ["sent-long-ago", "f:2", "sent", now - 7200, now - 7200, now - 7200])
        db.execute(row, ["let-go", "f:3", "sending", now - 5, now - 5, now - 5])
        db.execute(row, ["refused", "f:4", "failed", now - 30, now - 30, None])
        db.execute(row, ["new", "f:5", "pending", now, now, None])
        db.execute(row, ["other", "f:6", "pending", now, now, None])
    ledger = await open_ledger("sqlite:///v3.db", tmp_path)
    await ledger.join()
    try:
        assert not raw_sql(
            f"sqlite:///{tmp_path / 'v3.db'}",
            "SELECT name FROM sqlite_master WHERE name IN ('sends_admitted', 'sends_counted')",
        )
        two, three = Cap(2, 3600.0, "2 per 1h"), Cap(3, 3600.0, "3 per 1h")
        assert await ledger.admit([Gate("new", "+40740123456", cap=two)]) == {
            "new": Refusal(State.SKIPPED, "frequency cap (2 per 1h)")
        }
        assert await ledger.admit([Gate("other", "+40740123456", cap=three)]) == {}
    finally:
        await ledger.close()


async def test_a_sqlite_ledger_locked_by_a_frozen_process_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process frozen (SIGSTOP) inside its write transaction keeps SQLite's write lock, and no
    # other process can take it: a start then waits for the lock, as for an outage, not fail.
    await (await open_ledger("sqlite:///l.db", tmp_path)).close()
    monkeypatch.setattr("connector.ledger.sqlite.BUSY_TIMEOUT_MS", 100)
    with contextlib.closing(sqlite3.connect(tmp_path / "l.db", isolation_level=None)) as frozen:
        frozen.execute("BEGIN IMMEDIATE")
        opening = asyncio.ensure_future(open_ledger("sqlite:///l.db", tmp_path))
        await asyncio.sleep(1.0)  # ten busy timeouts
        assert not opening.done()
        frozen.execute("ROLLBACK")
    ledger = await asyncio.wait_for(opening, 10)
    try:
        await ledger.join()
        assert [i.id for i in await ledger.instances()] == [ledger.instance_id]
    finally:
        await ledger.close()


async def test_the_sqlite_log_is_checkpointed_off_the_writer(tmp_path: Path) -> None:
    # The writer never checkpoints inside a commit (that stalled every send queued behind it); the
    # checkpoint thread copies the log into the database file itself within about a second. Seen
    # from outside: a copy of the database file alone, without its -wal, holds the rows.
    ledger = await open_ledger("sqlite:///state/ledger.db", tmp_path)
    await ledger.join()
    try:
        await ledger.claim([claim(f"k{i}", f"f1:{i}") for i in range(200)])
        database = tmp_path / "state" / "ledger.db"
        alone = tmp_path / "alone.db"
        deadline = time.monotonic() + 10
        while True:
            alone.write_bytes(database.read_bytes())
            try:
                with contextlib.closing(sqlite3.connect(alone)) as db:
                    rows = db.execute("SELECT count(*) FROM sends").fetchone()[0]
            except sqlite3.DatabaseError:  # caught mid-checkpoint, or the table not copied yet
                rows = 0
            if rows == 200:
                break
            assert time.monotonic() < deadline, f"{rows} of 200 rows in the database file after 10 s"
            await asyncio.sleep(0.2)
    finally:
        await ledger.close()

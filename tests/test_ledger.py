"""The SQLite ledger: claims, durability of `sending`, recovery, dedupe windows, group commit."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from connector.ledger import Claim, ClaimResult, Ledger, State, Transition, open_ledger


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


@pytest.fixture
async def ledger(tmp_path: Path) -> Ledger:
    ledger = await open_ledger("sqlite:///state/ledger.db", tmp_path)
    yield ledger
    await ledger.close()


async def test_new_claim_is_pending_and_second_claim_by_other_origin_is_duplicate(ledger: Ledger) -> None:
    [(result, entry)] = await ledger.claim([claim("k1")])
    assert result is ClaimResult.NEW and entry.state is State.PENDING
    [(again, same)] = await ledger.claim([claim("k1", origin="f2:2")])
    assert again is ClaimResult.DUPLICATE and same.origin == "f1:2"


async def test_same_origin_resumes_with_current_state(ledger: Ledger) -> None:
    await ledger.claim([claim("k1")])
    await ledger.mark_sending(["k1"])
    await ledger.record([Transition("k1", State.SENT, "id 7")])
    [(result, entry)] = await ledger.claim([claim("k1")])
    assert result is ClaimResult.RESUME
    assert (entry.state, entry.detail, entry.attempts) == (State.SENT, "id 7", 1)


async def test_duplicates_inside_one_batch_are_caught(ledger: Ledger) -> None:
    answers = await ledger.claim([claim("k1", "f1:2"), claim("k1", "f1:3")])
    assert [a[0] for a in answers] == [ClaimResult.NEW, ClaimResult.DUPLICATE]


async def test_expired_fingerprint_can_be_sent_again(ledger: Ledger) -> None:
    await ledger.claim([claim("k1", expires_at=time.time() - 1)])
    await ledger.record([Transition("k1", State.SENT, "x")])
    [(result, entry)] = await ledger.claim([claim("k1", origin="f9:2", expires_at=time.time() + 60)])
    assert result is ClaimResult.NEW and entry.state is State.PENDING


async def test_unexpired_fingerprint_is_a_duplicate(ledger: Ledger) -> None:
    await ledger.claim([claim("k1", expires_at=time.time() + 60)])
    [(result, _)] = await ledger.claim([claim("k1", origin="f9:2", expires_at=time.time() + 60)])
    assert result is ClaimResult.DUPLICATE


async def test_failed_is_retried_from_a_new_origin_but_not_from_the_same(ledger: Ledger) -> None:
    await ledger.claim([claim("k1", failed="bad number")])
    [(same, entry)] = await ledger.claim([claim("k1")])
    assert same is ClaimResult.RESUME and entry.state is State.FAILED and entry.detail == "bad number"
    [(other, fresh)] = await ledger.claim([claim("k1", origin="f2:2")])
    assert other is ClaimResult.NEW and fresh.state is State.PENDING


async def test_resend_forces_a_new_attempt_but_never_while_sending(ledger: Ledger) -> None:
    await ledger.claim([claim("k1")])
    await ledger.mark_sending(["k1"])
    [(during, _)] = await ledger.claim([claim("k1", force=True)])
    assert during is ClaimResult.RESUME
    await ledger.record([Transition("k1", State.SENT, "id 1")])
    [(after, entry)] = await ledger.claim([claim("k1", force=True)])
    assert after is ClaimResult.NEW and entry.state is State.PENDING


async def test_sending_is_on_disk_before_mark_sending_returns(ledger: Ledger, tmp_path: Path) -> None:
    await ledger.claim([claim("k1")])
    await ledger.mark_sending(["k1"])
    # A second, independent connection (as after a crash) must see it committed.
    with sqlite3.connect(tmp_path / "state" / "ledger.db") as other:
        (state,) = other.execute("SELECT state FROM sends WHERE key = 'k1'").fetchone()
    assert state == "sending"


async def test_recover_turns_sending_into_unknown(tmp_path: Path) -> None:
    first = await open_ledger("sqlite:///l.db", tmp_path)
    await first.claim([claim("k1"), claim("k2", "f1:3")])
    await first.mark_sending(["k1"])
    await first.close()
    second = await open_ledger("sqlite:///l.db", tmp_path)
    try:
        assert await second.recover() == 1
        [(_, entry)] = await second.claim([claim("k1")])
        assert entry.state is State.UNKNOWN and "not resent" in entry.detail
        assert [e.key for e in await second.pending(["ro"], 10, claimed_before=time.time())] == ["k2"]
    finally:
        await second.close()


async def test_concurrent_callers_share_commits_and_each_gets_its_answer(ledger: Ledger) -> None:
    keys = [f"k{i}" for i in range(200)]
    await ledger.claim([claim(k, f"f:{k}") for k in keys])
    await asyncio.gather(*(ledger.mark_sending([k]) for k in keys))
    counts = await ledger.counts()
    assert [(c.state, c.count) for c in counts] == [(State.SENDING, 200)]


async def test_one_bad_job_does_not_undo_the_others(ledger: Ledger) -> None:
    bad_claim = Claim(
        key="k2", source="erp", rule="r", sink="ro", origin="o", recipient="x", text=None, expires_at=None
    )  # type: ignore[arg-type]  # NOT NULL violation
    results = await asyncio.gather(
        ledger.claim([claim("k1")]),
        ledger.claim([bad_claim]),
        ledger.set_note("s", "k", "v"),
        return_exceptions=True,
    )
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    assert [e.key for e in await ledger.pending(["ro"], 10, claimed_before=time.time())] == ["k1"]
    assert await ledger.get_note("s", "k") == "v"
    assert await ledger.get_note("s", "missing") is None


async def test_counts_and_recent(ledger: Ledger) -> None:
    await ledger.claim([claim("a"), claim("b", "f:3"), claim("c", "f:4", failed="template error")])
    await ledger.record([Transition("a", State.UNKNOWN, "read timeout")])
    by_state = {c.state: c.count for c in await ledger.counts()}
    assert by_state == {State.PENDING: 1, State.FAILED: 1, State.UNKNOWN: 1}
    recent = await ledger.recent([State.FAILED, State.UNKNOWN], 5)
    assert {e.key for e in recent} == {"a", "c"}


async def test_unsupported_scheme_is_a_config_error(tmp_path: Path) -> None:
    from connector.errors import ConfigError

    with pytest.raises(ConfigError, match="not supported"):
        await open_ledger("postgresql://localhost/test", tmp_path)


async def test_entries_by_key(ledger: Ledger) -> None:
    await ledger.claim([claim("a"), claim("b", "f:3")])
    assert {e.key for e in await ledger.entries(["a", "b", "missing"])} == {"a", "b"}
    assert await ledger.entries([]) == []


async def test_the_log_is_checkpointed_off_the_writer(ledger: Ledger, tmp_path: Path) -> None:
    # The writer never checkpoints inside a commit (that stalled every send queued behind it); the
    # checkpoint thread copies the log into the database file itself within about a second. Seen
    # from outside: a copy of the database file alone, without its -wal, holds the rows.
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

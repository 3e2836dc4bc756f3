"""What the status page reads from the ledger (connector/ledger/views.py), on SQLite and PostgreSQL:
the failures and unknowns a page at a time, the search, ids over every state, holds, instances,
budgets, one event's history, counts read beside the writer; and that the queries can use the
indexes they were written for."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connector.ledger import Claim, Decision, SqlLedger, State, Transition, Verdict, open_ledger
from connector.ledger.keys import key_range
from connector.ledger.views import Cursor, plan_sql
from tests.ledgers import BACKENDS, joined, ledger_url, raw_sql

T0 = 1_700_000_000.0


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with ledger_url(request.param, tmp_path) as found:
        yield found


@pytest.fixture
async def ledger(url: str, tmp_path: Path) -> AsyncIterator[SqlLedger]:
    async with joined(url, tmp_path) as opened:
        yield opened


def message(key: str, *, source: str = "erp", rule: str = "confirm", to: str = "+40740123456") -> Claim:
    return Claim(
        key=key, source=source, rule=rule, sink="ro", origin=f"o:{key}", recipient=to, text=f"hi {key}",
        expires_at=None,
    )  # fmt: skip


async def settle(
    ledger: SqlLedger, url: str, claim: Claim, state: State, at: float | None = None, detail: str = ""
) -> None:
    """A message recorded in `state`, at time `at` if given (the ledger stamps now: set by hand)."""
    if state is State.FAILED:
        await ledger.claim([dataclasses.replace(claim, failed=detail or "refused")])
    else:
        await ledger.claim([claim])
        if state is not State.PENDING:
            await ledger.mark_sending([claim.key])
            await ledger.record([Transition(claim.key, state, detail)])
    if at is not None:
        raw_sql(url, "UPDATE sends SET updated_at = ? WHERE key = ?", [at, claim.key])


async def test_failures_and_unknowns_newest_first_a_page_at_a_time(ledger: SqlLedger, url: str) -> None:
    # Ties in time are common (a batch is stamped once): the id breaks them, and no page repeats
    # or loses a row at a page's edge.
    wanted = []
    for i, (state, at) in enumerate(
        [(State.FAILED, T0 + 5), (State.UNKNOWN, T0 + 5), (State.FAILED, T0 + 5), (State.UNKNOWN, T0 + 3),
         (State.FAILED, T0 + 9), (State.FAILED, T0 + 1), (State.UNKNOWN, T0 + 5)]
    ):  # fmt: skip
        key = f"{i:02x}" * 16
        await settle(ledger, url, message(key), state, at)
        wanted.append((-at, [-ord(c) for c in key], key))
    await settle(ledger, url, message("ee" * 16), State.SENT, T0 + 100)
    await settle(ledger, url, message("ef" * 16), State.PENDING, T0 + 100)
    expected = [key for *_, key in sorted(wanted)]

    seen: list[str] = []
    after: Cursor | None = None
    pages = 0
    while True:
        page = await ledger.overview("", after, 3, None)
        seen += [e.key for e in page.attention]
        assert all(e.state in (State.FAILED, State.UNKNOWN) for e in page.attention)
        pages += 1
        if page.more is None:
            break
        after = Cursor.parse(str(page.more))  # through its text, as the page's link carries it
    assert seen == expected
    assert pages == 3


async def test_the_search_matches_an_id_prefix_a_source_or_rule_and_the_last_digits(
    ledger: SqlLedger, url: str
) -> None:
    rows = {
        "0a1f" + "0" * 28: message("0a1f" + "0" * 28, source="erp", rule="confirm", to="+40740111222"),
        "0a20" + "0" * 28: message("0a20" + "0" * 28, source="shop", rule="confirm", to="+40740333444"),
        "ff00" + "0" * 28: message("ff00" + "0" * 28, source="orders", rule="reminder", to="+40740555222"),
        "1234" + "0" * 28: message("1234" + "0" * 28, source="shop_eu", rule="promo%", to="+40740999888"),
    }
    for i, claim in enumerate(rows.values()):
        await settle(ledger, url, claim, State.FAILED if i % 2 else State.UNKNOWN, T0 + i)
    await settle(ledger, url, message("0a1e" + "1" * 28, to="+40740000222"), State.SENT, T0)  # not listed

    async def found(search: str) -> set[str]:
        return {e.key[:4] for e in (await ledger.overview(search, None, 50, None)).attention}

    assert await found("") == {"0a1f", "0a20", "ff00", "1234"}
    assert await found("0a1") == {"0a1f"}  # an id prefix: the range ends before 0a2
    assert await found("0A1F") == {"0a1f"}  # ids are matched whatever the case typed
    assert await found("0a") == {"0a1f", "0a20"}
    assert await found("ff") == {"ff00"}  # no upper bound after ff
    assert await found("shop") == {"0a20", "1234"}  # a source prefix
    assert await found("remind") == {"ff00"}  # a rule prefix
    assert await found("promo%") == {"1234"}  # written as typed, not a LIKE pattern
    assert await found("promo_") == set()
    assert await found("222") == {"0a1f", "ff00"}  # last digits (the sent one is not listed)
    assert await found("0555222") == {"ff00"}
    assert await found("%") == set()
    assert await found("nothing") == set()


def test_key_ranges_end_where_the_prefix_does() -> None:
    assert key_range("0a1") == ("0a1", "0a2")
    assert key_range("09") == ("09", "0a")
    assert key_range("0f") == ("0f", "1")
    assert key_range("aff") == ("aff", "b")
    assert key_range("ff") == ("ff", None)


async def test_an_id_search_finds_a_message_of_any_state_through_the_primary_key(
    ledger: SqlLedger, url: str
) -> None:
    key = "c0ffee" + "1" * 26
    await settle(ledger, url, message(key), State.SENT, T0)
    await settle(ledger, url, message("c0ffef" + "1" * 26), State.FAILED, T0)
    short = await ledger.overview("c0ffe", None, 50, None)
    assert short.by_id == []  # too short to look beyond the failures: few ids would match
    assert [e.key for e in short.attention] == ["c0ffef" + "1" * 26]
    found = await ledger.overview("C0FFEE", None, 50, None)
    assert [(e.key, e.state) for e in found.by_id] == [(key, State.SENT)]
    assert found.attention == []


async def test_the_overview_has_holds_instances_and_the_days_spend(ledger: SqlLedger, url: str) -> None:
    assert await ledger.hold("csv:erp:orders.csv") is not None
    spent = "INSERT INTO budgets (sink, day, spent) VALUES ('ro', '2031-05-01', 17), ('ro', '2031-04-30', 9)"
    raw_sql(url, spent)
    seen = await ledger.overview("", None, 10, "2031-05-01")
    assert [(h.name, h.owner) for h in seen.holders] == [("csv:erp:orders.csv", ledger.instance_id)]
    assert [i.id for i in seen.instances] == [ledger.instance_id]
    assert seen.instances[0].expires_at > time.time()
    assert seen.spent == {"ro": 17}
    assert (await ledger.overview("", None, 10, None)).spent == {}


async def test_an_events_record_has_its_history_and_a_persons_decision(ledger: SqlLedger, url: str) -> None:
    key = "ab" * 16
    await settle(ledger, url, message(key), State.UNKNOWN, detail="read timeout")
    await ledger.resolve([key], Decision(Verdict.SENT, "seen on the phone", "ana"))
    found = await ledger.record_page(key)
    assert found is not None
    entry, steps = found
    assert (entry.state, entry.text, entry.attempts) == (State.SENT, f"hi {key}", 1)
    assert [s.state for s in steps] == ["claimed", "unknown", "sent"]
    assert steps[-1].actor == "ana" and "seen on the phone" in steps[-1].detail
    assert steps[1].detail == "read timeout"
    assert await ledger.record_page("cd" * 16) is None


async def test_counts_read_aside_are_the_counts(ledger: SqlLedger, url: str) -> None:
    for i, state in enumerate([State.SENT, State.SENT, State.FAILED, State.UNKNOWN, State.PENDING]):
        await settle(ledger, url, message(f"{i:032x}", rule="r2" if i % 2 else "r1"), state, T0)
    aside = await ledger.counts_aside()  # SQLite: another connection, reading what is committed
    assert aside == await ledger.counts()
    assert sum(c.count for c in aside) == 5


# -- the plans -----------------------------------------------------------------------------------


def explain(url: str, sql: str, params: list[Any]) -> str:
    """The query plan as text. PostgreSQL is told to avoid scans it can: on a tiny table it would
    pick one anyway, so the plan then shows whether the index can be used at all."""
    if url.startswith("sqlite:///"):
        return " ".join(str(r[-1]) for r in raw_sql(url, "EXPLAIN QUERY PLAN " + sql, params))
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("SET enable_seqscan = off")
        db.execute("SET enable_bitmapscan = off")
        rows = db.execute("EXPLAIN " + sql.replace("?", "%s"), params).fetchall()
    return " ".join(str(r[0]) for r in rows)


@pytest.mark.parametrize(
    ("search", "after"),
    [("", None), ("", Cursor(T0, "ab" * 16)), ("shop", None), ("0a1", None), ("4567", None)],
)
async def test_the_failures_are_read_through_the_partial_index(
    ledger: SqlLedger, url: str, search: str, after: Cursor | None
) -> None:
    sql, params = plan_sql(search, after, 50)
    plan = explain(url, sql, list(params))
    assert "sends_attention" in plan, plan


async def test_sqlite_could_not_use_the_index_with_the_states_as_parameters(tmp_path: Path) -> None:
    # Why views.py writes the states as literals: as parameters, SQLite cannot prove the partial
    # index's condition and reads the whole table. (PostgreSQL can, while it plans with the values;
    # not with a generic plan of a prepared statement, which psycopg makes after five runs.)
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    await (await open_ledger(url, tmp_path)).close()
    sql = "SELECT key FROM sends WHERE state IN (?, ?) ORDER BY updated_at DESC LIMIT 50"
    plan = explain(url, sql, ["failed", "unknown"])
    assert "sends_attention" not in plan and "SCAN sends" in plan, plan


async def test_an_id_search_uses_the_primary_key(ledger: SqlLedger, url: str) -> None:
    sql = "SELECT key FROM sends WHERE key >= ? AND key < ? ORDER BY key LIMIT 10"
    plan = explain(url, sql, ["c0ffee", "c0ffef"])
    assert "sqlite_autoindex_sends_1" in plan or "sends_pkey" in plan, plan

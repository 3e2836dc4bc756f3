"""The engine end to end inside one process: rules -> ledger -> sink -> statuses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.config import RuleConfig
from connector.engine import Engine
from connector.events import Event, Message, Outcome, Record
from connector.ledger import Ledger, SqlLedger, State, open_ledger
from connector.rules import compile_rules
from sinks.base import SendingHook, SettledHook, Sink
from sources.base import Accepted, DeliveryNote


class ScriptedSink(Sink):
    """A sink whose answers a test decides; it keeps what it was asked to send."""

    type_name = "scripted"

    def __init__(self, answer: Callable[[Message], Outcome] | None = None) -> None:
        super().__init__("s", None, httpx.AsyncClient())
        self.answer = answer or (lambda m: Outcome.sent(f"id-{m.to[-3:]}"))
        self.sent: list[Message] = []
        self.marked_before_send: list[bool] = []

    async def send(
        self, messages: Sequence[Message], on_sending: SendingHook, on_settled: SettledHook | None = None
    ) -> list[Outcome]:
        if self.paused:
            return [Outcome.held(f"paused: {self.pause_reason}") for _ in messages]
        outcomes = []
        for message in messages:  # one request per message, each reported as it settles
            await on_sending([message])
            self.sent.append(message)
            outcomes.append(self.answer(message))
            if on_settled is not None:
                await on_settled([message], outcomes[-1:])
            await self.between()
        return outcomes

    async def between(self) -> None:
        return None


def rule(**overrides: Any) -> RuleConfig:
    base: dict[str, Any] = {
        "name": "confirm",
        "source": "erp",
        "to": "{{ row['Phone'] }}",
        "country": "RO",
        "message": "Hi {{ row['Name'] }}",
        "sink": "s",
        "when": "row['Status'] == 'ok'",
    }
    base.update(overrides)
    return RuleConfig.model_validate(base)


def rec(
    phone: str = "0740123456",
    name: str = "Ana",
    status_cell: str = "",
    origin: str = "f1:2",
    key: str | None = None,
    state: str = "ok",
    problem: str | None = None,
) -> Record:
    return Record(
        source="erp",
        row={"Phone": phone, "Name": name, "Status": state},
        origin=origin,
        key=key,
        status=status_cell,
        problem=problem,
    )


@pytest.fixture
async def ledger(tmp_path: Path) -> Ledger:
    ledger = await open_ledger("sqlite:///l.db", tmp_path)
    await ledger.join()
    yield ledger
    await ledger.close()


def engine(ledger: Ledger, sink: Sink, *rules: RuleConfig) -> Engine:
    return Engine(compile_rules(list(rules) or [rule()]), {"s": sink}, ledger)


async def test_statuses_for_send_fail_and_no_rule(ledger: Ledger) -> None:
    sink = ScriptedSink()
    statuses = await engine(ledger, sink).process(
        [rec(), rec("0212345678", origin="f1:3"), rec(state="no", origin="f1:4"), rec("12", origin="f1:5")]
    )
    assert statuses[0] is not None and statuses[0].startswith("sent ") and statuses[0].endswith("id-456")
    assert statuses[1] is not None and statuses[1].startswith("failed: ") and "fixed-line" in statuses[1]
    assert statuses[2] is None
    assert statuses[3] is not None and statuses[3].startswith("failed: ")
    assert [m.to for m in sink.sent] == ["+40740123456"]


async def test_reread_of_the_same_record_reports_without_resending(ledger: Ledger) -> None:
    sink = ScriptedSink()
    first = await engine(ledger, sink).process([rec()])
    again = await engine(ledger, sink).process([rec()])
    assert again == first
    assert len(sink.sent) == 1


async def test_same_message_from_another_record_is_skipped(ledger: Ledger) -> None:
    sink = ScriptedSink()
    await engine(ledger, sink).process([rec()])
    [status] = await engine(ledger, sink).process([rec(origin="f2:2")])
    assert status is not None and status.startswith("skipped: duplicate of a message already sent")
    assert len(sink.sent) == 1


async def test_dedupe_window_zero_lets_the_same_text_go_again(ledger: Ledger) -> None:
    sink = ScriptedSink()
    await engine(ledger, sink, rule(dedupe_window="0s")).process([rec()])
    [status] = await engine(ledger, sink, rule(dedupe_window="0s")).process([rec(origin="f2:2")])
    assert status is not None and status.startswith("sent ")
    assert len(sink.sent) == 2


async def test_key_identity_never_sends_twice_even_with_new_text(ledger: Ledger) -> None:
    sink = ScriptedSink()
    await engine(ledger, sink).process([rec(key="A-1")])
    [status] = await engine(ledger, sink).process([rec(key="A-1", name="Other", origin="f2:2")])
    assert status is not None and status.startswith("skipped: ")
    assert len(sink.sent) == 1


async def test_resend_sends_again_exactly_once(ledger: Ledger) -> None:
    sink = ScriptedSink()
    await engine(ledger, sink).process([rec(key="A-1")])
    [status] = await engine(ledger, sink).process([rec(key="A-1", status_cell="resend")])
    assert status is not None and status.startswith("sent ")
    [kept] = await engine(ledger, sink).process([rec(key="A-1", status_cell=status)])
    assert kept == status
    assert len(sink.sent) == 2


async def test_existing_status_and_malformed_rows(ledger: Ledger) -> None:
    sink = ScriptedSink()
    statuses = await engine(ledger, sink).process(
        [rec(status_cell="sent earlier"), rec(problem="row has 5 fields, header has 4", origin="f1:3")]
    )
    assert statuses == ["sent earlier", "failed: row has 5 fields, header has 4"]
    assert sink.sent == []


async def test_held_while_paused_then_sent_by_retry(ledger: Ledger) -> None:
    sink = ScriptedSink()
    sink.pause("no credits")
    eng = engine(ledger, sink)
    [status] = await eng.process([rec()])
    assert status == "pending: paused: no credits"
    assert await eng.retry_pending() == []  # still paused: nothing tried
    sink.resume()
    [entry] = await eng.retry_pending()
    assert entry.state is State.SENT and entry.origin == "f1:2"
    assert len(sink.sent) == 1


async def test_unknown_is_never_resent(ledger: Ledger) -> None:
    sink = ScriptedSink(lambda m: Outcome.unknown("read timeout"))
    eng = engine(ledger, sink)
    [status] = await eng.process([rec()])
    assert status == "unknown: read timeout"
    assert await eng.retry_pending() == []
    assert await eng.process([rec()]) == ["unknown: read timeout"]
    assert len(sink.sent) == 1


async def test_sending_is_durable_before_the_sink_sends(ledger: Ledger) -> None:
    seen: list[State] = []

    class Peeking(ScriptedSink):
        async def send(
            self, messages: Sequence[Message], on_sending: SendingHook, on_settled: SettledHook | None = None
        ) -> list[Outcome]:
            await on_sending(messages)
            [(_, entry)] = (await ledger.claim([_claim_like(messages[0])])).answers
            seen.append(entry.state)
            return [Outcome.sent("x") for _ in messages]

    await engine(ledger, Peeking()).process([rec()])
    assert seen == [State.SENDING]


def _claim_like(message: Message) -> Any:
    from connector.ledger import Claim

    return Claim(
        key=message.id,
        source="erp",
        rule="confirm",
        sink="s",
        origin="f1:2",
        recipient=message.to,
        text=message.text,
        expires_at=None,
    )


async def test_several_rules_share_one_status_cell(ledger: Ledger) -> None:
    sink = ScriptedSink()
    eng = engine(
        ledger, sink, rule(), rule(name="ops", to="+40741000111", message="Order for {{ row['Name'] }}")
    )
    [status] = await eng.process([rec()])
    assert status is not None and status.startswith("sent ") and "[confirm]" in status and "[ops]" in status
    assert len(sink.sent) == 2


async def test_each_outcome_is_durable_before_the_batch_ends(ledger: Ledger, tmp_path: Path) -> None:
    import sqlite3

    snapshots: list[list[str]] = []

    class Observed(ScriptedSink):
        async def between(self) -> None:
            with sqlite3.connect(tmp_path / "l.db") as other:  # what a crash right now would leave
                snapshots.append([s for (s,) in other.execute("SELECT state FROM sends ORDER BY origin")])

    await engine(ledger, Observed()).process([rec(), rec("0740123457", origin="f1:3")])
    assert snapshots == [["sent", "pending"], ["sent", "sent"]]


async def test_sweeper_never_takes_a_fresh_claim_from_the_path_that_made_it(ledger: Ledger) -> None:
    """The retry sweeper runs beside file processing: a message claimed by `process` must not
    also be picked up as `pending` by `retry_pending` in the moment before `process` sends it."""
    sink = ScriptedSink()
    eng = engine(ledger, sink)
    real_claim = ledger.claim
    sweeps: list[Any] = []

    async def claim_then_sweep(claims: Any, delivery: Any = None) -> Any:
        answers = await real_claim(claims, delivery)
        sweeps.append(await eng.retry_pending())  # the sweeper wins the race to the rows
        return answers

    ledger.claim = claim_then_sweep  # type: ignore[method-assign]
    [status] = await eng.process([rec()])
    assert sweeps == [[]]
    assert status is not None and status.startswith("sent ")
    assert len(sink.sent) == 1


async def test_sweeper_takes_held_messages_and_what_a_stopped_instance_released(
    ledger: SqlLedger, tmp_path: Path
) -> None:
    sink = ScriptedSink()
    sink.pause("no credits")
    await engine(ledger, sink).process([rec()])  # held: pending with a reason, owned by nobody
    other = await open_ledger("sqlite:///l.db", tmp_path)
    await other.join()
    await other.claim([_claim_like(Message("orphan", "+40740123459", "hi"))])
    sweeper = engine(ledger, ScriptedSink())
    settled = await sweeper.retry_pending()
    assert [e.recipient for e in settled] == ["+40740123456"]  # not the orphan: its owner lives
    await other.close()  # a graceful stop releases its claims at once
    settled = await sweeper.retry_pending()
    assert [e.recipient for e in settled] == ["+40740123459"]


async def test_a_claim_whose_caller_gave_up_is_swept_by_its_own_instance(
    ledger: SqlLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A webhook's claim that committed after the sender was told 503: owned by this instance, yet
    # no path of it goes on with the message. Nobody else may take it (its owner lives): it is the
    # owner's own sweep that sends it, even when another instance is the one sweeping for all.
    await ledger.claim([_claim_like(Message("k-late", "+40740123459", "hi"))])
    sink = ScriptedSink()
    eng = engine(ledger, sink)
    monkeypatch.setattr("connector.engine.IDLE_OWN_S", 0.0)
    settled = await eng.retry_pending(unowned=False)
    assert [e.key for e in settled] == ["k-late"] and len(sink.sent) == 1
    assert await eng.retry_pending(unowned=False) == []


def note(key: str, made: list[list[list[Event]]]) -> DeliveryNote:
    def answer(events: list[list[Event]]) -> str:
        made.append(events)
        return f"answer {len(made)}"

    return DeliveryNote("webhook:t", key, answer)


async def test_accept_answers_once_claims_are_durable_and_sends_behind(
    ledger: Ledger, tmp_path: Path
) -> None:
    import asyncio
    import sqlite3

    gate = asyncio.Event()

    class Slow(ScriptedSink):
        async def between(self) -> None:
            await gate.wait()

    sink = Slow()
    eng = engine(ledger, sink)
    made: list[list[list[Event]]] = []
    records = [rec(), rec("12", origin="w:2"), rec(state="no", origin="w:3")]
    accepted = await eng.accept(records, note("d1", made))
    assert accepted == Accepted("answer 1", replayed=False)
    [[events, bad, none]] = made
    assert [e.state for e in events] == ["pending"] and none == []
    assert bad[0].state == "failed" and "not a valid" in bad[0].reason
    with sqlite3.connect(tmp_path / "l.db") as other:  # committed before the answer
        assert other.execute("SELECT count(*) FROM sends").fetchone() == (2,)
    gate.set()
    await eng.drain()
    assert len(sink.sent) == 1
    again = await eng.accept(records, note("d1", made))  # the sender retries the same delivery
    assert again == Accepted("answer 1", replayed=True) and len(made) == 1
    assert len(sink.sent) == 1


async def test_accepted_but_unsent_before_a_restart_is_sent_once_after(ledger: Ledger) -> None:
    first = engine(ledger, ScriptedSink())
    first.sinks["s"].pause("gone")  # the process dies before sending: nothing leaves
    await first.accept([rec()], note("d1", []))
    await first.drain()
    restarted_sink = ScriptedSink()
    restarted = engine(ledger, restarted_sink)
    assert [e.state for e in await restarted.retry_pending()] == [State.SENT]
    assert await restarted.retry_pending() == []
    assert len(restarted_sink.sent) == 1

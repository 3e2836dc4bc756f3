"""The path of a record: rules -> identity -> ledger claim -> sink -> ledger outcome -> status.

Sources call `Engine.process(records)` and get one status per record back (None where no rule
wanted it). Held messages are retried later by `Engine.retry_pending`, whose new statuses the
runtime hands back to the sources.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import structlog

from connector.batch_gate import BatchGate
from connector.entries import Row, as_row, from_row, held, paired, settled, transitions_of
from connector.events import Event, Message, Outcome, Record
from connector.ledger import Claim, Claimed, ClaimResult, Delivery, Entry, Ledger, State, Transition
from connector.policy import PolicyContext
from connector.policy_step import PolicyStep
from connector.rules import CompiledRule, rules_by_source
from connector.send_queue import SendQueues
from connector.status import failed, is_resend, of_duplicate, of_entry
from sinks.base import STOPPED, Sink
from sources.base import Accepted, DeliveryNote

log = structlog.get_logger(__name__)

IDLE_OWN_S = 5.0  # a claim of this instance no path has taken up for this long is swept


def identity_key(*parts: str) -> str:
    """The idempotency key: a digest of (source, rule, identity), stable across runs."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return digest.hexdigest()


@dataclass(slots=True)
class _Slot:
    """One (record, rule) pair on its way through the pipeline."""

    record: int
    rule: str
    status: str | None = None
    entry: Entry | None = None
    duplicate: bool = False


SendPlan = dict[str, list[tuple[_Slot, Entry]]]
SendObserver = Callable[[str, Sequence[Outcome], float | None], None]
"""(sink, outcomes of one request, seconds the request took or None when none left): metrics."""


class Engine:
    def __init__(
        self,
        rules: Sequence[CompiledRule],
        sinks: Mapping[str, Sink],
        ledger: Ledger,
        observer: SendObserver | None = None,
        context: PolicyContext | None = None,
    ) -> None:
        self.sinks = sinks
        self.ledger = ledger
        self.policy = PolicyStep(rules, context)
        self._rules = rules_by_source(rules)
        self._gate = BatchGate()
        # Keys being sent by this process. Reserved synchronously, right after the ledger answered,
        # so two paths of this process never send one key; other processes are kept off by the
        # ledger, where each open message has one owner and only the owner can mark it `sending`.
        self._inflight: set[str] = set()
        self._queued: SendQueues[tuple[Row, ...]] = SendQueues(
            self._send_queued, lambda sink: self.sinks[sink].in_flight
        )
        self.observer = observer

    def rules_for(self, source: str) -> list[CompiledRule]:
        return self._rules.get(source, [])

    async def reconfigure(
        self, rules: Sequence[CompiledRule], sinks: Mapping[str, Sink], context: PolicyContext
    ) -> None:
        """A reloaded config's rules, sinks and policies, taken between batches: the batches in
        hand finish as they began (their requests on the old sinks); new ones wait for the swap."""
        async with self._gate.closed():
            on_wait = self.policy.on_wait
            self.policy = PolicyStep(rules, context)
            self.policy.on_wait = on_wait
            self._rules = rules_by_source(rules)
            self.sinks = sinks

    async def process(self, records: Sequence[Record]) -> list[str | None]:
        """Rules, ledger and sends for a batch; one status per record once all are settled."""
        async with self._gate.batch():
            return await self._process(records)

    async def _process(self, records: Sequence[Record]) -> list[str | None]:
        judged = time.time()  # the policies judge the claims now: the sends that follow need no second look
        statuses, slots, plan, claimed = await self._claim_records(records)
        if plan:
            admitted = claimed.admitted
            await asyncio.gather(*(self._send(sink, pairs, judged, admitted) for sink, pairs in plan.items()))
        by_record: dict[int, list[_Slot]] = defaultdict(list)
        for slot in slots:
            by_record[slot.record].append(slot)
        for index, record_slots in by_record.items():
            statuses[index] = _combine(record_slots)
        return statuses

    async def accept(self, records: Sequence[Record], note: DeliveryNote) -> Accepted:
        """Claim durably and answer at once; the sends go on behind the ledger (webhook intake).

        When this returns, every record's intent is committed with the delivery's answer: a crash
        now is recovered when this instance's lease lapses (another takes its claims), never lost,
        never doubled. A delivery recorded before is answered as it was the first time, and only
        what it left pending with no live owner is sent.
        """
        async with self._gate.batch():
            _, _, plan, claimed = await self._claim_records(records, note)
        refused = []
        for sink, pairs in plan.items():
            rows = tuple(as_row(entry) for _, entry in pairs)
            if not self._queued.put(sink, rows):
                refused.append(rows)
        if refused:  # stopping: taken in, and left for the next start
            await self._leave_pending(refused)
        if claimed.replayed is not None:
            return Accepted(claimed.replayed, replayed=True)
        assert claimed.note is not None
        return Accepted(claimed.note, replayed=False)

    @property
    def background(self) -> Sequence[asyncio.Task[None]]:
        """The workers making the sends `accept` queued (the stop waits for them)."""
        return self._queued.workers

    async def drain(self) -> None:
        """Wait for the sends `accept` queued, however long they take (tests)."""
        await self._queued.join()

    async def stop_queued(self) -> int:
        """Stopping: the sends `accept` queued and no worker took stay `pending` for the next
        start, saying so. Answers how many."""
        left = self._queued.stop()
        await self._leave_pending(left)
        return sum(len(rows) for rows in left)

    async def _leave_pending(self, queued: Sequence[tuple[Row, ...]], why: str = STOPPED) -> None:
        left = [(row[0], row[10]) for rows in queued for row in rows]  # (key, created_at)
        self._inflight.difference_update(key for key, _ in left)
        if left:
            await self.ledger.record([Transition(key, State.PENDING, why, at) for key, at in left])

    async def _send_queued(self, sink_name: str, rows: tuple[Row, ...]) -> None:
        async with self._gate.batch():
            if sink_name not in self.sinks:  # a reload took the sink away: wait for it to come back
                await self._leave_pending([rows], f"sink {sink_name} is no longer in the config")
                return
            await self._send_reserved(sink_name, [from_row(row) for row in rows])

    async def _claim_records(
        self, records: Sequence[Record], note: DeliveryNote | None = None
    ) -> tuple[list[str | None], list[_Slot], SendPlan, Claimed]:
        statuses: list[str | None] = [None] * len(records)
        slots: list[_Slot] = []
        claims: list[Claim] = []
        now = time.time()
        for index, record in enumerate(records):
            if record.status and not is_resend(record.status):
                statuses[index] = record.status  # settled earlier: keep what the cell says
                continue
            if record.problem is not None:
                statuses[index] = failed(record.problem)
                continue
            for rule in self.rules_for(record.source):
                decision = rule.evaluate(record.row)
                if decision is None:
                    continue
                claim = self._claim(record, rule, decision.to, decision.text, decision.problem, now)
                claims.append(self.policy.admit(claim, decision, now))
                slots.append(_Slot(index, rule.name))
        if not claims and note is None:
            return statuses, slots, {}, Claimed([])
        plan, claimed = await self._reserve(len(records), slots, claims, note)
        return statuses, slots, plan, claimed

    def _claim(
        self,
        record: Record,
        rule: CompiledRule,
        to: str | None,
        text: str | None,
        problem: str | None,
        now: float,
    ) -> Claim:
        expires_at: float | None = None
        if record.key is not None:
            key = identity_key(record.source, rule.name, "key", record.key)
        elif problem is not None or to is None or text is None:
            key = identity_key(record.source, rule.name, "origin", record.origin)
        else:
            key = identity_key(record.source, rule.name, "message", to, text)
            expires_at = now + rule.config.dedupe_window
        return Claim(
            key=key,
            source=record.source,
            rule=rule.name,
            sink=rule.sink,
            origin=record.origin,
            recipient=to or "",
            text=text or "",
            expires_at=expires_at,
            force=is_resend(record.status),
            failed=problem,
        )

    async def _reserve(
        self, count: int, slots: list[_Slot], claims: list[Claim], note: DeliveryNote | None
    ) -> tuple[SendPlan, Claimed]:
        """Claim, then reserve what to send before anything else runs on the loop."""
        delivery = None
        if note is not None:

            def answer(answers: list[tuple[ClaimResult, Entry]]) -> str:
                found = zip(slots, answers, strict=True)
                return note.answer(
                    _events(count, ((s, r is ClaimResult.DUPLICATE, e) for s, (r, e) in found))
                )

            delivery = Delivery(note.scope, note.key, answer)
        claimed = await self.ledger.claim(claims, delivery)
        if (on_wait := self.policy.on_wait) is not None:  # waiting from now, as claimed: wake for them
            for result, entry in claimed.answers:
                if result is ClaimResult.NEW and entry.not_before is not None:
                    on_wait(entry.not_before)
        plan: SendPlan = defaultdict(list)
        if claimed.replayed is not None:  # only what the first delivery left to nobody
            for _, entry in claimed.answers:
                if self._take(entry):
                    plan[entry.sink].append((_Slot(-1, entry.rule), entry))
            return plan, claimed
        for slot, (result, entry) in zip(slots, claimed.answers, strict=True):
            slot.entry = entry
            if result is ClaimResult.DUPLICATE:
                slot.duplicate = True
                slot.status = of_duplicate(entry)
            elif self._take(entry):
                plan[entry.sink].append((slot, entry))
            else:
                slot.status = of_entry(entry)
        return plan, claimed

    def _take(self, entry: Entry) -> bool:
        """Whether this process sends `entry` now: pending, this instance's, and no other path of
        this process has it. If so it is reserved at once (no await between the check and this)."""
        if entry.state is not State.PENDING or entry.owner != self.ledger.instance_id:
            return False
        if entry.key in self._inflight:
            return False
        self._inflight.add(entry.key)
        return True

    async def _send(
        self, sink_name: str, pairs: list[tuple[_Slot, Entry]], judged: float, admitted: AbstractSet[str]
    ) -> None:
        entries = [entry for _, entry in pairs]
        finished = await self._send_reserved(sink_name, entries, judged, admitted)
        for (slot, _), entry in zip(pairs, finished, strict=True):
            slot.status = of_entry(entry)
            slot.entry = entry

    async def _send_reserved(
        self,
        sink_name: str,
        entries: Sequence[Entry],
        judged: float | None = None,
        admitted: AbstractSet[str] = frozenset(),
    ) -> list[Entry]:
        """Send entries this process reserved in `_inflight`; answer each as it now stands.
        `judged`: when this process's policies judged them (their claim), if it did; `admitted`:
        those the ledger let go as it recorded their claim (their gates passed then)."""
        keys = [e.key for e in entries]
        try:
            now = time.time()
            going, stay = self.policy.recheck(entries, now, judged)
            # Caps, budgets: the ledger's to check, at once (unless it did as it recorded the claims).
            if gates := self.policy.gates(going, now, admitted):
                going, refused = self.policy.refused(going, await self.ledger.admit(gates))
                stay += refused
            at = await self.ledger.record(stay) if stay else 0.0
            now_as = {t.key: held(e, t, at) for e, t in paired(entries, stay)}
            if going:
                sent = await self._send_going(sink_name, going)
                now_as.update((e.key, e) for e in sent)
        finally:
            self._inflight.difference_update(keys)
        return [now_as[e.key] for e in entries]

    async def _send_going(self, sink_name: str, entries: Sequence[Entry]) -> list[Entry]:
        sink = self.sinks[sink_name]
        recorded: dict[str, float] = {}  # message id -> the ledger's time of its outcome
        claimed = {e.key: e.created_at for e in entries}
        left_at: dict[str, float] = {}  # first message id of a request -> when it left

        async def on_sending(messages: Sequence[Message]) -> None:
            await self._on_sending(messages)
            left_at[messages[0].id] = time.perf_counter()

        async def on_settled(messages: Sequence[Message], outcomes: Sequence[Outcome]) -> None:
            started = left_at.pop(messages[0].id, None)
            took = None if started is None else time.perf_counter() - started
            # Durable per request, not per batch: a crash then leaves only true in-flight sends unknown.
            at = (
                await self.ledger.record(transitions)
                if (transitions := transitions_of(messages, outcomes, claimed))
                else 0.0
            )
            recorded.update((m.id, at) for m in messages)
            if self.observer is not None:
                self.observer(sink_name, outcomes, took)

        messages = [
            Message(id=e.key, to=e.recipient, text=e.text, meta={"rule": e.rule, "source": e.source})
            for e in entries
        ]
        outcomes = await sink.send(messages, on_sending, on_settled)
        rest = [(m, o) for m, o in zip(messages, outcomes, strict=True) if m.id not in recorded]
        if rest:  # held without a request (paused sink), or a sink that does not report early
            if transitions := transitions_of([m for m, _ in rest], [o for _, o in rest], claimed):
                at = await self.ledger.record(transitions)
                recorded.update((m.id, at) for m, _ in rest)
            if self.observer is not None:
                self.observer(sink_name, [o for _, o in rest], None)
        # The ledger's time, so a status written now reads as one read from the ledger later.
        return [
            settled(e, o, recorded.get(e.key) or time.time()) for e, o in zip(entries, outcomes, strict=True)
        ]

    async def _on_sending(self, messages: Sequence[Message]) -> None:
        await self.ledger.mark_sending([m.id for m in messages])

    async def retry_pending(self, limit: int = 500, *, unowned: bool = True) -> list[Entry]:
        """Held messages whose sink is not paused, sent again: this instance's own that no path of
        it has in hand, and (`unowned`: the one instance that sweeps) those nobody owns. Answers
        the entries that settled."""
        async with self._gate.batch():
            return await self._retry_pending(limit, unowned=unowned)

    async def _retry_pending(self, limit: int, *, unowned: bool) -> list[Entry]:
        ready = [name for name, sink in self.sinks.items() if not sink.paused]
        pending = [e for e in await self.ledger.idle_pending(ready, limit, IDLE_OWN_S) if self._take(e)]
        busy: list[str] = []  # released a moment ago by a path of this process still finishing
        for entry in await self.ledger.take_pending(ready, limit) if unowned else []:
            if self._take(entry):
                pending.append(entry)
            else:
                busy.append(entry.key)
        await self.ledger.release(busy)  # the next sweep takes them
        done = [e for e in await self._send_taken(pending) if e.state is not State.PENDING]
        if pending:
            log.info("retried held messages", tried=len(pending), settled=len(done))
        return done

    async def send_claimed(self, entries: Sequence[Entry]) -> list[Entry]:
        """Send messages this instance has claimed (a `resend` decided by hand) the normal way:
        policies, gates, fencing, retries. Answers each as it now stands (still pending if held)."""
        async with self._gate.batch():
            return await self._send_taken([e for e in entries if e.sink in self.sinks and self._take(e)])

    async def _send_taken(self, pending: Sequence[Entry]) -> list[Entry]:
        by_sink: dict[str, list[Entry]] = defaultdict(list)
        for entry in pending:
            by_sink[entry.sink].append(entry)
        results = await asyncio.gather(*(self._send_reserved(name, group) for name, group in by_sink.items()))
        return [e for group in results for e in group]


def _events(count: int, found: Iterable[tuple[_Slot, bool, Entry]]) -> list[list[Event]]:
    """What `accept` answers, per record: (slot, is a duplicate, its entry) for each claim."""
    events: list[list[Event]] = [[] for _ in range(count)]
    for slot, duplicate, entry in found:
        state = "skipped" if duplicate else entry.state.value
        reason = of_duplicate(entry) if duplicate else entry.detail
        events[slot.record].append(Event(entry.key, slot.rule, state, reason))
    return events


def _combine(slots: list[_Slot]) -> str | None:
    """One status cell per record: a record that several rules wanted shows each, rule by rule."""
    if len(slots) == 1:
        return slots[0].status
    return " | ".join(f"{s.status} [{s.rule}]" for s in slots)

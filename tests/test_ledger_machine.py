"""A state machine over one ledger shared by three instances, on SQLite and on PostgreSQL.

What it proves: whatever the instances do, in whatever order (claim, `resend`, take, mark `sending`
from any instance on any key, record outcomes, release, pause past the lease, recover, renew,
stop and start again), no key goes to `sending` twice without a `resend`. Precisely: a NEW claim
answer starts a generation of its key; in one generation, once instance X marked the key
`sending`, no other instance marks it until X's attempt is recorded back as held (`pending`,
proven not taken), and after a final outcome (sent, failed, unknown, recovery's unknown too)
nobody marks it at all. X marking it again while it is still `sending` is allowed (a retry after
a 503).

Beside that invariant the machine keeps a model of every row (state, owner, origin, attempts) and
of the instances table, written from the rules as the ledger's docstrings state them, and compares
it with what the ledger answers after every step: a ledger that drifts from its own rules fails
here before it can double a send.

The processes follow the one rule the engine adds on top of the ledger: a process has at most one
request out per key (`Engine._inflight`); see `LedgerMachine.busy`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from connector.ledger import Claim, ClaimResult, Fenced, SqlLedger, State, Transition, open_ledger
from tests.ledgers import BACKENDS, lapse, ledger_url, raw_sql

T = TypeVar("T")

# Few keys, so that the instances keep meeting on the same ones; two sinks, so that a sweep for one
# sink is seen to leave the other's messages alone.
KEYS = ("k0", "k1", "k2")
SINK_OF = {"k0": "ro", "k1": "ro", "k2": "pk"}
SINKS = ("ro", "pk")
ORIGINS = ("f1:2", "f1:3")
SLOTS = (0, 1, 2)
# No lease runs out by itself within an example: only `lapse` ends one, so a replayed example
# (Hypothesis shrinking) meets the same leases as the first run.
LEASE_S = 3600.0
PAST = 1.0  # a fingerprint's dedupe window that is over: the next claim of its key is NEW
TABLES = ("sends", "notes", "instances", "holds")
OPEN = (State.PENDING, State.SENDING)
SETTLED = (State.SENT, State.FAILED, State.UNKNOWN)


@dataclass
class Row:
    """What the ledger should hold for one key, and where its generation stands."""

    state: State
    owner: str | None
    origin: str
    attempts: int
    created_at: float
    expired: bool
    generation: int
    sender: str | None = None  # the instance whose attempt of this generation may be on the wire
    settled: bool = False  # a final outcome was recorded in this generation


@dataclass(frozen=True)
class Attempt:
    """A request that left: its outcome is recorded later, possibly after a lease was lost."""

    key: str
    generation: int
    instance: str


@dataclass
class Process:
    """One connector process: its ledger, and the requests it has out whatever its lease does."""

    ledger: SqlLedger
    mine: list[str]  # every id this process had, as the ledger judges a late outcome by
    wire: list[Attempt] = field(default_factory=list)

    @property
    def me(self) -> str:
        return self.ledger.instance_id


@dataclass(frozen=True)
class ClaimSpec:
    """A claim as the machine draws it; printed in a failing example, so kept short."""

    key: str
    origin: str
    force: bool = False
    failed: str | None = None
    expired: bool = False

    def claim(self) -> Claim:
        return Claim(
            key=self.key,
            source="erp",
            rule="r",
            sink=SINK_OF[self.key],
            origin=self.origin,
            recipient="+40740123456",
            text="hi",
            expires_at=PAST if self.expired else None,
            force=self.force,
            failed=self.failed,
        )


claim_specs = st.builds(
    ClaimSpec,
    key=st.sampled_from(KEYS),
    origin=st.sampled_from(ORIGINS),
    force=st.booleans(),
    failed=st.sampled_from([None, None, None, "bad number"]),
    expired=st.sampled_from([False, False, False, True]),
)
slots = st.sampled_from(SLOTS)
# An index into a list the model builds (what is owned, what is on the wire), modulo its length.
PICKS = 16
picks = st.integers(min_value=0, max_value=PICKS - 1)


class Tables:
    """The ledger's database, emptied before every example over one connection kept for the
    whole test: an example is short, and connecting afresh each time was a good part of it."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite:///")
        if self.sqlite:
            self.lite = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
        else:
            self.pg = psycopg.connect(url, autocommit=True)

    def empty(self) -> None:
        # DELETE, not TRUNCATE: it waits for no lock a ledger of the previous example may hold.
        script = "".join(f"DELETE FROM {table};" for table in TABLES)
        if self.sqlite:
            self.lite.executescript(f"BEGIN;{script}COMMIT;")
        else:
            self.pg.execute(script)

    def close(self) -> None:
        if self.sqlite:
            self.lite.close()
        else:
            self.pg.close()


async def create_schema(url: str, folder: Path) -> None:
    ledger = await open_ledger(url, folder)
    await ledger.close()


def prepare(url: str, folder: Path) -> None:
    """The tables, before the first example empties them."""
    if not url.startswith("sqlite:///"):
        # The machine judges decisions, not durability: a commit need not wait for the disk, and
        # a failing example is shrunk sooner without the wait.
        raw_sql(url, f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET synchronous_commit = off")
    asyncio.run(create_schema(url, folder))


@settings(
    max_examples=120,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # A failure is shrunk to a few steps, which takes minutes (each example opens three
    # ledgers): one failure at a time, and no explaining pass on top.
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
class LedgerMachine(RuleBasedStateMachine):
    url: ClassVar[str] = ""
    folder: ClassVar[Path] = Path()
    tables: ClassVar[Tables]

    def __init__(self) -> None:
        super().__init__()
        self.tables.empty()
        # One loop per example: every ledger's tasks (the lease keeper, PostgreSQL's writer) live
        # and die with the example that opened them.
        self.loop = asyncio.new_event_loop()
        self.processes: list[Process] = []
        self.instances: dict[str, bool] = {}  # instance id -> lapsed (its row is still there)
        self.rows: dict[str, Row] = {}

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def live(self, instance: str) -> bool:
        return instance in self.instances and not self.instances[instance]

    async def _open(self) -> SqlLedger:
        ledger = await open_ledger(self.url, self.folder)
        try:
            await ledger.join(lease=LEASE_S)
        except BaseException:
            await ledger.close()
            raise
        return ledger

    def start(self) -> Process:
        process = Process(self.run(self._open()), [])
        process.mine.append(process.me)
        self.instances[process.me] = False
        return process

    @initialize(
        owners=st.lists(st.sampled_from([*SLOTS, None]), min_size=len(KEYS), max_size=len(KEYS)),
        sending=st.lists(st.booleans(), min_size=len(KEYS), max_size=len(KEYS)),
    )
    def start_instances(self, owners: list[int | None], sending: list[bool]) -> None:
        """Three instances, and messages some of them own and some are sending already: from the
        first step on, a pause or a stop has something to disturb (built through the rules, so
        checked like any step)."""
        for _ in SLOTS:
            self.processes.append(self.start())
        for key, slot, send in zip(KEYS, owners, sending, strict=True):
            if slot is not None:
                self.claim(slot, [ClaimSpec(key, ORIGINS[0])])
                if send:
                    self.mark(self.processes[slot], [[key]])

    def teardown(self) -> None:
        failures: list[BaseException] = []
        for process in self.processes:
            try:
                self.run(process.ledger.close())
            except Exception as exc:  # the other instances are closed all the same
                failures.append(exc)
        self.run(self.loop.shutdown_asyncgens())
        self.run(self.loop.shutdown_default_executor())
        self.loop.close()
        if failures:
            raise failures[0]

    # -- claims ---------------------------------------------------------------------------------

    @rule(slot=slots, specs=st.lists(claim_specs, min_size=1, max_size=2))
    def claim(self, slot: int, specs: list[ClaimSpec]) -> None:
        process = self.processes[slot]
        me = process.me
        answers = self.run(process.ledger.claim([s.claim() for s in specs])).answers
        assert len(answers) == len(specs)
        # Live as the claim judged it: once, at its start (a lapsed row is still there, not live).
        live = {i for i in self.instances if self.live(i)}
        for spec, (result, entry) in zip(specs, answers, strict=True):
            row = self.rows.get(spec.key)
            expected = self._decide(spec, row, me, live)
            assert result is expected, f"{spec} by {me} on {row}: answered {result}, expected {expected}"
            if result is ClaimResult.NEW:
                generation = row.generation + 1 if row is not None else 1
                failed = spec.failed is not None
                row = Row(
                    state=State.FAILED if failed else State.PENDING,
                    owner=None if failed else me,
                    origin=spec.origin,
                    attempts=0,
                    created_at=entry.created_at,
                    expired=spec.expired,
                    generation=generation,
                    settled=failed,
                )
                self.rows[spec.key] = row
            assert row is not None
            assert (entry.state, entry.owner, entry.origin) == (row.state, row.owner, row.origin), (
                f"{spec} answered {result} with {entry}, the model holds {row}"
            )

    @staticmethod
    def _decide(spec: ClaimSpec, row: Row | None, me: str, live: set[str]) -> ClaimResult:
        """The claim rules as claims.py states them; takes a left-behind pending row into `row`."""
        if row is None:
            return ClaimResult.NEW
        same_record = row.origin == spec.origin
        if row.expired and row.state is not State.SENDING:
            return ClaimResult.NEW
        if row.state is State.FAILED and not same_record:
            return ClaimResult.NEW
        # `resend` never interrupts a send in flight: that is how two SMS would go out.
        if spec.force and row.state is not State.SENDING:
            return ClaimResult.NEW
        if not same_record:
            return ClaimResult.DUPLICATE
        if row.state is State.PENDING and row.owner != me and (row.owner is None or row.owner not in live):
            row.owner = me
        return ClaimResult.RESUME

    # Rules that would find nothing to act on wait for something to be there (preconditions on
    # the model): a step spent sweeping an empty ledger is a step not spent where sends collide.

    def free(self) -> set[str]:
        return {k for k, r in self.rows.items() if r.state is State.PENDING and r.owner is None}

    @precondition(lambda self: bool(self.free()))
    @rule(
        slot=slots,
        sinks=st.lists(st.sampled_from(SINKS), min_size=1, max_size=2, unique=True),
        limit=st.integers(min_value=1, max_value=2),
    )
    def take_pending(self, slot: int, sinks: list[str], limit: int) -> None:
        process = self.processes[slot]
        free = {k for k in self.free() if SINK_OF[k] in sinks}
        taken = self.run(process.ledger.take_pending(sinks, limit))
        keys = [e.key for e in taken]
        assert len(keys) == len(set(keys)) == min(limit, len(free)), f"{keys} taken of {free}"
        assert set(keys) <= free, f"{keys} taken, only {free} were free"
        # Oldest first: nothing older than what was taken is left behind.
        assert [e.created_at for e in taken] == sorted(e.created_at for e in taken)
        if keys:
            newest = max(self.rows[k].created_at for k in keys)
            assert all(self.rows[k].created_at >= newest for k in free - set(keys))
        for entry in taken:
            assert (entry.state, entry.owner) == (State.PENDING, process.me)
            self.rows[entry.key].owner = process.me

    def owned(self, *, live: bool, sending: bool = False) -> list[tuple[Process, str]]:
        """(process, key) of pending messages a process owns, and of those it is sending if asked,
        but not those it has another request out for (see `busy`)."""
        states = OPEN if sending else (State.PENDING,)
        return [
            (p, k)
            for p in self.processes
            for k, r in self.rows.items()
            if r.owner == p.me and r.state in states and not self.busy(p, k)
            if self.live(p.me) or not live
        ]

    @precondition(lambda self: bool(self.owned(live=False)))
    @rule(pick=picks, other=st.sampled_from(KEYS))
    def release(self, pick: int, other: str) -> None:
        """A message its owner will not send after all, and one more that may not be its to give."""
        owned = self.owned(live=False)
        process, key = owned[pick % len(owned)]
        keys = [key, other]
        self.run(process.ledger.release(keys))
        for key in keys:
            row = self.rows.get(key)
            if row is not None and row.state is State.PENDING and row.owner == process.me:
                row.owner = None

    # -- sends -----------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.rows))
    @rule(pick=picks, other=st.sampled_from([1, 2]), shape=st.sampled_from(["alone", "with", "beside"]))
    def intrude(self, pick: int, other: int, shape: str) -> None:
        """An instance that does not own a message marks it `sending` anyway: the fence alone
        stops it. `with`: in one request with a message it does own (none of the two is marked);
        `beside`: in a request of its own next to one for its own message (that one is)."""
        key = sorted(self.rows)[pick % len(self.rows)]
        owners = [slot for slot in SLOTS if self.processes[slot].me == self.rows[key].owner]
        # Owned under an earlier id (lost lease) or by nobody: any process may try, that one too.
        base = owners[0] if owners else pick
        process = self.processes[(base + other) % len(SLOTS)]
        own = [k for p, k in self.owned(live=False, sending=True) if p is process and k != key]
        if shape == "alone" or not own:
            self.mark(process, [[key]])
        elif shape == "with":
            self.mark(process, [[own[0], key]])
        else:
            self.mark(process, [[own[0]], [key]])

    def busy(self, process: Process, key: str) -> bool:
        """Whether `process` has a request out for `key` other than the one it would retry now.

        A process never has two requests out for one key: the engine keeps a key it is sending to
        itself (`Engine._inflight`) until that request's outcome is recorded. The ledger alone
        does not keep it off: an outcome names a key, not a generation, so a late held answer to
        a request of generation 1 would free generation 2 while this process has it on the wire.
        """
        row = self.rows.get(key)
        retry = Attempt(key, row.generation, process.me) if row is not None else None
        return any(a.key == key and a != retry for a in process.wire)

    @precondition(lambda self: bool(self.owned(live=False, sending=True)))
    @rule(pick=picks)
    def send(self, pick: int) -> None:
        """An owner marks its message `sending`: the first time, or again as a retry after a 503;
        the owner may be paused past its lease without knowing it."""
        owned = self.owned(live=False, sending=True)
        process, key = owned[pick % len(owned)]
        self.mark(process, [[key]])

    @staticmethod
    async def mark_together(ledger: SqlLedger, requests: list[list[str]]) -> list[BaseException | None]:
        # Concurrent calls of one instance share a group-committed batch, and one program there:
        # each must still be answered as if it had come alone.
        return await asyncio.gather(*(ledger.mark_sending(keys) for keys in requests), return_exceptions=True)

    def mark(self, process: Process, requests: list[list[str]]) -> None:
        requests = [keys for keys in requests if not any(self.busy(process, key) for key in keys)]
        if not requests:
            return
        me = process.me
        answers = self.run(self.mark_together(process.ledger, requests))
        granted: list[list[str]] = []
        for keys, answer in zip(requests, answers, strict=True):
            if answer is not None and not isinstance(answer, Fenced):
                raise answer
            marked = answer is None
            wanted = list(dict.fromkeys(keys))
            if marked:
                # The property itself, judged from the ledger's answer before the model is consulted.
                for key in wanted:
                    row = self.rows.get(key)
                    assert row is not None, f"{me} marked {key}, which was never claimed"
                    assert not row.settled, (
                        f"{me} marked {key} `sending` after generation {row.generation} had its outcome"
                    )
                    assert row.sender in (None, me), (
                        f"{me} marked {key} `sending` while {row.sender}'s attempt of generation "
                        f"{row.generation} may still be on the wire: two SMS without a resend"
                    )
                granted.append(wanted)
            allowed = self.live(me) and all(
                key in self.rows and self.rows[key].owner == me and self.rows[key].state in OPEN
                for key in wanted
            )
            assert marked == allowed, (
                f"mark_sending({keys}) by {me}: marked={marked}, the fence allows {allowed}"
            )
        for key in (k for keys in granted for k in keys):
            row = self.rows[key]
            row.state, row.attempts, row.sender = State.SENDING, row.attempts + 1, me
            attempt = Attempt(key, row.generation, me)
            if attempt not in process.wire:  # a retry after a 503 is the same attempt
                process.wire.append(attempt)

    def on_the_wire(self) -> list[tuple[Process, Attempt]]:
        """Requests out, those whose answer comes late first: their message was recovered,
        stopped or claimed again while they were out."""

        def late(attempt: Attempt) -> bool:
            row = self.rows[attempt.key]
            now = (row.state, row.owner, row.generation)
            return now != (State.SENDING, attempt.instance, attempt.generation)

        return sorted(((p, a) for p in self.processes for a in p.wire), key=lambda pa: not late(pa[1]))

    @precondition(lambda self: bool(self.on_the_wire()))
    @rule(
        pick=picks,
        # Held twice as often as each other outcome: it is the one that opens a message again.
        outcome=st.sampled_from([State.PENDING, State.SENT, State.PENDING, State.FAILED, State.UNKNOWN]),
    )
    def record(self, pick: int, outcome: State) -> None:
        """The answer of a request that left, however late (the lease may be lost meanwhile)."""
        wire = self.on_the_wire()
        process, attempt = wire[0] if pick < PICKS // 2 else wire[pick % len(wire)]
        process.wire.remove(attempt)
        row = self.rows[attempt.key]
        applies = row.owner in process.mine or (row.state is State.UNKNOWN and outcome is not State.PENDING)
        self.run(process.ledger.record([Transition(attempt.key, outcome, f"answer to {attempt}")]))
        if not applies:
            return
        row.state, row.owner = outcome, None
        if outcome is State.PENDING:
            # Held proves only that this attempt was not taken: it frees the generation only
            # when it is the attempt the generation is waiting for.
            if (row.sender, row.generation) == (attempt.instance, attempt.generation):
                row.sender = None
        else:
            row.settled = True

    # -- leases ----------------------------------------------------------------------------------

    # One rule for what happens to an instance's lease, not four: Hypothesis chooses among rules
    # evenly, and four of them would leave few steps for the claims and sends they disturb.
    @rule(event=st.sampled_from(["renew", "pause", "die", "recover", "restart"]), pick=picks)
    def instance(self, event: str, pick: int) -> None:
        """`pause`: silent past its lease, and nobody has noticed yet; `die`: the same, and another
        instance's sweep recovers at once (as in production, where every sweep recovers)."""
        order = self.candidates(event)
        # Half the time the first candidate: the picks are even, the harm is not.
        slot = order[0] if pick < PICKS // 2 else order[pick % len(order)]
        process = self.processes[slot]
        if event == "renew":
            self.renew(process)
        elif event in {"pause", "die"}:
            self.pause(process)
            if event == "die":
                self.recover(self.processes[(slot + 1) % len(SLOTS)])
        elif event == "recover":
            self.recover(process)
        else:
            self.restart(slot)
        # Here, not after every step: only these events change the instances table.
        listed = {i.id for i in self.run(self.processes[0].ledger.instances())}
        assert listed == set(self.instances), f"instances {listed}, expected {set(self.instances)}"

    def candidates(self, event: str) -> list[int]:
        """Slots in the order `pick` reaches them: first those the event can do harm to, a paused
        or stopped instance with messages on the wire or owned, or a paused one that renews."""

        def interesting(slot: int) -> bool:
            process = self.processes[slot]
            if event == "renew":
                return not self.live(process.me)
            return bool(process.wire) or any(r.owner == process.me for r in self.rows.values())

        return sorted(SLOTS, key=lambda slot: not interesting(slot))

    def pause(self, process: Process) -> None:
        """The instance was silent past its lease (a pause, a stopped VM); it does not know yet."""
        lapse(self.url, process.me)
        if process.me in self.instances:
            self.instances[process.me] = True

    def renew(self, process: Process) -> None:
        before = process.me
        expected = self.live(before)
        renewed = self.run(process.ledger.renew())
        assert renewed == expected, f"renew of {before}: {renewed}, expected {expected}"
        if not renewed:
            assert process.me != before, "a lost lease gives a new identity"
            process.mine.append(process.me)
            self.instances[process.me] = False

    def recover(self, process: Process) -> None:
        # Anyone recovers, a lapsed instance too: it judges others' leases, not its own.
        count = self.run(process.ledger.recover())
        self.instances = {i: lapsed for i, lapsed in self.instances.items() if not lapsed}
        unknown = 0
        for row in self.rows.values():
            if row.owner is not None and row.owner in self.instances:
                continue
            if row.state is State.SENDING:
                row.state, row.owner, row.settled = State.UNKNOWN, None, True
                unknown += 1
            elif row.state is State.PENDING:
                row.owner = None
        assert count == unknown, f"recover() made {count} unknown, expected {unknown}"

    def restart(self, slot: int) -> None:
        """A graceful stop, then a new process in its place; requests still out are never answered."""
        process = self.processes[slot]
        me = process.me
        self.run(process.ledger.close())
        for row in self.rows.values():
            if row.owner != me:
                continue
            if row.state is State.SENDING:
                row.state, row.settled = State.UNKNOWN, True
            row.owner = None
        self.instances.pop(me, None)
        self.processes[slot] = self.start()

    # -- what the ledger holds --------------------------------------------------------------------

    @invariant()
    def the_ledger_holds_what_the_model_holds(self) -> None:
        entries = {e.key: e for e in self.run(self.processes[0].ledger.entries(KEYS))}
        assert set(entries) == set(self.rows)
        for key, entry in entries.items():
            row = self.rows[key]
            found = (entry.state, entry.owner, entry.origin, entry.attempts)
            assert found == (row.state, row.owner, row.origin, row.attempts), f"{key}: {entry} vs {row}"
            if entry.state in SETTLED:
                assert entry.owner is None, f"{key} is settled and still owned: {entry}"
            if entry.state is State.SENDING:
                # Only an owner marks; losing it turns `sending` into `unknown`, never ownerless.
                assert entry.owner is not None, f"{key} is sending with no owner: {entry}"


# A passing run takes seconds; a failing one is shrunk for up to five minutes (Hypothesis's own
# bound), and the suite's two-minute timeout would cut it off before it prints the example.
@pytest.mark.timeout(420)
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_key_goes_sending_twice_without_a_resend(backend: str, tmp_path: Path) -> None:
    with ledger_url(backend, tmp_path) as url:
        prepare(url, tmp_path)
        tables = Tables(url)
        try:
            machine = type(
                LedgerMachine.__name__, (LedgerMachine,), {"url": url, "folder": tmp_path, "tables": tables}
            )
            run_state_machine_as_test(machine, settings=LedgerMachine.TestCase.settings)
        finally:
            tables.close()


# -- what the machine found, as plain examples --------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_sweep_takes_no_more_than_its_limit(backend: str, tmp_path: Path) -> None:
    with ledger_url(backend, tmp_path) as url:
        ledger = await open_ledger(url, tmp_path)
        await ledger.join(lease=LEASE_S)
        try:
            for key in KEYS:  # one claim each: each is older than the next
                await ledger.claim([ClaimSpec(key, f"f1:{key}").claim()])
            await ledger.release(KEYS)
            taken = await ledger.take_pending(SINKS, 1)
            assert [e.key for e in taken] == ["k0"], "the oldest, and only one"
        finally:
            await ledger.close()

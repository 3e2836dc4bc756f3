"""The ledger's operations other than claiming, as programs (steps.py): sends, leases, holds, notes.

Who may do what, in one place:
- only a message's owner, with its lease live, turns it `sending` (`mark_sending`, the fence);
- an outcome is written by the process that had the message: its owner, under this or an earlier
  lease of the same process, or onto the `unknown` that recovery wrote while its request was out;
- recovery first deletes the instances whose lease has lapsed (a renewal racing it either wins,
  and the instance lives, or finds its row gone, and the instance knows it lost), then releases
  whatever is owned by an instance that is not in the table any more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connector.errors import Fenced
from connector.ledger.base import Counts, Entry, Instance, State, Transition
from connector.ledger.claims import COLUMNS, entry_of
from connector.ledger.gates import refund
from connector.ledger.schema import counted_at
from connector.ledger.steps import Now, Program, Rows, Run, RunMany, marks, rows_in, run_in

UNKNOWN_AFTER_LAPSE = "the process stopped while the provider had the request; not resent"
_NOT_LIVE = "owner NOT IN (SELECT id FROM instances)"
# The partial index `sends_open`'s own condition, said again beside `state = 'pending'`: SQLite
# uses a partial index only when the query repeats its terms, and scanned a million rows without.
_OPEN = "state IN ('pending', 'sending') AND not_before IS NULL"


# -- sends --------------------------------------------------------------------------------------------


LAPSED = "this instance's lease has lapsed: another instance may have taken its messages"


def mark_sending_all(requests: list[tuple[Sequence[str], str]]) -> Program[list[Fenced | None]]:
    """Every (keys, instance) asking to send in this batch, in a few statements: each is marked
    only if that instance's lease is live and it owns every one of its keys (else Fenced, and none
    of its keys is marked). The rows are locked while deciding, so nothing changes in between."""
    now = yield Now()
    if all(len(set(keys)) == 1 for keys, _ in requests) and len({me for _, me in requests}) == 1:
        return (yield from _mark_singles([keys[0] for keys, _ in requests], requests[0][1], now))
    asking = sorted({me for _, me in requests})
    live_rows = yield Rows(
        f"SELECT id FROM instances WHERE expires_at > ? AND id IN ({marks(len(asking))})", [now, *asking]
    )
    live = {str(r[0]) for r in live_rows}
    theirs: set[tuple[str, str]] = set()
    for me in sorted(live):
        wanted = list(dict.fromkeys(k for keys, m in requests if m == me for k in keys))
        # `sending` again is allowed: only the owner gets here, and it knows what it has on the wire.
        rows = yield from rows_in(
            "SELECT key FROM sends WHERE owner = ? AND state IN ('pending', 'sending') "
            "AND key IN ({in}) {for_update}",
            wanted,
            [me],
        )
        theirs.update((str(r[0]), me) for r in rows)
    answers: list[Fenced | None] = []
    marked: list[str] = []
    for keys, me in requests:
        wanted = list(dict.fromkeys(keys))
        missing = sum((k, me) not in theirs for k in wanted)
        if me not in live:
            answers.append(Fenced(LAPSED))
        elif missing:
            answers.append(Fenced(f"{missing} of {len(wanted)} message(s) are no longer this instance's"))
        else:
            marked += wanted
            answers.append(None)
    if marked:
        yield from run_in(
            "UPDATE sends SET state = 'sending', attempts = attempts + 1, updated_at = ? WHERE key IN ({in})",
            list(dict.fromkeys(marked)),
            [now],
        )
    return answers


def _mark_singles(keys: list[str], me: str, now: float) -> Program[list[Fenced | None]]:
    """The common batch (one message per request, one instance): one statement, which is the fence."""
    rows = yield from rows_in(
        "UPDATE sends SET state = 'sending', attempts = attempts + 1, updated_at = ? "
        "WHERE owner = ? AND state IN ('pending', 'sending') "
        "AND EXISTS (SELECT 1 FROM instances WHERE id = ? AND expires_at > ?) "
        "AND key IN ({in}) RETURNING key",
        list(dict.fromkeys(keys)),
        [now, me, me, now],
    )
    marked = {str(r[0]) for r in rows}
    if all(k in marked for k in keys):
        return [None] * len(keys)
    live = yield Rows("SELECT 1 FROM instances WHERE id = ? AND expires_at > ?", [me, now])
    refusal = "1 of 1 message(s) are no longer this instance's" if live else LAPSED
    return [None if k in marked else Fenced(refusal) for k in keys]


def record_all(requests: list[tuple[Sequence[Transition], tuple[str, ...]]]) -> Program[list[float]]:
    """Every outcome of this batch in one statement per set of ids a process had; answers the
    ledger's time of it (the time a status shows)."""
    now = yield Now()
    by_ids: dict[tuple[str, ...], list[Transition]] = {}
    for transitions, mine in requests:
        by_ids.setdefault(mine, []).extend(transitions)
    for mine, transitions in by_ids.items():
        yield RunMany(
            "UPDATE sends SET state = ?, detail = ?, updated_at = ?, owner = NULL, not_before = ?, "
            "counted_at = ? WHERE key = ? AND (CAST(? AS DOUBLE PRECISION) IS NULL OR created_at = ?) "
            f"AND (owner IN ({marks(len(mine))}) OR (state = 'unknown' AND CAST(? AS TEXT) != 'pending'))",
            [
                (
                    t.state.value,
                    t.detail,
                    now,
                    t.not_before,
                    counted_at(t.state, now),
                    t.key,
                    t.created_at,
                    t.created_at,
                    *mine,
                    t.state.value,
                )
                for t in transitions
            ],
        )
    # The states worth a look later (a wait and why, an unknown outcome) go to the history too;
    # a plain `sent` does not, so the common path writes nothing more.
    noted = [t for transitions, _ in requests for t in transitions if t.state in _NOTED]
    if noted:
        yield RunMany(
            "INSERT INTO history (key, at, state, detail) "
            "SELECT key, updated_at, state, detail FROM sends WHERE key = ? AND updated_at = ? AND state = ?",
            [(t.key, now, t.state.value) for t in noted],
        )
    yield from refund([t for transitions, _ in requests for t in transitions])
    return [now] * len(requests)


_NOTED = frozenset({State.PENDING, State.UNKNOWN})


_PICK_FREE = (
    f"SELECT key FROM sends WHERE state = 'pending' AND owner IS NULL AND {_OPEN} "
    "AND sink IN ({sinks}) ORDER BY created_at LIMIT ? {{skip_locked}}"
)
_PICK_DUE = (
    "SELECT key FROM sends WHERE state = 'pending' AND not_before IS NOT NULL AND not_before <= ? "
    "AND owner IS NULL AND sink IN ({sinks}) ORDER BY not_before LIMIT ? {{skip_locked}}"
)


def take_pending(sinks: Sequence[str], limit: int, me: str) -> Program[list[Entry]]:
    """Unowned messages ready to go: held ones, oldest first, and waiting ones whose time came
    (no longer waiting once taken)."""
    now = yield Now()
    taken: list[Entry] = []
    for pick, params in ((_PICK_FREE, [*sinks, limit]), (_PICK_DUE, [now, *sinks, limit])):
        # MATERIALIZED: picked once. As a plain subquery PostgreSQL may run it again for each row
        # it updates, each time skipping the rows already taken, and so take far more than `limit`.
        rows = yield Rows(
            f"WITH picked AS MATERIALIZED ({pick.format(sinks=marks(len(sinks)))}) "
            "UPDATE sends SET owner = ?, updated_at = ?, not_before = NULL "
            "WHERE key IN (SELECT key FROM picked) "
            f"AND state = 'pending' AND owner IS NULL RETURNING {COLUMNS}",
            [*params, me, now],
        )
        taken += [entry_of(row) for row in rows]
        limit -= len(rows)
        if limit <= 0:
            break
    return sorted(taken, key=lambda e: e.created_at)


def next_wake() -> Program[float | None]:
    """When the earliest waiting message may go (None: nothing waits)."""
    rows = yield Rows(
        "SELECT min(not_before) FROM sends "
        "WHERE state = 'pending' AND not_before IS NOT NULL AND owner IS NULL"
    )
    return None if not rows or rows[0][0] is None else float(rows[0][0])


def idle_pending(sinks: Sequence[str], limit: int, me: str, idle: float) -> Program[list[Entry]]:
    """This instance's pending messages untouched for `idle` seconds, oldest first."""
    now = yield Now()
    rows = yield Rows(
        f"SELECT {COLUMNS} FROM sends WHERE state = 'pending' AND owner = ? AND {_OPEN} "
        f"AND sink IN ({marks(len(sinks))}) AND updated_at < ? ORDER BY created_at LIMIT ?",
        [me, *sinks, now - idle, limit],
    )
    return [entry_of(row) for row in rows]


def release(keys: Sequence[str], me: str) -> Program[None]:
    yield from run_in(
        "UPDATE sends SET owner = NULL WHERE owner = ? AND state = 'pending' AND key IN ({in})", keys, [me]
    )


# -- instances and leases -----------------------------------------------------------------------------


def register(me: str, host: str, place: str, pid: int, lease: float) -> Program[None]:
    now = yield Now()
    yield Run(
        "INSERT INTO instances (id, host, place, pid, started_at, renewed_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [me, host, place, pid, now, now, now + lease],
    )


def neighbours(place: str) -> Program[list[tuple[str, int]]]:
    """(id, pid) of the instances registered from this place: their pids can be looked at."""
    rows = yield Rows("SELECT id, pid FROM instances WHERE place = ?", [place])
    return [(str(r[0]), int(r[1])) for r in rows]


def expire(ids: Sequence[str]) -> Program[None]:
    now = yield Now()
    yield from run_in("UPDATE instances SET expires_at = ? WHERE id IN ({in})", ids, [now])


def renew(me: str, lease: float) -> Program[bool]:
    now = yield Now()
    changed = yield Run(
        "UPDATE instances SET renewed_at = ?, expires_at = ? WHERE id = ? AND expires_at > ?",
        [now, now + lease, me, now],
    )
    return bool(changed)


def recover() -> Program[int]:
    """What lapsed instances held is released; answers how many `sending` became `unknown`."""
    now = yield Now()
    yield Run("DELETE FROM instances WHERE expires_at <= ?", [now])
    unknown = yield Run(
        "UPDATE sends SET state = 'unknown', detail = ?, updated_at = ?, counted_at = ?, owner = NULL "
        f"WHERE state = 'sending' AND {_OPEN} AND (owner IS NULL OR {_NOT_LIVE})",
        [UNKNOWN_AFTER_LAPSE, now, now],
    )
    yield Run(
        "UPDATE sends SET owner = NULL "
        f"WHERE state = 'pending' AND {_OPEN} AND owner IS NOT NULL AND {_NOT_LIVE}"
    )
    # Released, not deleted: the epoch goes on growing, so a holder that only paused can tell.
    yield Run(f"UPDATE holds SET owner = NULL WHERE owner IS NOT NULL AND {_NOT_LIVE}")
    return int(unknown)


def retire(me: str) -> Program[int]:
    """A graceful stop: everything this instance holds is released at once."""
    now = yield Now()
    yield Run(f"UPDATE sends SET owner = NULL WHERE owner = ? AND state = 'pending' AND {_OPEN}", [me])
    yield Run(
        "UPDATE sends SET owner = NULL WHERE owner = ? AND state = 'pending' AND not_before IS NOT NULL", [me]
    )
    unknown = yield Run(
        "UPDATE sends SET state = 'unknown', detail = ?, updated_at = ?, counted_at = ?, owner = NULL "
        f"WHERE owner = ? AND state = 'sending' AND {_OPEN}",
        [UNKNOWN_AFTER_LAPSE, now, now, me],
    )
    yield Run("DELETE FROM holds WHERE owner = ?", [me])
    yield Run("DELETE FROM instances WHERE id = ?", [me])
    return int(unknown)


def instances() -> Program[list[Instance]]:
    rows = yield Rows(
        "SELECT id, host, pid, started_at, renewed_at, expires_at FROM instances ORDER BY started_at"
    )
    held: dict[str, list[str]] = {}
    for owner, name in (yield Rows("SELECT owner, name FROM holds WHERE owner IS NOT NULL ORDER BY name")):
        held.setdefault(owner, []).append(name)
    counts: dict[tuple[str, str], int] = {}
    for owner, state, count in (
        yield Rows(
            f"SELECT owner, state, count(*) FROM sends WHERE {_OPEN} AND owner IS NOT NULL "
            "GROUP BY owner, state"
        )
    ):
        counts[(owner, state)] = int(count)
    return [
        Instance(
            id=r[0],
            host=r[1],
            pid=int(r[2]),
            started_at=r[3],
            renewed_at=r[4],
            expires_at=r[5],
            holds=tuple(held.get(r[0], ())),
            sending=counts.get((r[0], "sending"), 0),
            owned=counts.get((r[0], "pending"), 0),
        )
        for r in rows
    ]


# -- holds ---------------------------------------------------------------------------------------------


def hold(name: str, me: str) -> Program[int | None]:
    now = yield Now()
    if not (yield Rows("SELECT 1 FROM instances WHERE id = ? AND expires_at > ?", [me, now])):
        return None  # a lapsed instance takes nothing more
    found = yield Rows("SELECT owner, epoch FROM holds WHERE name = ?", [name])
    if not found:
        placed = yield Run(
            "INSERT INTO holds (name, owner, epoch, taken_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (name) DO NOTHING",
            [name, me, now],
        )
        return 1 if placed else None  # None: another instance took it in the same moment
    owner, epoch = found[0][0], int(found[0][1])
    if owner == me:
        return epoch
    if owner is not None and (
        yield Rows("SELECT 1 FROM instances WHERE id = ? AND expires_at > ?", [owner, now])
    ):
        return None
    changed = yield Run(
        "UPDATE holds SET owner = ?, epoch = epoch + 1, taken_at = ? WHERE name = ? AND epoch = ?",
        [me, now, name, epoch],
    )
    return epoch + 1 if changed else None


def holding(name: str, epoch: int, me: str) -> Program[bool]:
    now = yield Now()
    rows = yield Rows(
        "SELECT 1 FROM holds h JOIN instances i ON i.id = h.owner "
        "WHERE h.name = ? AND h.owner = ? AND h.epoch = ? AND i.expires_at > ?",
        [name, me, epoch, now],
    )
    return bool(rows)


def let_go(name: str, me: str) -> Program[None]:
    yield Run("DELETE FROM holds WHERE name = ? AND owner = ?", [name, me])


# -- reading -------------------------------------------------------------------------------------------


def entries(keys: Sequence[str]) -> Program[list[Entry]]:
    rows = yield from rows_in(f"SELECT {COLUMNS} FROM sends WHERE key IN ({{in}})", keys)
    return [entry_of(row) for row in rows]


def counts() -> Program[list[Counts]]:
    rows = yield Rows(
        "SELECT source, rule, state, count(*) FROM sends "
        "GROUP BY source, rule, state ORDER BY source, rule, state"
    )
    return [Counts(r[0], r[1], State(r[2]), int(r[3])) for r in rows]


def recent(states: Sequence[State], limit: int) -> Program[list[Entry]]:
    # The states written out, not bound: SQLite then sees the partial index `sends_attention`
    # (failed, unknown) applies instead of scanning every message. They are the enum's own words.
    written = ", ".join(f"'{State(s).value}'" for s in states)
    rows = yield Rows(
        f"SELECT {COLUMNS} FROM sends WHERE state IN ({written}) ORDER BY updated_at DESC LIMIT ?", [limit]
    )
    return [entry_of(row) for row in rows]


def run_ddl(ddl: str) -> Program[None]:
    yield Run(ddl)


def ping() -> Program[Any]:
    return (yield Rows("SELECT 1"))

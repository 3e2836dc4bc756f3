"""The ledger's tables, created and migrated by the product itself, the same for SQLite and
PostgreSQL (both read `DOUBLE PRECISION`, `BIGINT` and partial indexes alike).

The version lives in `meta`. A ledger newer than this code is refused at start-up rather than
written with rules it does not know.
"""

from __future__ import annotations

from connector.errors import LedgerUnavailable
from connector.ledger.base import State
from connector.ledger.steps import Program, Rows, Run

VERSION = 4
_CUT_SHORT = "the process stopped while the provider had the request; not resent"

_SENDS = """
CREATE TABLE IF NOT EXISTS sends (
    key        TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    rule       TEXT NOT NULL,
    sink       TEXT NOT NULL,
    origin     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    text       TEXT NOT NULL,
    state      TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    attempts   BIGINT NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    owner      TEXT,
    due_at     DOUBLE PRECISION,
    not_before DOUBLE PRECISION,
    admitted_at DOUBLE PRECISION,
    charged    BIGINT,
    charged_day TEXT,
    counted_at DOUBLE PRECISION
)"""

# Only open messages are indexed by state: every send passes through three states, and indexing
# all of them tripled the index writes for the queries (sweep what is pending, recover what an
# expired instance was sending) that need it.
# Waiting messages (quiet hours, scheduled sends, a budget) have an index of their own, by the time
# they may go, so that thousands scheduled for tomorrow cost a sweep nothing today.
_OPEN_INDEXES = (
    "CREATE INDEX IF NOT EXISTS sends_open ON sends (state, owner, sink, created_at) "
    "WHERE state IN ('pending', 'sending') AND not_before IS NULL",
    "CREATE INDEX IF NOT EXISTS sends_waiting ON sends (not_before) "
    "WHERE state = 'pending' AND not_before IS NOT NULL",
    # What needs a person, newest first (the status page, `connector status`, `resolve
    # --all-unknown`): few rows, so cheap to keep, and no page view scans the whole table.
    "CREATE INDEX IF NOT EXISTS sends_attention ON sends (updated_at) WHERE state IN ('failed', 'unknown')",
)

# What a frequency cap counts, by number and time (`counted_at`: when a message was sent or its
# outcome became unknown; ON_ITS_WAY while it is let go and not settled; NULL when it does not
# count). One index, written as a message is let go and as it settles: the state is not in it, so
# the step to `sending` leaves it alone (an index on the state is rewritten at every step). Made
# only when a rule has a cap (`counted_index`): otherwise every send would pay for an index
# nothing reads.
COUNTED_INDEX = (
    "CREATE INDEX IF NOT EXISTS sends_capped ON sends (recipient, counted_at) WHERE counted_at IS NOT NULL"
)
ON_ITS_WAY = 1e15  # counted_at of a message on its way: within any cap's period, whenever it ends
_COUNTED = frozenset({State.SENT, State.UNKNOWN})  # the states a cap counts


def counted_at(state: State, now: float) -> float | None:
    """`counted_at` of a message that comes to `state` at `now`."""
    return now if state in _COUNTED else None


_REST = (
    """CREATE TABLE IF NOT EXISTS notes (
        scope TEXT NOT NULL,
        key   TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (scope, key)
    )""",
    """CREATE TABLE IF NOT EXISTS instances (
        id         TEXT PRIMARY KEY,
        host       TEXT NOT NULL,
        place      TEXT NOT NULL,
        pid        BIGINT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        renewed_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS budgets (
        sink  TEXT NOT NULL,
        day   TEXT NOT NULL,
        spent BIGINT NOT NULL,
        PRIMARY KEY (sink, day)
    )""",
    """CREATE TABLE IF NOT EXISTS optouts (
        number   TEXT PRIMARY KEY,
        added_at DOUBLE PRECISION NOT NULL,
        note     TEXT NOT NULL DEFAULT ''
    )""",
    # The states a message passed through besides its first and its last (those are in `sends`):
    # waits with their reasons, an unknown outcome, a person's decision. The common path (claimed,
    # sent) writes nothing here, so the history costs the hot path nothing.
    """CREATE TABLE IF NOT EXISTS history (
        key    TEXT NOT NULL,
        at     DOUBLE PRECISION NOT NULL,
        state  TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        actor  TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS history_key ON history (key, at)",
    """CREATE TABLE IF NOT EXISTS holds (
        name     TEXT PRIMARY KEY,
        owner    TEXT,
        epoch    BIGINT NOT NULL,
        taken_at DOUBLE PRECISION NOT NULL
    )""",
)

_META = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"


def migrate() -> Program[int]:
    """Bring the ledger to VERSION (run in one transaction that no other migration overlaps);
    answers the version found."""
    yield Run(_META)
    found = yield Rows("SELECT value FROM meta WHERE name = 'schema'")
    version = int(found[0][0]) if found else 0
    if version > VERSION:
        raise LedgerUnavailable(
            f"the ledger's schema is version {version}, newer than this connector knows ({VERSION}): "
            "run the newer connector, or restore a ledger of this version"
        )
    if version == VERSION:
        return version
    if version == 0:
        yield Run(_SENDS)
    if version == 1:  # one process per ledger, no owners: nothing open belongs to a live instance
        for column in (
            "owner TEXT",
            "due_at DOUBLE PRECISION",
            "not_before DOUBLE PRECISION",
            "admitted_at DOUBLE PRECISION",
            "charged BIGINT",
            "charged_day TEXT",
        ):
            yield Run(f"ALTER TABLE sends ADD COLUMN {column}")
        yield Run("DROP INDEX IF EXISTS sends_pending")
        yield Run("UPDATE sends SET state = 'unknown', detail = ? WHERE state = 'sending'", [_CUT_SHORT])
    if 1 <= version <= 3:  # caps counted by `counted_at`, no longer by the state and two indexes
        yield Run("ALTER TABLE sends ADD COLUMN counted_at DOUBLE PRECISION")
        yield Run("UPDATE sends SET counted_at = updated_at WHERE state IN ('sent', 'unknown')")
        yield Run(
            "UPDATE sends SET counted_at = ? "
            "WHERE admitted_at IS NOT NULL AND state IN ('pending', 'sending')",
            [ON_ITS_WAY],
        )
        yield Run("DROP INDEX IF EXISTS sends_admitted")
        yield Run("DROP INDEX IF EXISTS sends_counted")
    for ddl in _OPEN_INDEXES:
        yield Run(ddl)
    for ddl in _REST:
        yield Run(ddl)
    if version == 0:
        yield Run("INSERT INTO meta (name, value) VALUES ('schema', ?)", [str(VERSION)])
    else:
        yield Run("UPDATE meta SET value = ? WHERE name = 'schema'", [str(VERSION)])
    return version


def version() -> Program[int]:
    """The schema version as it stands (read-only; `meta` must exist)."""
    found = yield Rows("SELECT value FROM meta WHERE name = 'schema'")
    return int(found[0][0]) if found else 0

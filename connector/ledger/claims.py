"""Deciding a batch of claims against what the ledger already holds (SQLite, in the writer thread)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from connector.ledger.base import Claim, ClaimResult, Entry, State

COLUMNS = "key, source, rule, sink, origin, recipient, text, state, detail, attempts, created_at, updated_at"


def entry_of(row: Sequence[Any]) -> Entry:
    return Entry(
        key=row[0],
        source=row[1],
        rule=row[2],
        sink=row[3],
        origin=row[4],
        recipient=row[5],
        text=row[6],
        state=State(row[7]),
        detail=row[8],
        attempts=row[9],
        created_at=row[10],
        updated_at=row[11],
    )


LOOKUP_CHUNK = 500  # keys per IN (...) lookup: well under SQLite's bound on variables


def claim_all(
    conn: sqlite3.Connection, claims: Sequence[Claim], now: float
) -> list[tuple[ClaimResult, Entry]]:
    """Decide every claim of a batch with one lookup per 500 keys and one insert statement.

    `known` is updated as the batch is decided, so two records of the same batch that claim the
    same key are told apart exactly as if they had come in two batches.
    """
    keys = list({c.key for c in claims})
    known: dict[str, tuple[Entry, float | None]] = {}
    for start in range(0, len(keys), LOOKUP_CHUNK):
        part = keys[start : start + LOOKUP_CHUNK]
        marks = ",".join("?" * len(part))
        for row in conn.execute(f"SELECT {COLUMNS}, expires_at FROM sends WHERE key IN ({marks})", part):  # noqa: S608
            known[row[0]] = (entry_of(row), row[12])
    answers: list[tuple[ClaimResult, Entry]] = []
    inserts: list[tuple[Any, ...]] = []
    for c in claims:
        found = known.get(c.key)
        if found is not None:
            existing, expires_at = found
            expired = expires_at is not None and expires_at < now
            same_record = existing.origin == c.origin
            retry_failed = existing.state is State.FAILED and not same_record
            # `resend` never interrupts a send in flight: that is how two SMS would go out.
            forced = c.force and existing.state is not State.SENDING
            if not (expired or retry_failed or forced):
                answers.append(((ClaimResult.RESUME if same_record else ClaimResult.DUPLICATE), existing))
                continue
        state = State.FAILED if c.failed is not None else State.PENDING
        detail = c.failed or ""
        entry = Entry(
            c.key, c.source, c.rule, c.sink, c.origin, c.recipient, c.text, state, detail, 0, now, now
        )
        inserts.append(
            (
                c.key,
                c.source,
                c.rule,
                c.sink,
                c.origin,
                c.recipient,
                c.text,
                state.value,
                detail,
                now,
                now,
                c.expires_at,
            )
        )
        known[c.key] = (entry, c.expires_at)
        answers.append((ClaimResult.NEW, entry))
    conn.executemany(
        "INSERT OR REPLACE INTO sends (key, source, rule, sink, origin, recipient, text, state, detail, "
        "attempts, created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
        inserts,
    )
    return answers

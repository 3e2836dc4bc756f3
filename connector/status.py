"""The status text written back for a record. Its first word is the state (SPEC.md)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from connector.ledger import Entry, State

RESEND = "resend"


def is_resend(cell: str) -> bool:
    return cell.strip().lower() == RESEND


def state_word(cell: str) -> str:
    """The state a status cell names: its first word, without the colon (`pending: ...` -> pending).

    Older spellings (`pending (reason)`) read the same.
    """
    words = cell.split(maxsplit=1)
    return words[0].rstrip(":").lower() if words else ""


@functools.lru_cache(maxsize=64)
def _stamp_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(epoch: float) -> str:
    """UTC to the second; cached because a batch stamps thousands of statuses within one second."""
    return _stamp_second(int(epoch))


def of_entry(entry: Entry) -> str:
    """What a record's own ledger entry says about it."""
    if entry.state is State.SENT:
        return f"sent {stamp(entry.updated_at)} {entry.detail}".rstrip()
    if entry.state is State.FAILED:
        return f"failed: {entry.detail}"
    if entry.state is State.UNKNOWN:
        return f"unknown: {entry.detail}"
    if entry.state is State.SKIPPED:
        return f"skipped: {entry.detail}"
    # pending, or sending in this very process: either way it is due and not yet settled
    return f"pending: {entry.detail}" if entry.detail else "pending"


def of_duplicate(entry: Entry) -> str:
    """A record that asks for a message another record already claimed."""
    if entry.state is State.SENT:
        return f"skipped: duplicate of a message already sent {stamp(entry.updated_at)}"
    if entry.state is State.UNKNOWN:
        return "skipped: duplicate of a message whose outcome is unknown"
    return f"skipped: duplicate of a message already {entry.state.value}"


def failed(reason: str) -> str:
    return f"failed: {reason}"

"""What the ledger keeps besides the sends, as programs (steps.py): the opt-out list that
`connector optout` edits, and the small notes sources write (batch ids, file names, resends)."""

from __future__ import annotations

from collections.abc import Sequence

from connector.ledger.steps import Insert, Now, Program, Rows, Run, run_in

# -- opt-outs --------------------------------------------------------------------------------------------


def optout_add(numbers: Sequence[str], note: str) -> Program[int]:
    now = yield Now()
    added = yield Insert(
        "optouts",
        ("number", "added_at", "note"),
        ("text", "double precision", "text"),
        [(number, now, note) for number in dict.fromkeys(numbers)],
        "number",
    )
    return len(added)


def optout_remove(numbers: Sequence[str]) -> Program[int]:
    return (yield from run_in("DELETE FROM optouts WHERE number IN ({in})", list(numbers)))


def optouts() -> Program[list[tuple[str, float, str]]]:
    rows = yield Rows("SELECT number, added_at, note FROM optouts ORDER BY number")
    return [(str(r[0]), float(r[1]), str(r[2])) for r in rows]


# -- notes ---------------------------------------------------------------------------------------------


def get_note(scope: str, key: str) -> Program[str | None]:
    rows = yield Rows("SELECT value FROM notes WHERE scope = ? AND key = ?", [scope, key])
    return None if not rows else str(rows[0][0])


def set_note(scope: str, key: str, value: str) -> Program[None]:
    yield Run(
        "INSERT INTO notes (scope, key, value) VALUES (?, ?, ?) "
        "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
        [scope, key, value],
    )


def notes_in(scope: str) -> Program[dict[str, str]]:
    rows = yield Rows("SELECT key, value FROM notes WHERE scope = ?", [scope])
    return {str(k): str(v) for k, v in rows}


def drop_notes(scope: str, keys: Sequence[str]) -> Program[None]:
    yield from run_in("DELETE FROM notes WHERE scope = ? AND key IN ({in})", keys, [scope])

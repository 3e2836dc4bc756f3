"""The ledger's operations written once, for every database: programs that yield SQL steps.

A program is a generator. It yields a step (a query, a statement, the clock) and is sent the step's
answer; what it returns is the operation's result. The SQLite driver runs programs in its writer
thread, the PostgreSQL driver on an async connection: the decisions (who owns what, which claim
is new, when a lease has lapsed) live here and nowhere else, and only the driving differs.

SQL is written with `?` placeholders and `{skip_locked}` where PostgreSQL should lock rows it
picks; each driver turns these into its own dialect.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rows:
    """A query; answered with its rows as tuples."""

    sql: str
    params: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class Run:
    """A statement; answered with how many rows it changed."""

    sql: str
    params: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class RunMany:
    """One statement for each parameter set; answered with None."""

    sql: str
    params: Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class RowsIn:
    """A query whose last condition is `... IN ({in})` over `values`; answered with its rows.
    SQLite asks it in chunks of `?` marks, PostgreSQL as one array (`= ANY`), one plan cached."""

    sql: str
    values: Sequence[Any]
    before: Sequence[Any] = ()  # the parameters ahead of the list


@dataclass(frozen=True, slots=True)
class RunIn:
    """A statement ending in `... IN ({in})`; answered with how many rows it changed."""

    sql: str
    values: Sequence[Any]
    before: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class Insert:
    """New rows, those whose `conflict` column exists already skipped; answered with the values of
    that column for the rows inserted. PostgreSQL sends the columns as arrays (`unnest`)."""

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]  # SQL type of each column, for PostgreSQL's arrays
    rows: Sequence[Sequence[Any]]
    conflict: str


@dataclass(frozen=True, slots=True)
class Lock:
    """Names (`prefix` + each key) no other transaction may lock until this one ends (PostgreSQL:
    transaction-scoped advisory locks, taken in order; SQLite: its writer is alone already, and
    no name is ever built). Answered with None."""

    prefix: str
    keys: Sequence[str]


@dataclass(frozen=True, slots=True)
class Now:
    """The ledger's clock, read once per transaction: the database's own for PostgreSQL, so that
    leases of instances on several hosts are judged by one clock."""


Step = Rows | Run | RunMany | RowsIn | RunIn | Insert | Lock | Now
Program = Generator[Step, Any, T]

CHUNK = 500  # values per IN (...) list: within SQLite's and PostgreSQL's bounds on parameters


def marks(count: int) -> str:
    return ",".join("?" * count)


def chunks(values: Sequence[T], size: int = CHUNK) -> list[Sequence[T]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


def rows_in(sql: str, values: Sequence[Any], before: Sequence[Any] = ()) -> Program[list[tuple[Any, ...]]]:
    """`sql` with one `{in}` for an IN (...) list of `values` (the last parameter)."""
    if not values:
        return []
    return list((yield RowsIn(sql, values, before)))


def run_in(sql: str, values: Sequence[Any], before: Sequence[Any] = ()) -> Program[int]:
    """A statement with one `{in}` list (the last parameter); answers the rows changed."""
    if not values:
        return 0
    return int((yield RunIn(sql, values, before)))

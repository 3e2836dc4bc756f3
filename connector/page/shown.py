"""What the status page shows, as plain rows for its templates: sources with their activity and
holders, sinks with their pause and budget, counts by state, failures with masked numbers."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connector.ledger import Counts, Entry, State
from connector.ledger.decisions import Step
from connector.ledger.views import Holder
from connector.masking import mask_number, masked_reason, written_number
from connector.policy import Budget
from sinks.base import Sink
from sources.base import Source

STATES = [state.value for state in State]


def when(epoch: float | None) -> str:
    """UTC to the second, as the statuses written back say it."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")


def ago(epoch: float | None, now: float | None = None) -> str:
    if epoch is None:
        return ""
    seconds = max(0, int((time.time() if now is None else now) - epoch))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


@dataclass(frozen=True, slots=True)
class SourceRow:
    name: str
    type: str
    last: str
    last_at: float | None
    error: str
    error_at: float | None
    held: list[tuple[str, str]]  # (what is held, by which instance)


@dataclass(frozen=True, slots=True)
class SinkRow:
    name: str
    type: str
    paused: bool
    reason: str
    limit: int | None  # daily_budget
    spent: int
    unit: str


@dataclass
class CountTable:
    rows: list[tuple[str, str, dict[str, int]]] = field(default_factory=list)  # source, rule, by state
    total: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EntryRow:
    id: str
    state: str
    at: float
    source: str
    rule: str
    sink: str
    to: str  # masked
    tail: str  # the digits the masked number still shows (the search box matches them)
    reason: str  # masked


def source_rows(sources: Mapping[str, Source], holders: Sequence[Holder]) -> list[SourceRow]:
    held: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for holder in holders:
        source, what = source_of_hold(holder.name, sources)
        if source is not None:
            held[source].append((what, holder.owner))
    return [
        SourceRow(
            name=name,
            type=source.type_name,
            last=source.activity.last,
            last_at=source.activity.last_at,
            error=source.activity.error,
            error_at=source.activity.error_at,
            held=held.get(name, []),
        )
        for name, source in sorted(sources.items())
    ]


def source_of_hold(name: str, sources: Mapping[str, object]) -> tuple[str | None, str]:
    """(source, what of it is held) of a hold named `KIND:SOURCE[:WHAT]` (sources/base.py Holds)."""
    kind, _, rest = name.partition(":")
    source, _, what = rest.partition(":")
    if kind == "job" or source not in sources:
        return None, name
    return source, what or {"sheet": "its polls"}.get(kind, kind)


def sink_rows(
    sinks: Mapping[str, Sink], budgets: Mapping[str, Budget], spent: Mapping[str, int]
) -> list[SinkRow]:
    rows = []
    for name, sink in sorted(sinks.items()):
        price = sink.cost("x")
        budget = budgets.get(name)
        rows.append(
            SinkRow(
                name=name,
                type=sink.type_name,
                paused=sink.paused,
                reason=sink.pause_reason if sink.paused else "",
                limit=budget.limit if budget is not None else None,
                spent=spent.get(name, 0),
                unit=f"{price.unit}s" if price is not None else "messages",
            )
        )
    return rows


def count_table(counts: Sequence[Counts]) -> CountTable:
    table = CountTable(total=dict.fromkeys(STATES, 0))
    grouped: dict[tuple[str, str], dict[str, int]] = {}
    for row in counts:
        by_state = grouped.setdefault((row.source, row.rule), dict.fromkeys(STATES, 0))
        by_state[row.state.value] += row.count
        table.total[row.state.value] += row.count
    table.rows = [(source, rule, by_state) for (source, rule), by_state in sorted(grouped.items())]
    return table


def entry_row(entry: Entry) -> EntryRow:
    # A message that failed before it had a recipient (a landline, not a number) shows the number
    # its reason quotes, masked the same way.
    masked = mask_number(entry.recipient or written_number(entry.detail))
    tail = "".join(c for c in masked if c.isdigit())
    return EntryRow(
        id=entry.key,
        state=entry.state.value,
        at=entry.updated_at,
        source=entry.source,
        rule=entry.rule,
        sink=entry.sink,
        to=masked,
        tail=tail,
        reason=masked_reason(entry.detail, entry.recipient),
    )


def steps_shown(entry: Entry, steps: Sequence[Step]) -> list[Step]:
    """The history with the number masked wherever a reason quotes it."""
    return [Step(s.at, s.state, masked_reason(s.detail, entry.recipient), s.actor) for s in steps]

"""`connector preview`: per record, the rule, the recipient, the text, its segments and cost, and what
the send policies would do with it now (send, wait until, skip, fail), with the cost against what
is left of the sink's budget today. Sends nothing, writes nothing, moves no file: the ledger is only
read (its opt-out list, today's spend), and only if it exists.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass

from connector.assembly import budgets_of, build_sinks, build_sources
from connector.config_loader import LoadedConfig
from connector.events import Record
from connector.http import make_client
from connector.ledger import SqlLedger, open_ledger, sqlite_path
from connector.optouts import OptOuts
from connector.policy import Budget, PolicyContext
from connector.policy_step import PolicyStep
from connector.progress import at_most
from connector.rehearsal import rehearse
from connector.rules import CompiledRule, rules_by_source
from connector.segments import count_segments
from policies.budget import day_of
from sinks.base import Sink
from sources.base import Source, SourceContext


@dataclass(frozen=True)
class _Spend:
    budgets: Mapping[str, Budget]
    spent: Mapping[str, int]  # today, by sink


async def preview(
    loaded: LoadedConfig, only: Sequence[str] | None, limit: int, context: SourceContext
) -> int:
    config = loaded.config
    unknown = [name for name in only or () if name not in config.sources]
    if unknown:
        print(f"no source named {', '.join(unknown)} (sources: {', '.join(sorted(config.sources))})")
        return 2
    by_source = rules_by_source(loaded.rules)
    now = time.time()
    async with make_client(8) as client:
        sinks = build_sinks(loaded, client)
        optouts = OptOuts(config.suppress, loaded.base_dir)
        spend = _Spend(budgets_of(loaded, sinks), {})
        ledger = await _existing_ledger(loaded)
        try:
            await optouts.refresh(ledger, keep=False)  # looks only: nothing written
            if ledger is not None and spend.budgets:
                spend = _Spend(spend.budgets, await ledger.spent(day_of(now, config.timezone)[0]))
        finally:
            if ledger is not None:
                await ledger.close()
        step = PolicyStep(loaded.rules, PolicyContext(config.timezone, optouts, spend.budgets))
        for name, source in build_sources(loaded, context, only).items():
            show = functools.partial(
                _preview_record, rules=by_source[name], sinks=sinks, step=step, spend=spend, now=now
            )
            shown = await asyncio.to_thread(_examine, source, limit, show)
            print(f"== source {name}: {len(shown)} record(s) shown (limit {limit})")
            for text in shown:
                print(text)
    return 0


async def _existing_ledger(loaded: LoadedConfig) -> SqlLedger | None:
    """The ledger, if there is one to read (previewing creates no SQLite file)."""
    path = sqlite_path(loaded.config.state, loaded.base_dir)
    if path is not None and not await asyncio.to_thread(path.exists):
        return None
    return await open_ledger(loaded.config.state, loaded.base_dir, str(loaded.path))


def _examine(source: Source, limit: int, show: Callable[[Record], str]) -> list[str]:
    """The first `limit` records, each shown as soon as it is read: the source's progress, counted
    as it hands records over, is then the progress of the whole preview (rendering is the slow part)."""
    records = source.preview()
    try:
        with at_most(limit):
            return [show(record) for record in itertools.islice(records, limit)]
    finally:
        if isinstance(records, Generator):
            records.close()  # its progress ends here when the limit stopped it


def _preview_record(
    record: Record,
    rules: list[CompiledRule],
    sinks: Mapping[str, Sink],
    step: PolicyStep,
    spend: _Spend,
    now: float,
) -> str:
    where = record.where or record.origin
    outlook = rehearse(record, rules, sinks, step, now)
    if outlook.problem:
        return f"{where}: would fail: {outlook.problem}"
    if outlook.kept:
        return f"{where}: already has a status, left alone: {outlook.kept}"
    lines: list[str] = []
    for message in outlook.messages:
        rule, decision = message.rule, message.decision
        if message.recipient is None or decision.text is None:
            lines.append(f"{where}: rule {rule.name}: {message.verdict}")
            continue
        info = count_segments(decision.text)
        sink = sinks.get(rule.sink)
        price = sink.cost(decision.text) if sink is not None else None
        cost = f", {price}" if price is not None else ""
        lines.append(
            f"{where}: rule {rule.name} -> {rule.sink} to {message.recipient}: {decision.text!r}\n"
            f"    {info.segments} segment(s) {info.encoding}, {info.characters} characters{cost}\n"
            f"    {message.verdict}{_limits(rule, decision.text, spend)}"
        )
    return "\n".join(lines) if lines else f"{where}: no rule applies"


def _limits(rule: CompiledRule, text: str, spend: _Spend) -> str:
    """What only the moment it goes can tell: the cap, and the budget left today."""
    notes = []
    cap = rule.config.max_per_recipient
    if cap is not None:
        notes.append(f"at most {cap.written} to this number")
    budget = spend.budgets.get(rule.sink)
    if budget is not None:
        left = budget.limit - spend.spent.get(rule.sink, 0)
        notes.append(f"costs {budget.cost(text)} of the {budget.limit} a day, {left} left today")
    return f" ({'; '.join(notes)})" if notes else ""

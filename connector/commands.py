"""What each CLI command does, given a loaded config."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

import httpx
import structlog

from connector import progress
from connector.assembly import build_sinks, build_sources
from connector.config_loader import LoadedConfig
from connector.errors import ConnectorError
from connector.events import Record
from connector.http import make_client
from connector.ledger import Instance, State, open_ledger, sqlite_path
from connector.ledger import describe as describe_ledger
from connector.optouts import normalised
from connector.optouts import probe as probe_list
from connector.preview import preview as show_preview
from connector.rule_tests import check_lines as check_tests
from connector.rules import RuleConfig
from connector.runtime import Runtime
from connector.status import stamp
from sources.base import SourceContext

log = structlog.get_logger(__name__)


async def run(loaded: LoadedConfig) -> int:
    """Until SIGTERM; a sink whose account is refused stays paused and is asked again meanwhile."""
    await _with_runtime(loaded, Runtime.run)
    return 0


async def once(loaded: LoadedConfig) -> int:
    """One pass; exit 1 when a provider refused an account (its records are written `pending`)."""
    _progress_bar(loaded)
    refused = await _with_runtime(loaded, Runtime.once)
    for name, reason in refused.items():
        print(
            f"sink {name}: the provider refused the account: {reason}; its messages wait as pending",
            file=sys.stderr,
        )
    return 1 if refused else 0


def _progress_bar(loaded: LoadedConfig) -> None:
    """`once` and `preview` are often watched: long work shows a bar on stderr when it is a
    terminal and the logs are console lines (JSON lines stay machine-readable; `run` logs only)."""
    if loaded.config.log.format == "console":
        progress.draw_on(sys.stderr)


async def _with_runtime(loaded: LoadedConfig, action: Callable[[Runtime], Awaitable[None]]) -> dict[str, str]:
    """Run `action`; answer the sinks whose account the provider refused at the start, with why."""
    runtime = await Runtime.open(loaded)
    try:
        refused = await runtime.verify_sinks()
        reasons = {name: runtime.sinks[name].pause_reason for name in refused}
        await action(runtime)
    finally:
        await runtime.close()
    return reasons


class _NoNotes:
    """Read-only commands keep no notes."""

    async def get_note(self, scope: str, key: str) -> str | None:
        return None

    async def set_note(self, scope: str, key: str, value: str) -> None:
        return None

    async def notes_in(self, scope: str) -> dict[str, str]:
        return {}

    async def drop_notes(self, scope: str, keys: Sequence[str]) -> None:
        return None


async def _refuse(records: Sequence[Record]) -> list[str | None]:
    raise ConnectorError("read-only command: nothing is processed")


def _offline_context(loaded: LoadedConfig) -> SourceContext:
    return SourceContext(
        process=_refuse, notes=_NoNotes(), base_dir=loaded.base_dir, stopping=asyncio.Event()
    )


async def check(loaded: LoadedConfig, *, online: bool) -> int:
    config = loaded.config
    rules = loaded.rules
    failures = 0
    lines = [f"{loaded.path}: config is valid"]
    try:
        lines.append(f"  ledger   {await describe_ledger(config.state, loaded.base_dir, online=online)}")
    except ConnectorError as exc:
        failures += 1
        lines.append(f"  ledger   UNUSABLE: {exc}")
    async with make_client(8) as client:
        sinks = build_sinks(loaded, client)
        for name, sink in sinks.items():
            summary, ok = await _probe(sink.check(), online, "credentials")
            failures += not ok
            budget = config.sinks[name].daily_budget
            lines.append(
                f"  sink     {name} ({sink.type_name}): {summary}"
                + (f"; daily budget {budget} (days in {config.timezone})" if budget else "")
            )
        sources = build_sources(loaded, _offline_context(loaded))
        for name, source in sources.items():
            summary, ok = await _probe(source.check(online=online), True, "source")
            failures += not ok
            lines.append(f"  source   {name} ({source.type_name}): {summary}")
    for rule in rules:
        cfg = rule.config
        lines.append(
            f"  rule     {rule.name}: {', '.join(cfg.sources)} -> {rule.sink}"
            + (f", when {cfg.when}" if cfg.when else "")
            + (f", country {cfg.country}" if cfg.country else "")
            + f", dedupe {cfg.dedupe_window / 86400:g}d"
            + _policies(cfg)
        )
    if not rules:
        lines.append("  rules    none: nothing will be sent")
    for suppress in config.suppress:
        summary, ok = await probe_list(suppress, loaded.base_dir, online=online)
        failures += not ok
        lines.append(f"  opt-outs {summary}")
    lines += await asyncio.to_thread(check_tests, loaded)  # a broken test file warns; exit is the config's
    for warning in loaded.warnings:
        lines.append(f"warning: {warning}")
    print("\n".join(lines))
    if failures:
        print(f"{failures} source(s)/sink(s)/opt-out list(s) cannot be used", flush=True)
        return 1
    return 0


def _policies(cfg: RuleConfig) -> str:
    """The rule's send policies, as `check` lists them."""
    said = []
    if cfg.send_at is not None:
        offset = f" {cfg.send_offset / 3600:+g}h" if cfg.send_offset else ""
        said.append(f"at send_at{offset}")
    if cfg.expire_after is not None:
        said.append(f"expires {cfg.expire_after / 3600:g}h after due")
    window = cfg.send_window
    if window is not None:
        days = ",".join(("mon", "tue", "wed", "thu", "fri", "sat", "sun")[d] for d in sorted(window.days))
        zone = f" {window.timezone}" if window.timezone else ""
        said.append(f"window {days} {window.start:%H:%M}-{window.end:%H:%M}{zone}")
    if cfg.max_per_recipient is not None:
        said.append(f"at most {cfg.max_per_recipient.written} per number")
    return "".join(f", {s}" for s in said)


async def _probe(check: object, enabled: bool, what: str) -> tuple[str, bool]:
    assert asyncio.iscoroutine(check)
    if not enabled:
        check.close()
        return "not checked (--offline)", True
    try:
        return str(await check), True
    except ConnectorError as exc:
        return f"UNUSABLE {what}: {exc}", False
    except httpx.HTTPError as exc:
        return f"UNUSABLE {what}: {type(exc).__name__}: {exc}", False


async def preview(loaded: LoadedConfig, only: Sequence[str] | None, limit: int) -> int:
    _progress_bar(loaded)
    return await show_preview(loaded, only, limit, _offline_context(loaded))


async def status(loaded: LoadedConfig, recent: int) -> int:
    path = sqlite_path(loaded.config.state, loaded.base_dir)
    if path is not None and not await asyncio.to_thread(path.exists):
        print(f"no ledger yet at {path}: nothing has been processed")
        return 0
    ledger = await open_ledger(loaded.config.state, loaded.base_dir, str(loaded.path))
    try:
        counts = await ledger.counts()
        problems = await ledger.recent([State.FAILED, State.UNKNOWN], recent)
        instances = await ledger.instances()
    finally:
        await ledger.close()
    table: dict[tuple[str, str], dict[State, int]] = defaultdict(dict)
    for row in counts:
        table[(row.source, row.rule)][row.state] = row.count
    states = list(State)
    print(f"{'source':<16} {'rule':<24} " + " ".join(f"{s.value:>8}" for s in states))
    for (source, rule), by_state in sorted(table.items()):
        print(f"{source:<16} {rule:<24} " + " ".join(f"{by_state.get(s, 0):>8}" for s in states))
    if not table:
        print("(no sends recorded)")
    if problems:
        print("\nmost recent failures and unknowns:")
        for entry in problems:
            print(
                f"  {stamp(entry.updated_at)} {entry.key} {entry.source}/{entry.rule} "
                f"{entry.recipient or '-'}: {entry.state.value}: {entry.detail}"
            )
    print(_instances(instances))
    return 0


async def optout(
    loaded: LoadedConfig, action: str, numbers: Sequence[str], country: str | None, note: str
) -> int:
    """`connector optout add|remove|list`: the ledger's own opt-out list, numbers in E.164."""
    good, bad = normalised(numbers, country)
    if bad:
        for value in bad:
            print(f"{value!r} is not a phone number{'' if country else ' (for local forms give --country)'}")
        print("nothing changed", file=sys.stderr)
        return 1
    if action != "list" and not good:
        print(f"connector optout {action}: name at least one number", file=sys.stderr)
        return 2
    ledger = await open_ledger(loaded.config.state, loaded.base_dir, str(loaded.path))
    try:
        if action == "add":
            added = await ledger.optout_add(good, note)
            print(
                f"{added} number(s) added to the opt-out list"
                + (f", {len(good) - added} already on it" if added < len(good) else "")
            )
        elif action == "remove":
            print(f"{await ledger.optout_remove(good)} number(s) removed from the opt-out list")
        else:
            listed = await ledger.optouts()
            wanted = set(good)
            for number, added_at, why in listed:
                if not wanted or number in wanted:
                    print(f"{number}  added {stamp(added_at)}" + (f"  {why}" if why else ""))
            print(f"{len(listed)} number(s) on the ledger's list", file=sys.stderr)
            for suppress in loaded.config.suppress:
                print(f"also suppressed: the numbers in {suppress.describe()} (suppress:)", file=sys.stderr)
    finally:
        await ledger.close()
    return 0


def _instances(instances: Sequence[Instance]) -> str:
    """The processes sharing the ledger, and what each holds (SPEC "Several processes")."""
    if not instances:
        return "\ninstances: none running"
    now = time.time()
    lines = [f"\ninstances sharing the ledger ({len(instances)}):"]
    for i in instances:
        left = i.expires_at - now
        lease = (
            f"lease {left:.0f}s left"
            if left > 0
            else f"LAPSED {-left:.0f}s ago (its claims go to the others)"
        )
        lines.append(
            f"  {i.id}  host {i.host} pid {i.pid}, started {stamp(i.started_at)}, "
            f"renewed {stamp(i.renewed_at)}, {lease}"
        )
        held = ", ".join(i.holds) if i.holds else "nothing"
        lines.append(f"      holds {held}; {i.sending} sending, {i.owned} claimed not yet sent")
    return "\n".join(lines)

"""`connector test`: rows in, expected messages out (SPEC "Rule tests"; the files: rule_test_file).

Each case goes through what a real pass would do with its row, through the same code
(connector/rehearsal.py, which `connector preview` shows): the source's way of making a record of
it, the compiled rules, the sink's way of writing the number, and the send policies as if now were
the case's `at`, with the opt-out lists of the config's `suppress` files (a Google Sheet tab is not
read). Nothing is sent (the sinks' HTTP client refuses every request), no source is opened, no
ledger is read or written, no credential is needed. What only the ledger knows is not counted:
duplicates of earlier sends, frequency caps, daily budgets, the ledger's own opt-out list
(`connector optout add`).
"""

from __future__ import annotations

import asyncio
import difflib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from connector.assembly import budgets_of, build_sinks
from connector.config_loader import LoadedConfig
from connector.errors import ConnectorError
from connector.events import Record
from connector.optouts import OptOuts
from connector.policy import PolicyContext
from connector.policy_step import PolicyStep
from connector.rehearsal import Outlook, rehearse
from connector.rule_test_file import PATTERN, Expected, PlannedCase, find_test_files, read_test_file
from connector.rules import CompiledRule, rules_by_source
from connector.segments import count_segments
from sinks.base import Sink
from sources.tabular import tabular_record

_LONG = 60  # characters: a longer text that differs is shown as a diff


async def run_tests(loaded: LoadedConfig, named: Sequence[str]) -> int:
    """Every case of every file; 0 when all pass, 1 when one fails or a file has problems."""
    paths = find_test_files(loaded, named)
    if not paths:
        print(f"no {PATTERN} beside {loaded.path.name} (in {loaded.base_dir}): nothing to test")
        return 0
    files = [await asyncio.to_thread(read_test_file, path, loaded) for path in paths]
    passed = failed = 0
    async with httpx.AsyncClient(transport=httpx.MockTransport(_no_request)) as client:
        bench = await _Bench.open(loaded, client)
        try:
            for file in files:
                if file.problems:
                    print(f"== {file.path}: {len(file.problems)} problem(s), not run")
                    print("\n".join(str(problem) for problem in file.problems))
                    continue
                print(f"== {file.path}: {len(file.cases)} case(s)")
                for case in file.cases:
                    differences = _differences(case, bench.outlook(case))
                    if differences:
                        failed += 1
                        print(f"FAIL {case.name}  ({case.where})")
                        print("\n".join(f"    {line}" for line in differences))
                    else:
                        passed += 1
                        print(f"PASS {case.name}")
        finally:
            await bench.close()
    broken = [file for file in files if file.problems]
    count = f"{len(files)} file{'s' if len(files) != 1 else ''}"
    tail = f"; {len(broken)} with problems, not run" if broken else ""
    print(f"{passed} passed, {failed} failed ({count}{tail})")
    return 1 if failed or broken else 0


def check_lines(loaded: LoadedConfig) -> list[str]:
    """What `connector check` says of the rule tests: one line, and a warning per problem. Blocking."""
    files = [read_test_file(path, loaded) for path in find_test_files(loaded)]
    if not files:
        return [f'  tests    none ({PATTERN} beside the config: README "Rule tests")']
    cases = sum(len(file.cases) for file in files)
    problems = [problem for file in files for problem in file.problems]
    said = f"  tests    {len(files)} file(s), {cases} case(s): run connector test"
    if problems:
        said += f" ({len(problems)} problem(s) in the test files, below)"
    return [said, *(f"warning: {problem}" for problem in problems)]


def _no_request(request: httpx.Request) -> httpx.Response:
    raise ConnectorError(f"connector test sends nothing (a sink tried {request.method} {request.url.host})")


@dataclass
class _Bench:
    """The config's rules, sinks and policies, without a ledger and without sending."""

    loaded: LoadedConfig
    sinks: dict[str, Sink]
    step: PolicyStep
    rules: dict[str, list[CompiledRule]]
    now: float

    @classmethod
    async def open(cls, loaded: LoadedConfig, client: httpx.AsyncClient) -> _Bench:
        config = loaded.config
        sinks = build_sinks(loaded, client)
        optouts = OptOuts(config.suppress, loaded.base_dir, offline=True)
        await optouts.refresh(None)  # the suppress files (not sheet tabs: no network); not the ledger's list
        context = PolicyContext(config.timezone, optouts, budgets_of(loaded, sinks))
        return cls(
            loaded, sinks, PolicyStep(loaded.rules, context), rules_by_source(loaded.rules), time.time()
        )

    def outlook(self, case: PlannedCase) -> Outlook:
        source = self.loaded.config.sources[case.source]
        if case.at is None:
            now = self.now
        else:
            at = case.at if case.at.tzinfo else case.at.replace(tzinfo=self.loaded.config.timezone)
            now = at.timestamp()
        if case.tabular:  # the record as the source's rows make one: key and status columns
            status = getattr(source, "status_column", None)
            record = tabular_record(
                case.source,
                case.row,
                case.where,
                key_column=getattr(source, "key_column", None),
                status_column=status if status in case.row else None,
                where=case.where,
            )
        else:
            record = Record(case.source, case.row, case.where, where=case.where)
        return rehearse(record, self.rules.get(case.source, []), self.sinks, self.step, now)

    async def close(self) -> None:
        for sink in self.sinks.values():
            await sink.aclose()


# ---- what differs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Got:
    """One message as it came out, in the words a case's `expect` uses."""

    rule: str | None  # None: the record itself failed (the source found it malformed)
    state: str  # sent, pending, skipped, failed
    reason: str
    to: str | None  # E.164
    recipient: str | None  # as the sink writes it
    text: str | None

    def __str__(self) -> str:
        said = f"rule {self.rule}: " if self.rule else "the row: "
        said += self.state if self.state == "sent" else f"{self.state}: {self.reason}"
        if self.to is not None:
            said += f", to {self.to}"
        if self.text is not None:
            said += f", {self.text!r} ({_segments(self.text)} segment(s))"
        return said


def _got(outlook: Outlook) -> list[_Got]:
    if outlook.problem is not None:
        return [_Got(None, "failed", outlook.problem, None, None, None)]
    return [
        _Got(m.rule.name, m.state, m.verdict.reason, m.decision.to, m.recipient, m.decision.text)
        for m in outlook.messages
    ]


def _differences(case: PlannedCase, outlook: Outlook) -> list[str]:
    """What differs, a line each, naming the field, what was expected and what came out."""
    got = _got(outlook)
    expect = list(case.expect)
    lines: list[str] = []
    if len(got) != len(expect):
        lines.append(f"messages: expected {_count(len(expect))}, actual {_count(len(got))}")
        lines += [f"  expected: {_expected(e)}" for e in expect]
        lines += [f"  actual:   {g}" for g in got]
        if outlook.kept is not None:
            lines.append(f"  (the row already has a status, and is left alone: {outlook.kept!r})")
        elif not got:
            lines.append("  (no rule wants this row: its `when` is false, or no rule reads its source)")
        return lines
    by_rule = {g.rule: g for g in got}
    unnamed = [g for g in got if g.rule not in {e.rule for e in expect}]
    for entry in expect:
        if entry.rule is not None:
            found = by_rule.get(entry.rule)
            if found is None:
                wanting = ", ".join(str(g.rule) for g in got)
                lines.append(f"rule {entry.rule}: does not want this row (rules that do: {wanting})")
                continue
        elif len(unnamed) == 1:
            found = unnamed[0]
        else:
            wanting = ", ".join(str(g.rule) for g in unnamed)
            lines.append(
                f"rule: several rules want this row ({wanting}): name the rule of each expected message"
            )
            return lines
        lines += _compare(entry, found)
    return lines


def _compare(entry: Expected, got: _Got) -> list[str]:
    label = f"rule {got.rule}" if got.rule else "the row"
    lines: list[str] = []
    state, part = entry.outcome
    if got.state != state or part.lower() not in got.reason.lower():
        wanted = "sent" if state == "sent" else f"{state}: {part!r} (a part of the reason)"
        actual = "sent" if got.state == "sent" else f"{got.state}: {got.reason}"
        lines.append(f"{label}, outcome: expected {wanted}, actual {actual}")
    if entry.to is not None and entry.to not in (got.to, got.recipient):
        actual = "none (no usable number)" if got.to is None else repr(got.to)
        if got.recipient not in (None, got.to):
            actual += f" (the sink writes {got.recipient!r})"
        lines.append(f"{label}, to: expected {entry.to!r}, actual {actual}")
    if entry.message is not None and entry.message != got.text:
        lines += _text_difference(f"{label}, message", entry.message, got.text)
    if entry.segments is not None:
        segments = None if got.text is None else _segments(got.text)
        if segments != entry.segments:
            actual = "none (no text)" if segments is None else str(segments)
            lines.append(f"{label}, segments: expected {entry.segments}, actual {actual}")
    return lines


def _text_difference(label: str, expected: str, actual: str | None) -> list[str]:
    if actual is None:
        return [f"{label}: expected {expected!r}, actual none (the message did not render)"]
    if len(expected) <= _LONG and len(actual) <= _LONG and "\n" not in expected + actual:
        return [f"{label}: expected {expected!r}, actual {actual!r}"]
    diff = difflib.unified_diff(
        expected.splitlines(), actual.splitlines(), "expected", "actual", lineterm="", n=1
    )
    return [f"{label}: expected and actual differ:", *(f"  {line}" for line in diff)]


def _expected(entry: Expected) -> str:
    state, part = entry.outcome
    said = f"rule {entry.rule}: " if entry.rule else ""
    said += "sent" if state == "sent" else f"{state}: {part!r}"
    if entry.to is not None:
        said += f", to {entry.to}"
    if entry.message is not None:
        said += f", {entry.message!r}"
    return said


def _count(n: int) -> str:
    return "no SMS" if n == 0 else f"{n} message(s)"


def _segments(text: str) -> int:
    return count_segments(text).segments

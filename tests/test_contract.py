"""The contract every registered source and sink passes, built for each one from the registries.

A newly registered plug-in gets every test here by being registered; until it has a harness in
tests/contract/ (see tests/contract/harnesses.py), its tests fail and say so.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
from structlog.testing import capture_logs

from connector.errors import ConnectorError
from connector.events import OutcomeKind
from tests.contract.harnesses import SINK_HARNESSES, SOURCE_HARNESSES
from tests.contract.registry import registered_sinks, registered_sources
from tests.contract.sink_base import DeclaringHook, SettledHook, SinkHarness
from tests.contract.source_base import SENDS, UNWANTED, WANTED, SourceHarness, dump

SINK_TYPES = sorted(registered_sinks())
SOURCE_TYPES = sorted(registered_sources())


def sink_harness(type_name: str) -> SinkHarness:
    harness = SINK_HARNESSES.get(type_name)
    if harness is None:
        pytest.fail(f"sink {type_name!r} is registered but has no contract harness: "
                    f"add a harness for {type_name} in tests/contract/ (and list it in harnesses.py)")
    return harness()


def source_harness(type_name: str) -> SourceHarness:
    harness = SOURCE_HARNESSES.get(type_name)
    if harness is None:
        pytest.fail(f"source {type_name!r} is registered but has no contract harness: "
                    f"add a harness for {type_name} in tests/contract/ (and list it in harnesses.py)")
    return harness()


def test_no_harness_for_a_type_that_is_not_registered() -> None:
    stale = sorted(set(SINK_HARNESSES) - set(SINK_TYPES))
    stale += sorted(set(SOURCE_HARNESSES) - set(SOURCE_TYPES))
    assert not stale, f"harnesses for types no registry lists (renamed or removed?): {stale}"


# -- secrets ----------------------------------------------------------------------------------------


def forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret)}


def leaks(secrets: Sequence[str], texts: Sequence[tuple[str, str]]) -> list[str]:
    """`where: text` for every text holding a secret (plain or URL-encoded), the secret masked."""
    found: list[str] = []
    for where, text in texts:
        hit = [i for i, s in enumerate(secrets) if any(f in text for f in forms(s))]
        if hit:
            masked = text
            for i in hit:
                for f in sorted(forms(secrets[i]), key=len, reverse=True):
                    masked = masked.replace(f, f"<secret {i}>")
            found.append(f"{where}: {masked[:400]}")
    return found


def log_texts(
    events: Sequence[MutableMapping[str, Any]], records: Sequence[logging.LogRecord]
) -> list[tuple[str, str]]:
    texts = [(f"structlog event {e.get('event')!r}", repr(e)) for e in events]
    for record in records:
        texts.append((f"{record.name} log record", f"{record.getMessage()} {vars(record)!r}"))
    return texts


# -- sinks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sink_type", SINK_TYPES)
def test_sink_has_a_harness(sink_type: str) -> None:
    assert sink_harness(sink_type).type_name == sink_type


@pytest.mark.parametrize("sink_type", SINK_TYPES)
async def test_sink_answers_one_outcome_per_message_in_order(
    sink_type: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with sink_harness(sink_type).rig(tmp_path, client) as rig:
        outcomes = await rig.sink.send(rig.messages, DeclaringHook(rig.seen), SettledHook(rig.seen))
        assert len(outcomes) == len(rig.messages), f"{len(rig.messages)} messages, outcomes: {outcomes}"
        wrong = []
        for message, outcome in zip(rig.messages, outcomes, strict=True):
            kind, detail = rig.expected(message)
            if outcome.kind is not kind or (detail is not None and outcome.detail != detail):
                wrong.append(f"{message.id} ({message.to}): expected {kind.value} {detail or ''}; {outcome}")
        assert not wrong, "outcomes not one per message in order:\n" + "\n".join(wrong)
        carried = {i for request in rig.requests() for i in request}
        sent = {m.id for m, o in zip(rig.messages, outcomes, strict=True) if o.kind is OutcomeKind.SENT}
        assert sent <= carried, f"sent without reaching the provider: {sorted(sent - carried)}"


@pytest.mark.parametrize("sink_type", SINK_TYPES)
async def test_sink_awaits_on_sending_before_each_request_leaves(
    sink_type: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with sink_harness(sink_type).rig(tmp_path, client) as rig:
        hook = DeclaringHook(rig.seen)
        await rig.sink.send(rig.messages, hook)
        requests = rig.requests()
    assert requests, "the provider received nothing: the test would prove nothing"
    # Per message: its k-th request must come after its k-th declaration had returned (retries and
    # a refused bulk request sent again one by one each need their own declaration).
    problems = []
    for message in rig.messages:
        arrived = [n for n, ids in enumerate(requests) if message.id in ids]
        declared = [call.seen for call in hook.calls if message.id in call.ids]
        if len(declared) < len(arrived):
            problems.append(f"{message.id}: {len(arrived)} request(s), {len(declared)} on_sending call(s)")
        problems += [
            f"{message.id}: request #{n} arrived before on_sending returned (provider had {seen} then)"
            for n, seen in zip(arrived, declared, strict=False)
            if n < seen
        ]
    assert not problems, "\n".join(problems) + f"\nrequests: {requests}\non_sending: {hook.calls}"


@pytest.mark.parametrize("sink_type", SINK_TYPES)
async def test_sink_hands_each_request_to_on_settled_once_answered(
    sink_type: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with sink_harness(sink_type).rig(tmp_path, client) as rig:
        settled = SettledHook(rig.seen)
        outcomes = await rig.sink.send(rig.messages, DeclaringHook(rig.seen), settled)
        requests = rig.requests()
    returned = {m.id: o for m, o in zip(rig.messages, outcomes, strict=True)}
    times = Counter(i for call in settled.calls for i in call.ids)
    assert times == Counter(list(returned)), f"each message must settle exactly once: {settled.calls}"
    problems = []
    for call in settled.calls:
        assert len(call.ids) == len(call.outcomes), f"on_settled given {call.ids} with {call.outcomes}"
        for message_id, outcome in zip(call.ids, call.outcomes, strict=True):
            if outcome != returned[message_id]:
                problems.append(f"{message_id}: on_settled got {outcome}, send gave {returned[message_id]}")
            last = max((n for n, ids in enumerate(requests) if message_id in ids), default=-1)
            if last >= call.seen:
                problems.append(f"{message_id}: settled before its request #{last} reached the provider")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("sink_type", SINK_TYPES)
async def test_a_stopped_sink_sends_nothing_and_holds_every_message(
    sink_type: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with sink_harness(sink_type).rig(tmp_path, client) as rig:
        hook = DeclaringHook(rig.seen)
        rig.sink.stop()
        outcomes = await rig.sink.send(rig.messages, hook)
        assert rig.requests() == [], "a stopped sink sent requests"
    assert hook.calls == [], f"a stopped sink declared messages as sending: {hook.calls}"
    assert [o.kind for o in outcomes] == [OutcomeKind.HELD] * len(rig.messages), outcomes


@pytest.mark.parametrize("sink_type", SINK_TYPES)
async def test_sink_secrets_never_reach_a_log_line_or_an_outcome(
    sink_type: str, tmp_path: Path, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    harness = sink_harness(sink_type)
    async with harness.rig(tmp_path, client) as rig:
        secrets = rig.sink.config.secrets()
        unreported = [s for s in harness.secrets if s not in secrets]
        assert not unreported, f"config.secrets() leaves out {len(unreported)} secret(s) the harness set"
        if not secrets:
            pytest.skip(f"{sink_type}'s config has no secret")
        rig.force_failure()
        caplog.set_level(logging.DEBUG)
        with capture_logs() as events:
            outcomes = await rig.sink.send(rig.messages, DeclaringHook(rig.seen))
    assert OutcomeKind.SENT not in {o.kind for o in outcomes}, f"the forced failure did not fail: {outcomes}"
    assert events, "the forced failure logged nothing: there was no reason to look at"
    texts = log_texts(events, caplog.records) + [(f"outcome of {m.id}", o.detail)
                                                 for m, o in zip(rig.messages, outcomes, strict=True)]
    found = leaks(secrets, texts)
    assert not found, "secrets in logs or outcomes:\n" + "\n".join(found)


# -- sources ----------------------------------------------------------------------------------------


def status_problems(statuses: dict[str, str], *, again: bool = False) -> list[str]:
    """What is wrong with the statuses; `again`: after the same input a second time, where a sent
    record may also read as a skipped duplicate of its first send."""
    problems = []
    for key, word in WANTED.items():
        status = statuses.get(key, "")
        allowed = {word, "skipped"} if again and word == "sent" else {word}
        if not status:
            problems.append(f"{key}: a rule wants it, no status was written back")
        elif status.split()[0].rstrip(":") not in allowed:
            problems.append(f"{key}: expected {' or '.join(sorted(allowed))}, status is {status!r}")
    problems += [f"{k}: no rule wants it, yet it got {statuses[k]!r}" for k in UNWANTED if statuses.get(k)]
    return problems


@pytest.mark.parametrize("source_type", SOURCE_TYPES)
def test_source_has_a_harness(source_type: str) -> None:
    assert source_harness(source_type).type_name == source_type


@pytest.mark.parametrize("source_type", SOURCE_TYPES)
async def test_source_preview_sends_writes_and_moves_nothing(source_type: str, tmp_path: Path) -> None:
    harness = source_harness(source_type)
    async with harness.rig(tmp_path) as rig:
        before = rig.snapshot()
        records = await asyncio.to_thread(lambda: list(rig.source.preview()))
        after = rig.snapshot()
        ledger = await rig.runtime.ledger.counts()
        assert len(records) == harness.previewed, f"preview showed {records}"
        assert after == before, f"preview changed things:\nbefore {dump(before)}\nafter {dump(after)}"
        assert rig.sent() == 0 and ledger == [], f"preview sent: outbox {rig.sent()}, ledger {ledger}"


@pytest.mark.parametrize("source_type", SOURCE_TYPES)
async def test_source_writes_a_status_back_for_every_record_a_rule_wants(
    source_type: str, tmp_path: Path
) -> None:
    async with source_harness(source_type).rig(tmp_path) as rig:
        await rig.one_pass()
        statuses = await rig.statuses()
        problems = status_problems(statuses)
        assert not problems, "\n".join(problems) + f"\nstatuses: {dump(statuses)}"
        assert rig.sent() == SENDS


@pytest.mark.parametrize("source_type", SOURCE_TYPES)
async def test_source_second_pass_sends_nothing_more(source_type: str, tmp_path: Path) -> None:
    async with source_harness(source_type).rig(tmp_path) as rig:
        await rig.one_pass()
        assert rig.sent() == SENDS
        await rig.second_pass()
        assert rig.sent() == SENDS, "the same input, presented again, was sent again"
        statuses = await rig.statuses()
        problems = status_problems(statuses, again=True)
        assert not problems, "after the second pass:\n" + "\n".join(problems) + f"\n{dump(statuses)}"


@pytest.mark.parametrize("source_type", SOURCE_TYPES)
async def test_source_secrets_never_reach_a_log_line(
    source_type: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    harness = source_harness(source_type)
    async with harness.rig(tmp_path) as rig:
        secrets = rig.source.config.secrets()
        unreported = [s for s in harness.secrets if s not in secrets]
        assert not unreported, f"config.secrets() leaves out {len(unreported)} secret(s) the harness set"
        caplog.set_level(logging.DEBUG)
        errors: list[tuple[str, str]] = []
        with capture_logs() as events:
            await rig.force_failure()
            try:
                await rig.one_pass()
            except ConnectorError as exc:  # a pass that fails says why, to the person running it
                errors.append((f"error of the pass ({type(exc).__name__})", str(exc)))
        sensitive = secrets + rig.sensitive()
    if not sensitive:
        pytest.skip(f"{source_type} handles no secret")
    assert events, "the pass logged nothing: there was nothing to look at"
    found = leaks(sensitive, log_texts(events, caplog.records) + errors)
    assert not found, "secrets in logs:\n" + "\n".join(found)

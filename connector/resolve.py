"""`connector resolve`: a person's decision on messages whose outcome the product could not know.

An `unknown:` send may or may not have reached the phone; only a person (looking at the provider's
portal, or asking the customer) can tell. The decision is kept in the ledger with who took it and
their note, and written back where the team reads statuses: the sheet cell, the results file
beside the processed CSV (rewritten), `/events`. `resend` sends the message once more, through the
same path as any other send (policies, budget, fencing), from this process.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from connector.config_loader import LoadedConfig
from connector.ledger import Decision, Entry, Resolution, SqlLedger, State, Verdict
from connector.ledger.keys import is_id_prefix
from connector.runtime import Runtime
from connector.status import of_entry

__all__ = ["Asked", "Verdict", "resolve"]

ID_DIGITS = 32  # an event id: 128 bits in hex


@dataclass(frozen=True)
class Asked:
    ids: Sequence[str]
    verdict: Verdict
    note: str = ""
    force: bool = False
    all_unknown: bool = False
    sources: Sequence[str] = ()
    rules: Sequence[str] = ()


def usage_problem(asked: Asked, loaded: LoadedConfig) -> str:
    """What is wrong with the command line itself (exit 2), or ""."""
    if asked.all_unknown == bool(asked.ids):
        return "name the event ids, or give --all-unknown (not both)"
    if (asked.sources or asked.rules) and not asked.all_unknown:
        return "--source and --rule choose among --all-unknown; with ids, the ids say which"
    config = loaded.config
    for kind, names, known in (
        ("source", asked.sources, config.sources),
        ("rule", asked.rules, {r.name for r in config.rules}),
    ):
        missing = [n for n in names if n not in known]
        if missing:
            return f"no {kind} named {', '.join(missing)} ({kind}s: {', '.join(sorted(known)) or 'none'})"
    return ""


def who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        return "unknown user"


async def resolve(loaded: LoadedConfig, asked: Asked) -> int:
    """Exit 0 when every message named was decided, 1 when some were refused (and why is printed),
    2 for a command line that cannot be right."""
    problem = usage_problem(asked, loaded)
    if problem:
        print(f"connector resolve: {problem}", file=sys.stderr)
        return 2
    # A runtime of its own: an instance on the ledger (a `resend` is claimed and sent under its
    # lease like any other), with the sources to write the decisions back to.
    runtime = await Runtime.open(loaded)
    try:
        ledger = runtime.ledger
        keys, unclear = await _full_ids(ledger, asked.ids)
        if not asked.ids:
            keys = await ledger.unknown_keys(asked.sources, asked.rules)
        if not keys and not unclear:
            print("no unknown messages" + _among(asked))
            return 0
        decision = Decision(asked.verdict, asked.note, who(), asked.force)
        results = unclear + await ledger.resolve(keys, decision)
        decided = [r.entry for r in results if not r.refused and r.entry is not None]
        if asked.verdict is Verdict.RESEND and decided:
            decided = await runtime.engine.send_claimed(decided)
        await runtime.write_back(decided)
        for name in sorted({e.source for e in decided} & set(runtime.sources)):
            try:  # a sheet's cells now, unless another instance polls it (then at its next poll)
                await runtime.sources[name].flush()
            except Exception as exc:  # noqa: BLE001 - the ledger has the decision; the poll writes it
                print(f"source {name}: not written now ({exc}); its next poll writes it", file=sys.stderr)
        now = {e.key: e for e in decided}
        for result in results:
            print(_line(result, now.get(result.key)))
        refused = sum(bool(r.refused) for r in results)
        print(
            f"{len(decided)} decided as {asked.verdict.value}"
            + (f", {refused} left as they were" if refused else "")
            + f" (by {decision.actor})",
            file=sys.stderr,
        )
        return 1 if refused else 0
    finally:
        await runtime.close()


SHORTEST_ID = 8  # hex digits: fewer would name many messages in a big ledger


async def _full_ids(ledger: SqlLedger, ids: Sequence[str]) -> tuple[list[str], list[Resolution]]:
    """Ids as a person copied them (the status page shows the first 12 digits): a unique prefix
    names its message; a prefix of several is refused as ambiguous, never guessed."""
    short = [i for i in ids if SHORTEST_ID <= len(i) < ID_DIGITS and is_id_prefix(i.lower())]
    found = await ledger.full_keys(short)
    keys: list[str] = []
    unclear: list[Resolution] = []
    for given in ids:
        matches = found.get(given)
        if matches is None or not matches:
            keys.append(given)  # a whole id, or one the ledger does not know (said as such)
        elif len(matches) == 1:
            keys.append(matches[0])
        else:
            unclear.append(Resolution(given, None, "several messages have ids starting so: give more digits"))
    return keys, unclear


def _among(asked: Asked) -> str:
    said = [f"source {', '.join(asked.sources)}"] if asked.sources else []
    said += [f"rule {', '.join(asked.rules)}"] if asked.rules else []
    return f" for {' and '.join(said)}" if said else ""


def _line(result: Resolution, entry: Entry | None) -> str:
    if result.refused:
        return f"{result.key}: not decided: {result.refused}"
    assert entry is not None
    where = f"{entry.source}/{entry.rule} {entry.origin}"
    if entry.state is State.PENDING:
        return f"{result.key} ({where}): {of_entry(entry)} (the next run or once sends it)"
    return f"{result.key} ({where}): {of_entry(entry)}"

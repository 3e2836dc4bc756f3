"""What a sink harness provides, and the hooks the sink contract hands to `Sink.send`.

A harness stands one registered sink up against real parts (a tmp folder, a loopback emulator) and
can read back what reached the provider; the contract tests in tests/test_contract.py do the rest.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from connector.events import Message, Outcome, OutcomeKind
from sinks.base import Sink
from tests.contract.registry import registered_sinks

# Long enough for a request sent without waiting for the hook to reach the emulator meanwhile.
HOOK_PAUSE_S = 0.02


def build_sink(type_name: str, settings: Mapping[str, Any], client: httpx.AsyncClient) -> Sink:
    """The registered class, configured through its own config model, as the runtime builds it."""
    sink_class = registered_sinks()[type_name]
    config = sink_class.config_model.model_validate({"type": type_name, **settings})
    return sink_class("contract", config, client)


@dataclass(frozen=True)
class Declared:
    ids: tuple[str, ...]
    seen: int  # requests the provider had received when the hook returned


class DeclaringHook:
    """`on_sending` that takes its time like the ledger's durable write, then notes how many
    requests the provider has received: a request that left before the hook returned shows."""

    def __init__(self, requests: Callable[[], int]) -> None:
        self.requests = requests
        self.calls: list[Declared] = []

    async def __call__(self, group: Sequence[Message]) -> None:
        await asyncio.sleep(HOOK_PAUSE_S)
        self.calls.append(Declared(tuple(m.id for m in group), self.requests()))


@dataclass(frozen=True)
class Settled:
    ids: tuple[str, ...]
    outcomes: tuple[Outcome, ...]
    seen: int  # requests the provider had received when the hook was called


class SettledHook:
    def __init__(self, requests: Callable[[], int]) -> None:
        self.requests = requests
        self.calls: list[Settled] = []

    async def __call__(self, group: Sequence[Message], outcomes: Sequence[Outcome]) -> None:
        self.calls.append(Settled(tuple(m.id for m in group), tuple(outcomes), self.requests()))


@dataclass
class SinkRig:
    """One sink against its provider, and the provider's side of the story."""

    sink: Sink
    messages: list[Message]  # distinguishable: every id and every number differs
    # The message ids each request carried, in the order the provider received them.
    requests: Callable[[], list[frozenset[str]]]
    # Kind and, where the provider gives one, the exact detail of each message's outcome; called
    # after the send, so it can look up the id the provider handed out.
    expected: Callable[[Message], tuple[OutcomeKind, str | None]]
    # From now on the provider fails every send, quoting the credentials it was given where it can.
    force_failure: Callable[[], None] = field(default=lambda: None)

    def seen(self) -> int:
        """Requests the provider has received so far."""
        return len(self.requests())


class SinkHarness(abc.ABC):
    type_name: ClassVar[str]
    secrets: ClassVar[tuple[str, ...]] = ()  # values this harness puts in the config's secret fields

    @abc.abstractmethod
    def rig(
        self, tmp_path: Path, client: httpx.AsyncClient
    ) -> contextlib.AbstractAsyncContextManager[SinkRig]:
        """The sink, ready to send, for the length of the block."""


def recipients_to_ids(messages: Sequence[Message], recipient: Callable[[str], str]) -> dict[str, str]:
    """How the provider writes each message's number, back to the message id (numbers are unique)."""
    found = {recipient(m.to): m.id for m in messages}
    assert len(found) == len(messages), "a contract batch needs one number per message"
    return found

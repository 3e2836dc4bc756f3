"""The plug point every sink implements: send these messages, tell me each outcome.

A sink is handed its `httpx.AsyncClient` (tests and benchmarks choose the transport) and an
`on_sending` hook that it must await right before a request leaves with those messages: the hook
makes the `sending` state durable, which is what lets a crash end in `unknown` rather than in a
second, paid, send. The hook raises `Fenced` when those messages are no longer this process's to
send (another instance took them over): the sink then sends none of them and answers
`Outcome.lost`. `on_settled` is its twin after the answer.

Stopping (SPEC "Stopping") has two steps, both called by the runtime: `stop()` lets nothing new
leave (what has not left is held, `pending`, for the next start), and `abort()`, once the shutdown
grace is over, gives up on the requests still on the wire (their outcome is `unknown`).
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx
import structlog
from pydantic import BaseModel, Field

from connector.events import Cost, Message, Outcome
from connector.plugins import Plugin

SendingHook = Callable[[Sequence[Message]], Awaitable[None]]
SettledHook = Callable[[Sequence[Message], Sequence[Outcome]], Awaitable[None]]

log = structlog.get_logger(__name__)

STOPPED = "the connector stopped before sending it; the next start sends it"


class SinkConfigBase(BaseModel):
    """Fields every sink accepts."""

    # The sink's own cost of a message a day (RO credits, PK SMS segments; messages for a sink
    # without a price), in the top-level timezone: never spent past (policies/budget.py).
    daily_budget: int | None = Field(
        default=None,
        ge=1,
        description="Most spent a day (RO credits, PK SMS segments, else messages), days in the top-level "
        "timezone; over it messages wait for the next day.",
    )

    def resolved(self, base_dir: Path) -> Self:
        """The config with its relative paths made absolute against the config file's folder."""
        return self

    def secrets(self) -> list[str]:
        """Values that must never reach a log line."""
        return []


class Sink(Plugin, abc.ABC):
    """One configured destination for messages."""

    type_name: ClassVar[str]  # from the config model's `type` Literal: written once, there
    config_model: ClassVar[type[SinkConfigBase]]
    # Pausing: an account problem (bad token, no credits, ...) holds every message for this sink
    # instead of failing them, and the pause grows while the problem lasts.
    first_pause: ClassVar[float] = 30.0
    longest_pause: ClassVar[float] = 15 * 60.0
    # Whether `check()` asks the provider about the account: then a paused sink is re-checked
    # before its held messages go again, instead of spending real sends as probes.
    checks_account: ClassVar[bool] = False

    def __init__(self, name: str, config: Any, client: httpx.AsyncClient) -> None:
        self.name = name
        self.config = config
        self.client = client
        self.paused_until = 0.0
        self.pause_reason = ""
        self._next_pause = self.first_pause
        self.stopping = asyncio.Event()

    @abc.abstractmethod
    async def send(
        self, messages: Sequence[Message], on_sending: SendingHook, on_settled: SettledHook | None = None
    ) -> list[Outcome]:
        """One outcome per message, in order. Never raises for a provider answer.

        `on_settled`, when given, is awaited with each request's messages and outcomes as soon as
        they are final: the caller makes them durable then, not when the whole batch is done, so a
        crash mid-batch leaves only the requests truly in flight without an outcome.
        """

    async def check(self) -> str:
        """Prove the credentials work where the provider allows it without sending; a summary line.

        Raises AccountError when the provider refuses the account.
        """
        return "no credential check available"

    def recipient(self, e164: str) -> str:
        """The number as this provider wants it written."""
        return e164

    @property
    def in_flight(self) -> int:
        """How many sends this sink makes at once: that many workers take its queued messages."""
        return 4

    def cost(self, text: str) -> Cost | None:
        """What one message of this text costs at the provider; None when it costs nothing."""
        return None

    @property
    def paused(self) -> bool:
        return time.monotonic() < self.paused_until

    @property
    def held_reason(self) -> str:
        """Why a message of this sink is held now: the status reads `pending: <this>`."""
        return f"sink {self.name} paused: {self.pause_reason}"

    @property
    def recheck_due(self) -> bool:
        """Paused for the account, the pause is over, and the provider can be asked without sending."""
        return self.checks_account and bool(self.pause_reason) and not self.paused

    def pause(self, reason: str) -> None:
        """Hold this sink's messages for a while; loud, because a person has to act."""
        self.paused_until = time.monotonic() + self._next_pause
        self.pause_reason = reason
        log.error("sink paused", sink=self.name, reason=reason, retry_in_s=round(self._next_pause))
        self._next_pause = min(self._next_pause * 2, self.longest_pause)

    def resume(self) -> None:
        if self.pause_reason:
            log.warning("sink resumed", sink=self.name, after=self.pause_reason)
        self.paused_until = 0.0
        self.pause_reason = ""
        self._next_pause = self.first_pause

    def stop(self) -> None:
        """From now on no request leaves; messages not yet sent are held (SPEC "Stopping")."""
        self.stopping.set()

    def abort(self) -> None:
        """The shutdown grace is over: requests still unanswered end now, as `unknown`."""

    async def aclose(self) -> None:
        """Release what the sink holds (the shared client is closed by its owner)."""

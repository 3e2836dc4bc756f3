"""Renders and records, sends nothing: every message is appended to a JSON-lines outbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal, Self

import httpx
from pydantic import Field

from connector.errors import Fenced
from connector.events import Message, Outcome
from connector.types import STRICT
from sinks.base import STOPPED, SendingHook, SettledHook, Sink, SinkConfigBase


class DryRunConfig(SinkConfigBase):
    """Renders and records, sends nothing."""

    model_config = STRICT
    type: Literal["dry_run"] = Field(description="Renders and records, sends nothing.")
    path: Path | None = Field(
        default=None,
        description="JSON-lines file each message is appended to; default: only the ledger records it.",
    )

    def resolved(self, base_dir: Path) -> Self:
        if self.path is None or self.path.is_absolute():
            return self
        return self.model_copy(update={"path": base_dir / self.path})


class DryRunSink(Sink):
    config_model = DryRunConfig

    def __init__(self, name: str, config: DryRunConfig, client: httpx.AsyncClient) -> None:
        super().__init__(name, config, client)
        self._outbox: IO[str] | None = None
        self._lock = asyncio.Lock()

    async def send(
        self, messages: Sequence[Message], on_sending: SendingHook, on_settled: SettledHook | None = None
    ) -> list[Outcome]:
        if self.stopping.is_set():
            return [Outcome.held(STOPPED) for _ in messages]
        try:
            await on_sending(messages)
        except Fenced as exc:
            return [Outcome.lost(str(exc)) for _ in messages]
        path = self.config.path
        if path is not None:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            lines = "".join(
                json.dumps({"id": m.id, "to": m.to, "text": m.text, "at": stamp}, ensure_ascii=False) + "\n"
                for m in messages
            )
            async with self._lock:
                if self._outbox is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self._outbox = path.open("a", encoding="utf-8")
                self._outbox.write(lines)
                self._outbox.flush()
        outcomes = [Outcome.sent("dry-run") for _ in messages]
        if on_settled is not None:
            await on_settled(messages, outcomes)
        return outcomes

    async def check(self) -> str:
        return f"dry run into {self.config.path}" if self.config.path else "dry run (ledger only)"

    async def aclose(self) -> None:
        if self._outbox is not None:
            self._outbox.close()
            self._outbox = None

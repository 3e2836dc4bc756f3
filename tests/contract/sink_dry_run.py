"""dry_run: the "provider" is the outbox file; each line is one message that went out."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from connector.events import Message, OutcomeKind
from tests.contract.sink_base import SinkHarness, SinkRig, build_sink
from tests.helpers import ro_mobile


class DryRunHarness(SinkHarness):
    type_name = "dry_run"

    @contextlib.asynccontextmanager
    async def rig(self, tmp_path: Path, client: httpx.AsyncClient) -> AsyncIterator[SinkRig]:
        outbox = tmp_path / "outbox.jsonl"
        sink = build_sink(self.type_name, {"path": str(outbox)}, client)

        def requests() -> list[frozenset[str]]:
            if not outbox.exists():
                return []
            return [frozenset({json.loads(line)["id"]}) for line in outbox.read_text().splitlines()]

        def expected(message: Message) -> tuple[OutcomeKind, str | None]:
            return OutcomeKind.SENT, None  # the same detail for every message: the outbox tells them apart

        messages = [Message(f"dry-{i}", "+4" + ro_mobile(i), f"Order D-{i} is confirmed.") for i in range(4)]
        try:
            yield SinkRig(sink, messages, requests, expected)
        finally:
            await sink.aclose()

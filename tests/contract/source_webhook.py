"""webhook: the orders as one delivery to a real runtime serving on loopback (`connector run`);
statuses from GET /events/{id} for every event id in the 202."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from connector.runtime import Runtime
from tests.contract.source_base import ORDERS, SOURCE, SourceHarness, SourceRig, config_text, order_rows
from tests.webhook_support import Served, serve

TOKEN = "contract-hook-token-2d7b90e1c4"
PATH = "/hooks/contract"
SOURCE_YAML = (
    f"    type: webhook\n    path: {PATH}\n    token: {TOKEN}\n    items: orders\n    key_column: Order ID\n"
)
BODY = json.dumps({"orders": order_rows()}).encode()
BEARER = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}


class WebhookRig(SourceRig):
    def __init__(self, runtime: Runtime, folder: Path, served: Served) -> None:
        super().__init__(runtime, folder)
        self.served = served
        self.events: dict[str, str] = {}  # event id -> the key of its record

    async def _deliver(self) -> None:
        answer = await self.served.post(PATH, BODY, BEARER)
        assert answer.status_code == 202, answer.text
        for event in answer.json()["events"]:
            self.events[event["id"]] = ORDERS[event["record"]][0]
        await self.runtime.engine.drain()

    async def one_pass(self) -> None:
        await self._deliver()

    async def second_pass(self) -> None:
        await self._deliver()

    async def statuses(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for event_id, key in self.events.items():
            answer = await self.served.event(event_id)
            assert answer.status_code == 200, answer.text
            shown = answer.json()
            found[key] = f"{shown['state']}: {shown.get('reason') or ''}".strip()
        return found

    async def force_failure(self) -> None:
        wrong = {**BEARER, "authorization": f"Bearer {TOKEN}-not"}
        assert (await self.served.post(PATH, BODY, wrong)).status_code == 401
        assert (await self.served.post(PATH, b"{not json", BEARER)).status_code == 400


class WebhookHarness(SourceHarness):
    type_name = "webhook"
    secrets = (TOKEN,)
    previewed = 0  # deliveries are pushed to it: there is nothing to read ahead

    @contextlib.asynccontextmanager
    async def rig(self, tmp_path: Path) -> AsyncIterator[SourceRig]:
        text = config_text(SOURCE_YAML, extra="server: {host: 127.0.0.1, port: 0}\n")
        async with serve(tmp_path, text) as served:
            assert SOURCE in served.runtime.sources
            yield WebhookRig(served.runtime, tmp_path, served)

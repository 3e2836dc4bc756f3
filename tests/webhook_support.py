"""Set-up shared by the webhook and server tests: a real `Runtime.run` serving on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook

from connector.config_loader import load_config
from connector.runtime import Runtime

SECRET_OLD = "whsec_" + base64.b64encode(b"old secret of thirty-two bytes!!").decode()
SECRET_NEW = "whsec_" + base64.b64encode(b"new secret of thirty-two bytes!!").decode()
HOOK_TOKEN = "hook-bearer-token-0123456789"

RULE = """
  - name: notify
    source: [signed, bearer, open]
    to: "{{ row['phone'] }}"
    country: RO
    message: "Hi {{ row['name'] }}, order {{ row['order'] }} is on its way."
    sink: %(sink)s
"""


def config_text(sinks: str, sink: str = "outbox", port: int = 0, extra_sources: str = "") -> str:
    return f"""state: sqlite:///connector.db
server: {{host: 127.0.0.1, port: {port}}}
log: {{format: json, level: info}}
sinks:
{sinks}
sources:
  signed:
    type: webhook
    path: /hooks/signed
    secret: [{SECRET_OLD}, {SECRET_NEW}]
  bearer:
    type: webhook
    path: /hooks/bearer
    token: {HOOK_TOKEN}
  open:
    type: webhook
    path: /hooks/open
    auth: none
    items: orders
    key_column: order
{extra_sources}rules:{RULE % {"sink": sink}}"""


OUTBOX = "  outbox: {type: dry_run, path: outbox.jsonl}\n"


def ro_sink(url: str, token: str, extra: str = "") -> str:
    return (
        f"  ro:\n    type: robo_sms_ro\n    token: {token}\n    url: {url}/api/sms/\n"
        f"    timeout: 10s\n    max_retry_time: 1s\n{extra}"
    )


def order(i: int, **extra: Any) -> dict[str, Any]:
    return {"order": f"W-{i}", "name": f"Customer {i}", "phone": f"07{40 + i % 10}{i:06d}", **extra}


def signed(
    body: bytes, msg_id: str, secret: str = SECRET_NEW, when: datetime | None = None
) -> dict[str, str]:
    """Headers as a Standard Webhooks sender makes them, by the reference package."""
    stamp = when or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, stamp, body.decode("utf-8"))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def encode(payload: object) -> bytes:
    return json.dumps(payload).encode()


@dataclass
class Served:
    runtime: Runtime
    client: httpx.AsyncClient
    folder: Path

    @property
    def url(self) -> str:
        assert self.runtime.server is not None
        return f"http://127.0.0.1:{self.runtime.server.port}"

    def outbox(self) -> list[dict[str, Any]]:
        path = self.folder / "outbox.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return await self.client.post(self.url + path, content=body, headers=headers)

    async def event(self, event_id: str) -> httpx.Response:
        return await self.client.get(f"{self.url}/events/{event_id}")

    async def wait_state(self, event_id: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                answer = (await self.event(event_id)).json()
                if answer.get("state") == state:
                    return dict(answer)
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serve(folder: Path, text: str) -> AsyncIterator[Served]:
    """`connector run` in this test's loop: real Runtime, real uvicorn on an ephemeral port."""
    (folder / "config.yaml").write_text(text)
    runtime = await Runtime.open(load_config(folder / "config.yaml"))
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(10):
            while runtime.server is None or runtime.server.port == 0:
                if task.done():
                    await task
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(timeout=10) as client:
            yield Served(runtime, client, folder)
    finally:
        runtime.stopping.set()
        await task
        await runtime.close()

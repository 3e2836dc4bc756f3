"""Sends per second into the RO emulator (its own process, 20 ms per request).

Bounds: concurrency 8 -> 400/s, concurrency 32 -> 1,600/s. Beside them, in the same run: a plain
sequential loop of `httpx.post` calls (bound 50/s), the sink alone on httpx's default transport and
on the aiohttp transport, and the whole product path (`connector once`: CSV -> rules -> ledger ->
sink -> results file).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.common import Timer, config_text, connector, emulator_process, ro_mobile, ro_sink, write_orders
from connector import logs
from connector.events import Message, OutcomeKind
from connector.http import make_client
from sinks import SINK_TYPES

LATENCY = 0.02
TOKEN = "bench-token"


def _sequential(url: str, count: int) -> float:
    with httpx.Client() as client, Timer() as timer:
        for i in range(count):
            client.post(
                url,
                json={"content": "hi", "to": "+4" + ro_mobile(i)},
                headers={"Authorization": f"Basic {TOKEN}"},
            ).raise_for_status()
    return count / timer.seconds


async def _sink_rate(url: str, concurrency: int, count: int, transport: str) -> float:
    sink_type = SINK_TYPES["robo_sms_ro"]
    config = sink_type.config_model.model_validate(
        {"type": "robo_sms_ro", "token": TOKEN, "url": url, "concurrency": concurrency, "timeout": "10s"}
    )
    async with make_client(concurrency + 4, transport) as client:
        sink = sink_type("ro", config, client)
        messages = [Message(id=str(i), to="+4" + ro_mobile(i), text="hi") for i in range(count)]

        async def nothing(_: Sequence[Message]) -> None:
            return None

        with Timer() as timer:
            outcomes = await sink.send(messages, nothing)
    sent = sum(o.kind is OutcomeKind.SENT for o in outcomes)
    if sent != count:
        raise RuntimeError(f"only {sent}/{count} sent: {outcomes[:3]}")
    return count / timer.seconds


def _product_rate(url: str, concurrency: int, rows: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inbox = folder / "inbox"
        inbox.mkdir()
        (folder / "config.yaml").write_text(config_text(sink=ro_sink(url, concurrency, TOKEN), inbox=inbox))
        with Timer() as startup:  # the same pass over an empty inbox: imports, ledger, scan
            connector("once", "-c", "config.yaml", cwd=folder)
        write_orders(inbox / "orders.csv", rows, start=concurrency * 100_000)
        with Timer() as timer:
            done = connector("once", "-c", "config.yaml", cwd=folder)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return rows / (timer.seconds - startup.seconds)


def run() -> dict[str, Any]:
    logs.configure("console", "warning")
    results: dict[str, Any] = {"latency_ms": LATENCY * 1000}
    with emulator_process("ro", LATENCY, token=TOKEN) as base:
        url = base + "/api/sms/"
        results["sequential_httpx_post"] = round(_sequential(url, 150))
        print(f"  sequential httpx.post: {results['sequential_httpx_post']}/s (bound 50/s)", flush=True)
        for concurrency, count in ((8, 4000), (32, 12000)):
            bound = concurrency / LATENCY
            for transport in ("httpx", "aiohttp"):
                rate = asyncio.run(_sink_rate(url, concurrency, count, transport))
                results[f"sink_{transport}_c{concurrency}"] = round(rate)
                print(
                    f"  sink, {transport} transport, concurrency {concurrency}: {rate:,.0f}/s "
                    f"({rate / bound:.0%} of {bound:,.0f}/s)",
                    flush=True,
                )
            rate = _product_rate(url, concurrency, count)
            results[f"product_c{concurrency}"] = round(rate)
            print(
                f"  connector once, concurrency {concurrency}: {rate:,.0f}/s ({rate / bound:.0%} of bound)",
                flush=True,
            )
    return results

"""Open-loop load generator, run as its own process.

`python -m bench.webhook_load URL SECRET RATE SECONDS [--warmup N]` POSTs Standard Webhooks
signed deliveries on a fixed schedule (request i is due i / RATE seconds after the start) whether
or not earlier ones have answered, so a slow server shows up as latency instead of quietly
lowering the load. Latency is counted from when a request was due, not from when it left, so a
late generator cannot hide a stall either; `late_*` says how late the generator itself was.

Raw asyncio streams over keep-alive connections, every request signed before the clock starts:
httpx in one process spent about as much CPU per request as the server under test, which at
500/s on two cores measured the generator instead of the server. A request that finds no idle
connection opens a new one (its connect time counts), so the load never waits for an answer.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import resource
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
TIMEOUT_S = 30.0
PREOPEN = 32  # connections opened before the clock starts
IDLE_S = 3.0  # a connection idle longer is closed, not reused: uvicorn drops them after 5 s


def signed_request(webhook: Webhook, host: str, path: str, i: int, prefix: str) -> bytes:
    """One delivery as raw HTTP/1.1 bytes: a small order, signed like a Standard Webhooks sender."""
    body = json.dumps(
        {"order": f"{prefix}-{i}", "phone": f"+4074{i % 10_000_000:07d}", "name": f"Customer {i}"}
    ).encode()
    msg_id = f"msg_{prefix}_{i}"
    stamp = datetime.now(UTC)
    headers = {
        "host": host,
        "content-type": "application/json",
        "content-length": str(len(body)),
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": webhook.sign(msg_id, stamp, body.decode()),
    }
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + body


class Pool:
    """Idle keep-alive connections; a request that finds none opens its own."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: deque[tuple[float, Conn]] = deque()
        self.opened = 0
        self.most_open = 0
        self.open_now = 0

    async def connect(self) -> Conn:
        conn = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        return conn

    async def take(self) -> Conn:
        # Most recently used first; the oldest idle ones are closed before the server closes them
        # under us, which would show as an error of the server's.
        too_old = time.monotonic() - IDLE_S
        while self.idle and self.idle[0][0] < too_old:
            self.drop(self.idle.popleft()[1])
        return self.idle.pop()[1] if self.idle else await self.connect()

    def give(self, conn: Conn) -> None:
        self.idle.append((time.monotonic(), conn))

    def drop(self, conn: Conn) -> None:
        self.open_now -= 1
        conn[1].close()

    async def close(self) -> None:
        while self.idle:
            _, (_, writer) = self.idle.pop()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def exchange(pool: Pool, request: bytes) -> int:
    """Send one request and read its whole answer; the status code."""
    conn = await pool.take()
    reader, writer = conn
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            await reader.readexactly(length)
    except BaseException:
        pool.drop(conn)
        raise
    if close:
        pool.drop(conn)
    else:
        pool.give(conn)
    return status


def percentile(ordered: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list, in ms."""
    if not ordered:
        return -1.0
    rank = max(1, int(len(ordered) * share + 0.999999))
    return round(ordered[min(rank, len(ordered)) - 1] * 1000, 1)


async def warm(pool: Pool, requests: list[bytes], rate: float) -> int:
    """Unmeasured requests at `rate`: first-request costs (imports, caches) are not the figure."""
    accepted = 0
    start = time.perf_counter()
    tasks = []
    for i, request in enumerate(requests):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(exchange(pool, request)))
    for status in await asyncio.gather(*tasks, return_exceptions=True):
        accepted += status == 202
    return accepted


async def main(
    url: str,
    secret: str,
    rate: float,
    seconds: float,
    warmup: int,
    tag: str,
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """The figures, and each answered request's (due after the start, latency) in seconds."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    webhook = Webhook(secret)
    total = int(rate * seconds)
    warm_requests = [signed_request(webhook, host, path, i, f"{tag}w") for i in range(warmup)]
    requests = [signed_request(webhook, host, path, i, tag) for i in range(total)]

    pool = Pool(host, port)
    for conn in await asyncio.gather(*(pool.connect() for _ in range(PREOPEN))):
        pool.give(conn)
    warm_accepted = await warm(pool, warm_requests, min(rate, 100.0)) if warmup else 0

    latencies: list[float] = []
    lateness: list[float] = []
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    timeline: list[tuple[float, float]] = []  # (due after the start, latency) in seconds

    async def one(request: bytes, due: float) -> None:
        lateness.append(time.perf_counter() - due)
        try:
            status = await asyncio.wait_for(exchange(pool, request), TIMEOUT_S)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        latencies.append(time.perf_counter() - due)
        timeline.append((due - start, latencies[-1]))
        statuses[status] = statuses.get(status, 0) + 1

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter() + 0.05
    tasks = []
    for i, request in enumerate(requests):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request, due)))
    sent_for = time.perf_counter() - start
    await asyncio.gather(*tasks)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    await pool.close()
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    ordered = sorted(latencies)
    late = sorted(lateness)
    figures = {
        "offered": total,
        "offered_per_s": round(total / sent_for, 1) if sent_for > 0 else 0.0,
        "warmup_accepted": warm_accepted,
        "answered": len(latencies),
        "accepted_202": statuses.get(202, 0),
        "other_statuses": {str(k): v for k, v in statuses.items() if k != 202},
        "errors": errors,
        "p50_ms": percentile(ordered, 0.50),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": percentile(ordered, 1.0),
        "late_p99_ms": percentile(late, 0.99),
        "late_max_ms": percentile(late, 1.0),
        "generator_cpu_share": round(cpu / sent_for, 3) if sent_for > 0 else 0.0,
        "connections_opened": pool.opened,
        "connections_most_open": pool.most_open,
    }
    return figures, sorted(timeline)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_load")
    parser.add_argument("url")
    parser.add_argument("secret", help="whsec_... signing secret")
    parser.add_argument("rate", type=float, help="requests per second")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured requests first")
    parser.add_argument("--timeline", type=Path, default=None, help="write 'due_s latency_ms' lines here")
    parser.add_argument("--tag", default=base64.b32encode(time.time_ns().to_bytes(8, "big")).decode()[:8])
    args = parser.parse_args()
    figures, timeline = asyncio.run(
        main(args.url, args.secret, args.rate, args.seconds, args.warmup, args.tag)
    )
    if args.timeline is not None:
        args.timeline.write_text("".join(f"{due:.4f} {took * 1000:.1f}\n" for due, took in timeline))
    print(json.dumps(figures))

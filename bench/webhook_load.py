"""Open-loop load generator, run as its own process: `python -m bench.webhook_load URL TOKEN RATE SECONDS`.

Requests start on a fixed schedule (i / RATE seconds after the start) whether or not earlier ones
have answered, so a slow server shows up as latency instead of quietly lowering the load.
Prints one JSON line: offered, answered, accepted (202), errors, p50/p99/max latency in ms.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import httpx


async def main(url: str, token: str, rate: float, seconds: float) -> dict[str, float]:
    total = int(rate * seconds)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:

        async def one(i: int) -> None:
            nonlocal errors
            body = {"order": f"B-{i}", "phone": f"+4074{i % 10_000_000:07d}", "name": f"Customer {i}"}
            started = time.perf_counter()
            try:
                response = await client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError:
                errors += 1
                return
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "offered": total,
        "offered_per_s": round(total / elapsed, 1),
        "answered": len(latencies),
        "accepted_202": statuses.get(202, 0),
        "other_statuses": {str(k): v for k, v in statuses.items() if k != 202},
        "errors": errors,
        "p50_ms": round(statistics.median(ordered) * 1000, 1) if ordered else -1,
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 1) if ordered else -1,
        "max_ms": round(ordered[-1] * 1000, 1) if ordered else -1,
    }


if __name__ == "__main__":
    url, token, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(asyncio.run(main(url, token, rate, seconds))))

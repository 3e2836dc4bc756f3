"""Runs the benchmarks and prints their figures; `python -m bench csv memory` runs some."""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

BENCHES = {
    "csv": "bench.csv_throughput",
    "send": "bench.send_rate",
    "memory": "bench.memory",
    "latency": "bench.latency",
    "sheets": "bench.sheets",
    "webhook": "bench.webhook",
    "instances": "bench.instances",
    "policies": "bench.policies",
    "page": "bench.page",
    "reload": "bench.reload",
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
        return 2
    results: dict[str, object] = {}
    for name in names:
        print(f"== {name}", flush=True)
        module = importlib.import_module(BENCHES[name])
        results[name] = module.run()
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Accepted webhooks per second and the 202's latency at a fixed offered load (issue 4).

`connector run` with a webhook source (bearer token) into the RO sink, whose emulator answers in
200 ms; a second process offers 200 requests/s for 15 s on a fixed schedule. Target: p99 of the
202 under 50 ms: the intake answers once the records are in the ledger, never after the send.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, emulator_process, free_port

TOKEN = "bench-hook-token"
RO_TOKEN = "bench-token"


def _config(port: int, ro_url: str) -> str:
    return f"""
state: sqlite:///connector.db
server: {{host: 127.0.0.1, port: {port}}}
log: {{format: json, level: warning}}
sinks:
  ro:
    type: robo_sms_ro
    token: {RO_TOKEN}
    url: {ro_url}/api/sms/
    concurrency: 64
    timeout: 10s
sources:
  shop:
    type: webhook
    path: /hooks/shop
    token: {TOKEN}
rules:
  - name: order
    source: shop
    to: "{{{{ row['phone'] }}}}"
    message: "Hi {{{{ row['name'] }}}}, order {{{{ row['order'] }}}} is on its way."
    sink: ro
"""


def run(rate: float = 200.0, seconds: float = 15.0) -> dict[str, Any]:
    port = free_port()
    with emulator_process("ro", 0.2, token=RO_TOKEN) as ro_url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.yaml").write_text(_config(port, ro_url))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        server = subprocess.Popen([sys.executable, "-m", "connector", "run", "-c", "config.yaml"], cwd=folder,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the connector did not start serving")
                time.sleep(0.1)
            load = subprocess.run(
                [sys.executable, "-m", "bench.webhook_load", f"http://127.0.0.1:{port}/hooks/shop", TOKEN,
                 str(rate), str(seconds)],
                cwd=ROOT, env=env, capture_output=True, text=True, check=True,
            )
            result: dict[str, Any] = json.loads(load.stdout)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    result.update({"provider_latency_ms": 200, "target_p99_ms": 50})
    print(f"  offered {result['offered_per_s']}/s for {seconds:g}s: {result['accepted_202']} accepted, "
          f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms", flush=True)
    return result

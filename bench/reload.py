"""Config reload (issue 11): the time from saving an edited rule to the first message sent with the
new text, in a `connector run` taking a steady stream of webhook deliveries (100 a second) into the
RO emulator. The file is saved the way editors do (a new file renamed over the old one); each
round flips the text, and the rounds' median and maximum are reported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import ROOT, free_port, median, ro_mobile, wait_healthy
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer

ROUNDS = 7
RATE = 100.0  # deliveries a second
TEXTS = ("Order {{ row['n'] }} is confirmed.", "Order {{ row['n'] }} ships today.")


def _config(url: str, port: int, text: str) -> str:
    return f"""state: sqlite:///connector.db
log: {{format: json, level: warning}}
server: {{port: {port}}}
sinks:
  ro: {{type: robo_sms_ro, token: bench-token, url: "{url}/api/sms/", concurrency: 8}}
sources:
  shop: {{type: webhook, path: /hooks/shop, auth: none}}
rules:
  - name: confirm
    source: shop
    to: "{{{{ row['phone'] }}}}"
    country: RO
    message: "{text}"
    sink: ro
"""


def _save(path: Path, text: str) -> None:
    staged = path.with_suffix(".swp")
    staged.write_text(text)
    os.replace(staged, path)


def _post(port: int, stop: threading.Event) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        n = 0
        while not stop.is_set():
            n += 1
            client.post("/hooks/shop", json={"n": n, "phone": ro_mobile(n)})
            time.sleep(1 / RATE)


def run() -> dict[str, float]:
    emulator = RoEmulator(token="bench-token", record_requests=False)
    with EmulatorServer(emulator) as url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = free_port()
        config = folder / "config.yaml"
        config.write_text(_config(url, port, TEXTS[0]))
        process = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "-c", "config.yaml"],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stop = threading.Event()
        poster = threading.Thread(target=_post, args=(port, stop), daemon=True)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process)
            poster.start()
            emulator.wait_accepted(50)
            took: list[float] = []
            for round_ in range(1, ROUNDS + 1):
                text = TEXTS[round_ % 2]
                marker = text.split("}} ")[1]
                seen = len(emulator.accepted)
                began = time.perf_counter()
                _save(config, _config(url, port, text))
                while not any(marker in str(m["text"]) for m in emulator.accepted[seen:]):
                    if time.perf_counter() - began > 30:
                        raise RuntimeError("no message with the new text within 30 s")
                    time.sleep(0.002)
                took.append(time.perf_counter() - began)
                print(f"  round {round_}: the new text {took[-1] * 1000:.0f} ms after the save", flush=True)
                time.sleep(1.0)
        finally:
            stop.set()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    result = {"save_to_first_new_text_median_ms": median(took) * 1000, "max_ms": max(took) * 1000}
    print(f"  median {result['save_to_first_new_text_median_ms']:.0f} ms, max {result['max_ms']:.0f} ms")
    return result

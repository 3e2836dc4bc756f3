"""The status page in a real browser: headless Chromium (tests/browser.py) against a real
`connector run` subprocess with `server.token`, a CSV file dropped in its inbox, and the RO
emulator making one message fail (a landline) and one end `unknown` (a 500 after it was taken)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from tests.browser import Browser, browser
from tests.emulators.robo_ro import RoEmulator
from tests.emulators.server import EmulatorServer, Fault
from tests.helpers import TOKEN, free_port, read_results, ro_config, start_connector, wait_for, write_orders

pytestmark = pytest.mark.slow

SERVER_TOKEN = "browser-test-token-0123456789"

ROWS = """[...document.querySelectorAll('tr.problem')].filter(r => !r.hidden).map(r => r.dataset.id)"""


def problems(page_rows: list[dict[str, str]], state: str) -> dict[str, str]:
    [row] = [r for r in page_rows if r["state"] == state]
    return row


async def test_a_browser_sees_the_status_page_searches_it_and_opens_a_record(tmp_path: Path) -> None:
    emulator = RoEmulator(token=TOKEN)
    emulator.inject(Fault(status=500, accept=True))  # the first request is taken, then answered 500
    with EmulatorServer(emulator) as provider:
        port = free_port()
        config = ro_config(tmp_path, provider, settle="0ms", concurrency=1)
        config.write_text(
            config.read_text() + f"server: {{host: 127.0.0.1, port: {port}, token: {SERVER_TOKEN}}}\n"
        )
        orders = write_orders(tmp_path / "orders.csv", 3)
        orders.write_text(orders.read_text().replace("0740000001", "0212345678"))  # a landline
        orders.replace(tmp_path / "inbox" / "orders.csv")
        log = tmp_path / "connector.log"
        proc = start_connector("run", "-c", "config.yaml", cwd=tmp_path, log=log)
        base = f"http://127.0.0.1:{port}"
        try:
            results = tmp_path / "inbox" / "processed" / "orders.results.csv"
            wait_for(results.exists, 60, "the results file")
            statuses = [r["SMS Status"].split()[0] for r in read_results(results)]
            assert sorted(statuses) == ["failed:", "sent", "unknown:"], statuses
            wait_for(lambda: _healthy(base), 30, "the server")
            async with browser(tmp_path / "chromium") as chromium:
                chromium.credentials = ("ops", SERVER_TOKEN)  # what a person types at the prompt
                await check_the_page(chromium, base, tmp_path)
                assert chromium.challenges, "the browser was never asked for credentials"
                assert {c["scheme"].lower() for c in chromium.challenges} == {"basic"}
                assert {c["realm"] for c in chromium.challenges} == {"connector"}
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    assert SERVER_TOKEN not in log.read_text()


async def check_the_page(chromium: Browser, base: str, folder: Path) -> None:
    page = await chromium.new_page()
    await page.goto(base + "/")
    assert await page.evaluate("document.title") == "SMS connector"

    sources = await page.evaluate("[...document.querySelectorAll('tr.source')].map(r => r.innerText)")
    assert len(sources) == 1 and sources[0].startswith("erp\tcsv_folder\ttook orders.csv: 3 row(s)")
    sink = await page.evaluate("document.querySelector('#sinks tr.sink').innerText")
    assert sink.split("\t")[:3] == ["ro", "robo_sms_ro", "active"]
    counts = await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#count-total td[data-state]')]"
        ".map(td => [td.dataset.state, Number(td.textContent)]))"
    )
    assert counts == {"pending": 0, "sending": 0, "sent": 1, "failed": 1, "unknown": 1, "skipped": 0}
    rows = await page.evaluate(
        "[...document.querySelectorAll('tr.problem')].map(r => ({id: r.dataset.id, tail: r.dataset.tail,"
        " state: r.querySelector('.state').textContent, reason: r.querySelector('.reason').textContent,"
        " to: r.cells[5].textContent, link: r.querySelector('a').getAttribute('href')}))"
    )
    assert len(rows) == 2
    failed, unknown = problems(rows, "failed"), problems(rows, "unknown")
    assert "is a fixed-line number" in failed["reason"] and "021234" not in failed["reason"]
    assert failed["to"] == "*******678"  # as written in the file, masked
    assert unknown["to"] == "+********000"  # the first order's number: 0740000000
    assert "HTTP 500" in unknown["reason"]
    assert unknown["link"] == f"records/{unknown['id']}"
    shot = await page.screenshot(folder / "status-page.png")
    print(f"status page screenshot: {shot}")

    # Typing in the search box filters the rows on the page at once (no reload).
    await page.evaluate("document.getElementById('q').focus()")
    await page.type(unknown["id"][:6])
    assert await page.evaluate(ROWS) == [unknown["id"]]
    await page.evaluate("document.getElementById('q').select()")
    await page.type("erp")
    assert sorted(await page.evaluate(ROWS)) == sorted([failed["id"], unknown["id"]])
    await page.evaluate("document.getElementById('q').select()")
    await page.type(failed["tail"])  # the last digits of the landline
    assert await page.evaluate(ROWS) == [failed["id"]]
    await page.evaluate("document.getElementById('q').select()")
    await page.type("zzz")
    assert await page.evaluate(ROWS) == []
    assert await page.evaluate("document.getElementById('no-match').hidden") is False

    # Enter submits the plain form: the ledger is searched (`?q=`), as it is without JavaScript.
    await page.evaluate("document.getElementById('q').select()")
    await page.type(failed["id"][:8])
    await page.load(lambda: page.evaluate("document.querySelector('form.search').requestSubmit()"))
    assert await page.evaluate("location.search") == f"?q={failed['id'][:8]}"
    assert await page.evaluate(ROWS) == [failed["id"]]

    # The unknown's record: its history, the number masked, the text.
    await page.goto(base + "/")
    link = f"document.querySelector('tr[data-id=\"{unknown['id']}\"] a')"
    await page.load(lambda: page.evaluate(f"{link}.click()"))
    assert await page.evaluate("location.pathname") == f"/records/{unknown['id']}"
    assert await page.evaluate("document.getElementById('state').textContent") == "unknown"
    assert await page.evaluate("document.getElementById('to').textContent") == "+********000"
    assert await page.evaluate("document.getElementById('text').textContent") == (
        "Hi Customer 0, order A-0 is confirmed."
    )
    steps = await page.evaluate("[...document.querySelectorAll('tr.step .state')].map(s => s.textContent)")
    assert steps[0] == "claimed" and steps[-1] == "unknown"
    shot = await page.screenshot(folder / "record-page.png")
    print(f"record page screenshot: {shot}")

    await page.goto(base + "/records/" + "0" * 32)
    assert await page.evaluate("document.querySelector('h1').textContent") == "No event with this id"

    # The page refreshes itself, but not under the fingers of someone typing a search: the
    # browser's virtual clock is made to pass a minute with the box in use, then with it left.
    clock = await chromium.new_page()
    await clock.goto(base + "/")
    await clock.evaluate("window.stillTheSamePage = true; document.getElementById('q').focus()")
    await clock.type("erp")
    await clock.send("Emulation.setVirtualTimePolicy", {"policy": "advance", "budget": 65_000})
    await asyncio.sleep(1)
    assert await clock.evaluate("[performance.now() > 60000, window.stillTheSamePage]") == [True, True]
    await clock.evaluate("document.getElementById('q').value = ''; document.getElementById('q').blur()")
    reloading = chromium.expect("Page.frameStartedLoading", clock.session)
    await clock.send("Emulation.setVirtualTimePolicy", {"policy": "advance", "budget": 65_000})
    await asyncio.wait_for(reloading, 30)
    async with asyncio.timeout(30):  # a new document (its load event waits on the virtual clock)
        while await clock.evaluate("window.stillTheSamePage") is not None:
            await asyncio.sleep(0.05)

    # A phone's width: nothing wider than the screen but the tables, which scroll in their boxes.
    phone = await chromium.new_page(390, 844, phone=True)
    await phone.goto(base + "/")
    assert await phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert await phone.evaluate("getComputedStyle(document.querySelector('th.wide')).display") == "none"
    shot = await phone.screenshot(folder / "status-page-phone.png")
    print(f"phone screenshot: {shot}")


def _healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

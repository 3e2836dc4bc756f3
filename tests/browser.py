"""A real browser for the status page's tests: Debian's headless Chromium, driven over the Chrome
DevTools Protocol with aiohttp's websocket client (a dependency already). Nothing is downloaded.

Chromium is required in CI (`.ci/run` installs it and sets CONNECTOR_TEST_BROWSER=required, so a
missing browser fails there); on a developer's machine without it, the browser test is skipped with
the command that installs it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

REQUIRED = "CONNECTOR_TEST_BROWSER"  # "required": a missing browser fails the test instead
START_S = 30.0
COMMAND_S = 30.0


def chromium() -> str:
    """The browser's path; fails (CI) or skips (elsewhere) the test when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get(REQUIRED) == "required" or os.environ.get("CI"):
        pytest.fail("chromium is missing; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed: `apt-get install chromium` runs this test (CI requires it)")


class Page:
    """One tab, attached with its own session id on the browser's websocket."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    async def load(self, action: Callable[[], Any]) -> None:
        """Run `action` (a navigation, a click) and wait until the page it leads to has loaded."""
        loaded = self.browser.expect("Page.loadEventFired", self.session)
        await action()
        await asyncio.wait_for(loaded, COMMAND_S)

    async def goto(self, url: str) -> None:
        await self.load(lambda: self.send("Page.navigate", {"url": url}))

    async def evaluate(self, expression: str) -> Any:
        answer = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in answer:
            raise AssertionError(f"script failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def type(self, text: str) -> None:
        """Typed into the focused element, as a keyboard would (input events included)."""
        for char in text:
            await self.send("Input.insertText", {"text": char})

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


class Browser:
    def __init__(self, process: subprocess.Popen[bytes], socket: aiohttp.ClientWebSocketResponse) -> None:
        self.process = process
        self.socket = socket
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = []
        self.credentials: tuple[str, str] | None = None  # answered to an HTTP auth challenge
        self.challenges: list[dict[str, Any]] = []  # the challenges seen (scheme, realm, origin)
        self._reader = asyncio.create_task(self._read(), name="devtools-reader")

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        answer = asyncio.get_running_loop().create_future()
        number = self._post(method, params, session)
        self._answers[number] = answer
        return await asyncio.wait_for(answer, COMMAND_S)

    def _post(self, method: str, params: dict[str, Any] | None, session: str | None) -> int:
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        task = asyncio.create_task(self.socket.send_json(message))
        task.add_done_callback(lambda t: t.exception())  # a closed socket shows at the next command
        return number

    def expect(self, event: str, session: str | None = None) -> asyncio.Future[dict[str, Any]]:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((event, session, waiter))
        return waiter

    async def _read(self) -> None:
        async for frame in self.socket:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            message = frame.json()
            if "id" in message:
                answer = self._answers.pop(message["id"], None)
                if answer is not None and not answer.done():
                    if "error" in message:
                        answer.set_exception(AssertionError(f"devtools: {message['error']}"))
                    else:
                        answer.set_result(message.get("result", {}))
                continue
            self._on_event(message)

    def _on_event(self, message: dict[str, Any]) -> None:
        method, params, session = message["method"], message.get("params", {}), message.get("sessionId")
        # Fetch pauses every request while it is enabled (to catch the auth challenges): go on.
        if method == "Fetch.requestPaused":
            self._post("Fetch.continueRequest", {"requestId": params["requestId"]}, session)
        elif method == "Fetch.authRequired":
            self.challenges.append(params["authChallenge"])
            response: dict[str, Any] = {"response": "CancelAuth"}
            if self.credentials is not None:
                user, password = self.credentials
                response = {"response": "ProvideCredentials", "username": user, "password": password}
            self._post(
                "Fetch.continueWithAuth",
                {"requestId": params["requestId"], "authChallengeResponse": response},
                session,
            )
        for waiter in list(self._waiters):
            event, wanted, future = waiter
            if event == method and wanted in (None, session) and not future.done():
                future.set_result(params)
                self._waiters.remove(waiter)

    async def new_page(self, width: int = 1280, height: int = 900, *, phone: bool = False) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone},
        )
        await page.send("Fetch.enable", {"handleAuthRequests": True, "patterns": [{"urlPattern": "*"}]})
        return page

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close"), 5)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[Browser]:
    """Headless Chromium with a profile of its own in `profile` (its log is there too)."""
    profile.mkdir(parents=True, exist_ok=True)
    with (profile / "chromium.log").open("wb") as log:
        process = subprocess.Popen(
            [
                chromium(),
                "--headless",
                "--no-sandbox",  # root in containers: the sandbox needs namespaces it may not have
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = await _devtools_url(profile, process)
        async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as socket:
            opened = Browser(process, socket)
            try:
                yield opened
            finally:
                await opened.close()
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def _devtools_url(profile: Path, process: subprocess.Popen[bytes]) -> str:
    """The browser's websocket, from the DevToolsActivePort file it writes once it listens."""
    deadline = time.monotonic() + START_S
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"chromium exited: {(profile / 'chromium.log').read_text()[-2000:]}")
        lines = marker.read_text().split() if marker.exists() else []
        if len(lines) >= 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        await asyncio.sleep(0.05)
    raise AssertionError("chromium did not open its DevTools port")

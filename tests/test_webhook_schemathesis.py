"""Schemathesis against /openapi.json of a real `connector run` server: no input gives a 5xx."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from connector import openapi
from connector.assembly import build_sources
from connector.config_loader import load_config
from sources.base import SourceContext
from tests.helpers import MemoryNotes
from tests.webhook_support import HOOK_TOKEN, OUTBOX, config_text, serve


class _ServerThread:
    """The runtime in its own loop and thread: schemathesis calls are blocking `requests` calls."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="connector-under-test", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self.folder, config_text(OUTBOX)) as served:
            self.url = served.url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> str:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None or not self.url:
            raise RuntimeError("the server did not start") from self._error
        return self.url

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._error is not None:
            raise self._error


def _document() -> dict[str, Any]:
    """The document the server builds for the test config (checked against the served one below)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(config_text(OUTBOX))
        loaded = load_config(path)
        ctx = SourceContext(_no_processing, MemoryNotes(), loaded.base_dir, asyncio.Event())
        sources = build_sources(loaded, ctx)
    routes = [route for source in sources.values() for route in source.routes()]
    return openapi.document(routes, page=True)  # the status page is fuzzed too


async def _no_processing(records: object) -> list[str | None]:
    raise AssertionError("building the document processes nothing")


# Collected before any server runs, so the schema is loaded from the same builder the server uses;
# `test_served_document_is_the_fuzzed_one` proves the two are the same document.
DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _ServerThread(tmp_path_factory.mktemp("schemathesis")) as url:
        yield url


def test_served_document_is_the_fuzzed_one(base_url: str) -> None:
    assert httpx.get(base_url + "/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_is_a_server_error(case: Any, base_url: str) -> None:
    # The bearer source's token lets generated bodies reach the parser, not only the 401.
    headers = {"Authorization": f"Bearer {HOOK_TOKEN}"}
    case.call_and_validate(base_url=base_url, headers=headers, checks=[not_a_server_error])

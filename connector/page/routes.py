"""The status page's two routes, their reads and their rendering."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from connector.engine import Engine
from connector.ledger import SqlLedger
from connector.ledger.views import Cursor
from connector.page import shown
from connector.page.counts import CountsCache
from policies.budget import day_of
from sources.base import Source

PAGE_ROWS = 50  # failures and unknowns per page
REFRESH_S = 30
MAX_SEARCH = 200  # characters of `q` looked at
MAX_ID = 128  # longer is no id (the answer is 404 without asking the ledger)
PATHS = ("/", "/records/{id}")
TEMPLATES = Path(__file__).parent / "templates"  # package data (pyproject.toml)


def is_page(path: str) -> bool:
    """Whether a request path is one of these pages (they take HTTP Basic too: access.py)."""
    return path == "/" or path.startswith("/records/")


class StatusPage:
    def __init__(
        self, ledger: SqlLedger, engine: Engine, sources: Callable[[], Mapping[str, Source]]
    ) -> None:
        self.ledger = ledger
        self.engine = engine  # read at each view: a reloaded config swaps its sinks and budgets
        self.sources = sources
        self.counts = CountsCache(ledger.counts_aside)

    @cached_property
    def templates(self) -> Environment:
        env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(when=shown.when, clock=shown.clock, ago=shown.ago)
        env.globals.update(states=shown.STATES, refresh_s=REFRESH_S)
        return env

    def routes(self) -> list[Route]:
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/records/{id}", self.record, methods=["GET"]),
        ]

    async def index(self, request: Request) -> Response:
        search = request.query_params.get("q", "").strip()[:MAX_SEARCH]
        after = Cursor.parse(request.query_params.get("after", ""))
        context = self.engine.policy.context
        now = time.time()
        day = day_of(now, context.zone)[0] if context.budgets else None
        overview = await self.ledger.overview(search, after, PAGE_ROWS, day)
        snapshot = await self.counts.get()
        html = self.templates.get_template("index.html").render(
            home="./",
            now=now,
            search=search,
            paged=after is not None,
            more=str(overview.more) if overview.more is not None else None,
            problems=[shown.entry_row(e) for e in overview.attention],
            by_id=[shown.entry_row(e) for e in overview.by_id],
            sources=shown.source_rows(self.sources(), overview.holders),
            sinks=shown.sink_rows(self.engine.sinks, context.budgets, overview.spent),
            day=day,
            zone=str(context.zone),
            counts=shown.count_table(snapshot.counts) if snapshot is not None else None,
            counted_at=snapshot.at if snapshot is not None else None,
            instances=overview.instances,
            holders=overview.holders,
            me=self.ledger.instance_id,
        )
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    async def record(self, request: Request) -> Response:
        key = str(request.path_params["id"])
        found = await self.ledger.record_page(key) if len(key) <= MAX_ID else None
        if found is None:
            html = self.templates.get_template("missing.html").render(home="../", key=key)
            return HTMLResponse(html, 404, headers={"cache-control": "no-store"})
        entry, steps = found
        html = self.templates.get_template("record.html").render(
            home="../",
            entry=shown.entry_row(entry),
            text=entry.text,
            attempts=entry.attempts,
            created_at=entry.created_at,
            owner=entry.owner,
            steps=shown.steps_shown(entry, steps),
        )
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    async def close(self) -> None:
        await self.counts.close()

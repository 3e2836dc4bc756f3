"""The HTTP server of `connector run`: the plug-ins' routes (webhook intake), event status, health,
metrics, OpenAPI, and the status page for people (connector/page).

One Starlette app served by uvicorn in the runtime's own event loop. uvicorn is kept away from
the signals (the runtime owns SIGINT/SIGTERM) and from logging set-up (records go to the root
logger, which structlog renders). Every error answer has one shape: {"error": code, "detail": text}.

Without `server.token`, `GET /events/{id}` needs no credentials: ids are 128-bit digests handed out
only in 202 answers, and the answer never holds the message text or the full number (all but the
last 3 digits are masked). With it, everything but /healthz and the webhook paths needs the token
(connector/access.py). The default bind address is loopback; `check` warns about any other without
a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector import openapi
from connector.access import TokenGate
from connector.engine import Engine
from connector.errors import ConnectorError
from connector.ledger import Entry
from connector.masking import mask_number, masked_reason
from connector.metrics import CONTENT_TYPE, Metrics
from connector.page import StatusPage, is_page
from connector.web import HttpRoute, error
from sinks.base import Sink

if TYPE_CHECKING:
    from collections.abc import Iterator

log = structlog.get_logger(__name__)

GRACEFUL_STOP_S = 5.0  # requests in flight when the server closes (after the sends' grace)
PING_TIMEOUT_S = 2.0  # a ledger slower than this to answer is unhealthy for a load balancer


def build_app(
    engine: Engine,
    routes: Sequence[HttpRoute],
    metrics: Metrics,
    page: StatusPage | None = None,
    token: str | None = None,
) -> Starlette:
    """The server's own endpoints (events, health, metrics, OpenAPI, the status `page`) and the
    plug-ins' `routes`; with a `token`, only /healthz and the plug-ins' routes go without it."""
    ledger = engine.ledger
    paths = [route.path for route in routes]
    if len(set(paths)) != len(paths):
        raise ConnectorError("two webhook sources share one path: give each its own `path`")

    async def event(request: Request) -> Response:
        event_id = str(request.path_params["id"])
        found = await ledger.entries([event_id]) if len(event_id) <= 128 else []
        if not found:
            return error(404, "not_found", "no event with this id")
        return JSONResponse(_event(found[0]))

    async def healthz(request: Request) -> Response:
        sinks = {name: _sink_state(sink) for name, sink in engine.sinks.items()}
        instance = {
            "id": ledger.instance_id,
            "lease_left_s": round(ledger.lease_left, 1),
            "holds": sorted(ledger.held),
            "config": metrics.config.as_json(),  # this instance's file: when loaded, the last refusal
        }
        try:
            await asyncio.wait_for(ledger.ping(), PING_TIMEOUT_S)
        except TimeoutError:
            log.error("health check: the ledger did not answer", within_s=PING_TIMEOUT_S)
            body = {"status": "unavailable", "ledger": "unreachable", "instance": instance, "sinks": sinks}
            return JSONResponse(body, 503)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the ledger is "unhealthy"
            log.error("health check: ledger unreachable", error=str(exc) or type(exc).__name__)
            body = {"status": "unavailable", "ledger": "unreachable", "instance": instance, "sinks": sinks}
            return JSONResponse(body, 503)
        if not ledger.writable:  # it answers reads, but writes still wait out an outage
            body = {"status": "unavailable", "ledger": "writes paused", "instance": instance, "sinks": sinks}
            return JSONResponse(body, 503)
        if ledger.lease_left <= 0:  # cannot renew: nothing of what it claimed may be sent
            body = {"status": "unavailable", "ledger": "lease lapsed", "instance": instance, "sinks": sinks}
            return JSONResponse(body, 503)
        return JSONResponse({"status": "ok", "ledger": "ok", "instance": instance, "sinks": sinks})

    async def scrape(request: Request) -> Response:
        return Response(
            await metrics.render(ledger, engine.sinks, engine.policy.context), media_type=CONTENT_TYPE
        )

    document = openapi.document(routes, token=token is not None, page=page is not None)

    async def spec(request: Request) -> Response:
        return JSONResponse(document)

    mounted = [Route(r.path, r.endpoint, methods=list(r.methods)) for r in routes]
    mounted += [
        Route("/events/{id}", event, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
        Route("/openapi.json", spec, methods=["GET"]),
    ]
    if page is not None:
        mounted += page.routes()
    handlers = {HTTPException: _http_error, Exception: _server_error}
    app = Starlette(routes=mounted, exception_handlers=handlers)
    app.state.page = page  # closed with the server (a count it may be running)
    if token is not None:
        app.add_middleware(TokenGate, token=token, open_paths={"/healthz", *paths}, is_page=is_page)
    return app


def _sink_state(sink: Sink) -> dict[str, str]:
    if sink.paused:
        return {"state": "paused", "reason": sink.pause_reason}
    return {"state": "active", "reason": ""}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error(exc.status_code, code, str(exc.detail), exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("request failed", path=request.url.path, error=repr(exc))
    return error(500, "internal_error", "the server failed; see its log")


def _event(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.key,
        "state": entry.state.value,
        "reason": masked_reason(entry.detail, entry.recipient),
        "rule": entry.rule,
        "source": entry.source,
        "sink": entry.sink,
        "to": mask_number(entry.recipient),
        "updated_at": datetime.fromtimestamp(entry.updated_at, UTC).isoformat().replace("+00:00", "Z"),
    }


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would replace the runtime's SIGINT/SIGTERM handlers and re-raise the signal on
        # exit; the runtime stops the server itself.
        yield


class HttpServer:
    """uvicorn on a socket bound up front, so a taken port is a clear error instead of sys.exit."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            sock = _listen(self.host, self.port)
        except OSError as exc:
            raise ConnectorError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=int(GRACEFUL_STOP_S),
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-server")
        while not self._server.started:
            if self._task.done():
                sock.close()
                await self._task  # raises what stopped it
                raise ConnectorError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("http server listening", url=f"http://{self.host}:{self.port}")

    async def stop(self) -> None:
        """Stop accepting, let the requests in flight finish, then return."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = None
        page = getattr(self.app.state, "page", None)
        if page is not None:
            await page.close()
        log.info("http server stopped")


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    # proto must be IPPROTO_TCP (socket.create_server leaves 0): asyncio only turns Nagle off on
    # accepted sockets that say TCP, and with Nagle on, every answer waited ~40 ms for an ACK.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            # Several instances on one host share the port: a new process starts listening while
            # the old one drains (a rolling restart), and the kernel spreads connections over both.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock

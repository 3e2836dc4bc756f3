"""The HTTP server of `connector run`: webhook intake, event status, health, metrics, OpenAPI.

One Starlette app served by uvicorn in the runtime's own event loop. uvicorn is kept away from
the signals (the runtime owns SIGINT/SIGTERM) and from logging set-up (records go to the root
logger, which structlog renders). Every error answer has one shape: {"error": code, "detail": text}.

`GET /events/{id}` needs no credentials: ids are 128-bit digests handed out only in 202 answers,
and the answer never holds the message text or the full number (all but the last 3 digits are
masked). The default bind address is loopback; put a proxy in front before exposing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector import openapi
from connector.engine import Engine
from connector.errors import ConnectorError
from connector.ledger import Entry
from connector.metrics import CONTENT_TYPE, Metrics
from sinks.base import Sink
from sources.webhook import Reply, WebhookSource

if TYPE_CHECKING:
    from collections.abc import Iterator

    from connector.runtime import Runtime

log = structlog.get_logger(__name__)

GRACEFUL_STOP_S = 5.0  # requests in flight when the server closes (after the sends' grace)
STOPPING_RETRY_AFTER = "10"  # seconds a sender is asked to wait while the connector stops


class _TooLarge(Exception):
    pass


def error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def build_app(engine: Engine, webhooks: Sequence[WebhookSource], metrics: Metrics) -> Starlette:
    ledger = engine.ledger
    paths = {hook.path: hook for hook in webhooks}
    if len(paths) != len(webhooks):
        raise ConnectorError("two webhook sources share one path: give each its own `path`")

    def intake(hook: WebhookSource) -> Any:
        async def endpoint(request: Request) -> Response:
            if not request.app.state.accepting:
                # Stopping: a delivery taken now could only wait in the ledger; the sender's retry
                # reaches the next process (or another instance) instead.
                metrics.delivery(hook.name, 503, 0)
                return error(
                    503,
                    "stopping",
                    "the connector is stopping; retry later",
                    {"retry-after": STOPPING_RETRY_AFTER},
                )
            try:
                body = await _read_body(request, hook.config.max_body)
            except _TooLarge:
                metrics.delivery(hook.name, 413, 0)
                return error(413, "too_large", f"the body is over {hook.config.max_body} bytes")
            except ClientDisconnect:
                return Response(status_code=400)  # nobody is left to read it
            try:
                answer = await hook.deliver(request.headers, body, engine.accept)
            except Exception:
                # The ledger failed us: claims may or may not be durable. 503 makes the sender retry,
                # and the retry resumes the same origins instead of sending twice.
                log.exception("webhook intake failed", source=hook.name)
                metrics.delivery(hook.name, 503, 0)
                return error(503, "unavailable", "the ledger cannot be written; retry later")
            metrics.delivery(hook.name, answer.status, 0 if answer.replayed else answer.records)
            return _respond(answer)

        return endpoint

    async def event(request: Request) -> Response:
        event_id = str(request.path_params["id"])
        found = await ledger.entries([event_id]) if len(event_id) <= 128 else []
        if not found:
            return error(404, "not_found", "no event with this id")
        return JSONResponse(_event(found[0]))

    async def healthz(request: Request) -> Response:
        sinks = {name: _sink_state(sink) for name, sink in engine.sinks.items()}
        try:
            await ledger.ping()
        except Exception as exc:  # noqa: BLE001 - any failure to reach the ledger is "unhealthy"
            log.error("health check: ledger unreachable", error=str(exc))
            return JSONResponse({"status": "unavailable", "ledger": "unreachable", "sinks": sinks}, 503)
        return JSONResponse({"status": "ok", "ledger": "ok", "sinks": sinks})

    async def scrape(request: Request) -> Response:
        return Response(await metrics.render(ledger, engine.sinks), media_type=CONTENT_TYPE)

    document = openapi.document({h.path: h.config for h in webhooks}, {h.path: h.name for h in webhooks})

    async def spec(request: Request) -> Response:
        return JSONResponse(document)

    routes = [Route(path, intake(hook), methods=["POST"]) for path, hook in paths.items()]
    routes += [
        Route("/events/{id}", event, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
        Route("/openapi.json", spec, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.state.accepting = True
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit`: a 1 GiB upload is never held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _sink_state(sink: Sink) -> dict[str, str]:
    if sink.paused:
        return {"state": "paused", "reason": sink.pause_reason}
    return {"state": "active", "reason": ""}


def _respond(answer: Reply) -> Response:
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers or None)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error(exc.status_code, code, str(exc.detail), exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("request failed", path=request.url.path, error=repr(exc))
    return error(500, "internal_error", "the server failed; see its log")


def _event(entry: Entry) -> dict[str, Any]:
    masked = mask_number(entry.recipient)
    reason = entry.detail
    for shown in {entry.recipient, entry.recipient.lstrip("+")} - {""}:
        reason = reason.replace(shown, masked)
    return {
        "id": entry.key,
        "state": entry.state.value,
        "reason": reason,
        "rule": entry.rule,
        "source": entry.source,
        "sink": entry.sink,
        "to": masked,
        "updated_at": datetime.fromtimestamp(entry.updated_at, UTC).isoformat().replace("+00:00", "Z"),
    }


def mask_number(number: str) -> str:
    """All but the last 3 digits hidden: enough for a person to tell two numbers apart."""
    digits = sum(c.isdigit() for c in number)
    seen = 0
    out: list[str] = []
    for char in number:
        if char.isdigit():
            seen += 1
            out.append(char if seen > digits - 3 else "*")
        else:
            out.append(char)
    return "".join(out)


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

    def refuse_deliveries(self) -> None:
        """From now on webhook deliveries are answered 503; the other endpoints keep serving."""
        self.app.state.accepting = False

    async def stop(self) -> None:
        """Stop accepting, let the requests in flight finish, then return."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = None
        log.info("http server stopped")


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    # proto must be IPPROTO_TCP (socket.create_server leaves 0): asyncio only turns Nagle off on
    # accepted sockets that say TCP, and with Nagle on, every answer waited ~40 ms for an ACK.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


async def start_server(runtime: Runtime) -> HttpServer:
    """Serve `runtime` on `server.host:port`; its metrics observe the engine from now on."""
    metrics = Metrics()
    runtime.engine.observer = metrics.observe_send
    webhooks = [s for s in runtime.sources.values() if isinstance(s, WebhookSource)]
    app = build_app(runtime.engine, webhooks, metrics)
    config = runtime.loaded.config.server
    server = HttpServer(app, config.host, config.port)
    await server.start()
    return server

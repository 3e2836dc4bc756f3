"""The yardstick for the webhook benchmark: the least a signature-checking intake can do.

`python -m bench.webhook_baseline --secret whsec_... [--path /hooks/shop] [--port N]` prints
`listening on URL`. The same stack as `connector run` (Starlette on uvicorn, loopback, Nagle off,
no access log), the same Standard Webhooks check and JSON parse, a 202 with a body of the same
shape, but no ledger and no sends: what `connector run` costs beyond this is the connector's own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket

import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector.cli import run_loop

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def build_app(secret: str, path: str) -> Starlette:
    verifier = Webhook(secret)

    async def intake(request: Request) -> Response:
        body = await request.body()
        signed = {name: request.headers.get(name, "") for name in HEADERS}
        try:
            verifier.verify(body.decode("utf-8"), signed, json_parse=False)
        except (WebhookVerificationError, ValueError, UnicodeDecodeError):
            return JSONResponse({"error": "unauthorized", "detail": "no signature matches"}, 401)
        payload = json.loads(body)
        delivery = signed["webhook-id"]
        event = hashlib.blake2b(f"{delivery}:0:{sorted(payload)}".encode(), digest_size=16).hexdigest()
        answer = {"id": event, "record": 0, "rule": "order", "state": "pending", "reason": ""}
        return JSONResponse({"delivery": delivery, "records": 1, "events": [answer]}, 202)

    return Starlette(routes=[Route(path, intake, methods=["POST"])])


def listen(port: int) -> socket.socket:
    # TCP_NODELAY as connector.server does: otherwise answers wait on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_baseline")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--path", default="/hooks/shop")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = listen(args.port)
    config = uvicorn.Config(
        build_app(args.secret, args.path),
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
    )
    server = uvicorn.Server(config)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    # The same event loop as `connector run` (connector/cli.py run_loop): a like-for-like yardstick.
    run_loop(_serve(server, sock))


async def _serve(server: uvicorn.Server, sock: socket.socket) -> int:
    await server.serve(sockets=[sock])
    return 0


if __name__ == "__main__":
    main()

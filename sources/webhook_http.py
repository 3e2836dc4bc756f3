"""The HTTP side of a webhook source: its endpoint and its part of the OpenAPI document.

The endpoint reads the body within `max_body` (a 1 GiB upload is never held in memory), hands it to
`WebhookSource.deliver`, and answers. While the connector stops, deliveries get 503 with
`Retry-After`: a delivery taken now could only wait in the ledger, and the sender's retry reaches
the next process (or another instance) instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from connector.web import JSON, HttpRoute, error, error_answer, ok_answer
from sources.base import SourceContext
from sources.webhook_body import MAX_DEPTH, MAX_ITEMS, Reply

log = structlog.get_logger(__name__)

STOPPING_RETRY_AFTER = "10"  # seconds a sender is asked to wait while the connector stops

Deliver = Callable[[Mapping[str, str], bytes], Awaitable[Reply]]


class _TooLarge(Exception):
    pass


def route(
    name: str, path: str, max_body: int, ctx: SourceContext, deliver: Deliver, operation: dict[str, Any]
) -> HttpRoute:
    """The endpoint of one webhook source, as the server mounts it."""

    async def endpoint(request: Request) -> Response:
        if ctx.stopping.is_set():
            ctx.delivered(name, 503, 0)
            headers = {"retry-after": STOPPING_RETRY_AFTER}
            return error(503, "stopping", "the connector is stopping; retry later", headers)
        try:
            body = await _read_body(request, max_body)
        except _TooLarge:
            ctx.delivered(name, 413, 0)
            return error(413, "too_large", f"the body is over {max_body} bytes")
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        try:
            reply = await deliver(request.headers, body)
        except Exception:
            # The ledger failed us: claims may or may not be durable. 503 makes the sender retry,
            # and the retry resumes the same origins instead of sending twice.
            log.exception("webhook intake failed", source=name)
            ctx.delivered(name, 503, 0)
            return error(503, "unavailable", "the ledger cannot be written; retry later")
        ctx.delivered(name, reply.status, 0 if reply.replayed else reply.records)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers or None)

    return HttpRoute(path, ("POST",), endpoint, {"post": operation}, COMPONENTS)


async def _read_body(request: Request, limit: int) -> bytes:
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


# -- OpenAPI ----------------------------------------------------------------------------------------

EVENT_IN_ANSWER = {
    "type": "object",
    "required": ["id", "record", "rule", "state", "reason"],
    "properties": {
        "id": {"type": "string", "description": "ledger key; GET /events/{id}"},
        "record": {"type": "integer", "minimum": 0, "description": "index of the record in the delivery"},
        "rule": {"type": "string"},
        "state": {"type": "string", "enum": ["pending", "sending", "sent", "failed", "unknown", "skipped"]},
        "reason": {"type": "string"},
    },
}

ACCEPTED = {
    "type": "object",
    "required": ["delivery", "records", "events"],
    "properties": {
        "delivery": {"type": "string", "description": "webhook-id, or sha256- and the body's digest"},
        "records": {"type": "integer", "minimum": 0},
        "events": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/AcceptedEvent"},
            "description": "one per (record, rule that wants it); a record no rule wants adds none",
        },
    },
}

COMPONENTS: dict[str, dict[str, Any]] = {
    "schemas": {"Accepted": ACCEPTED, "AcceptedEvent": EVENT_IN_ANSWER},
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"},
        "standardWebhooks": {
            "type": "apiKey",
            "in": "header",
            "name": "webhook-signature",
            "description": "Standard Webhooks: v1,<base64 HMAC-SHA256 of id.timestamp.body>",
        },
    },
}


def operation(name: str, *, auth: str, scheme: str, items: str | None, max_body: int) -> dict[str, Any]:
    """The OpenAPI operation of a webhook; `scheme` is "signature", "bearer" or "none"."""
    record = {"type": "object", "additionalProperties": True, "description": "one record: `row` in templates"}
    body: dict[str, Any] = record
    if items:
        body = {
            "type": "object",
            "required": [items],
            "properties": {items: {"type": "array", "items": record, "maxItems": MAX_ITEMS}},
        }
    operation: dict[str, Any] = {
        "operationId": f"deliver_{name}",
        "summary": f"Deliver to webhook source {name!r}",
        "description": (
            f"Authentication: {auth}. A delivery with a webhook-id already answered is "
            f"answered the same way again and sends nothing. Body at most {max_body} bytes, "
            f"nested at most {MAX_DEPTH} levels."
        ),
        "requestBody": {"required": True, "content": {JSON: {"schema": body}}},
        "responses": {
            "202": ok_answer("records are in the ledger; sending continues behind it", "Accepted"),
            "400": error_answer("not JSON, not UTF-8, or an invalid webhook-id"),
            "401": error_answer("signature or token missing or wrong"),
            "413": error_answer("body over max_body, or too many items"),
            "415": error_answer("Content-Type is not application/json"),
            "422": error_answer(
                "JSON of the wrong shape: not an object, items missing or not objects, too deep"
            ),
            "503": error_answer("the ledger cannot be written, or the connector is stopping; retry"),
        },
    }
    if scheme == "signature":
        operation["security"] = [{"standardWebhooks": []}]
        operation["parameters"] = [
            {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
            for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
        ]
    elif scheme == "bearer":
        operation["security"] = [{"bearer": []}]
        operation["parameters"] = [
            {"name": "webhook-id", "in": "header", "required": False, "schema": {"type": "string"}}
        ]
    else:
        operation["security"] = []
    return operation

"""The OpenAPI 3.1 document served at `GET /openapi.json`, written by hand from what the server does.

Webhook paths come from config.yaml, so the document is built per configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector import __version__
from sources.webhook import MAX_DEPTH, MAX_ITEMS, WebhookConfig

JSON = "application/json"

ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code, e.g. invalid_json"},
        "detail": {"type": "string", "description": "what was wrong, for a person"},
    },
}

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

EVENT = {
    "type": "object",
    "required": ["id", "state", "reason", "rule", "source", "sink", "to", "updated_at"],
    "properties": {
        "id": {"type": "string"},
        "state": {"type": "string", "enum": ["pending", "sending", "sent", "failed", "unknown"]},
        "reason": {"type": "string", "description": "provider id when sent; why, otherwise"},
        "rule": {"type": "string"},
        "source": {"type": "string"},
        "sink": {"type": "string"},
        "to": {"type": "string", "description": "recipient with all but the last 3 digits masked"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}

HEALTH = {
    "type": "object",
    "required": ["status", "ledger", "sinks"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "ledger": {"type": "string", "enum": ["ok", "unreachable"]},
        "sinks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["state", "reason"],
                "properties": {
                    "state": {"type": "string", "enum": ["active", "paused"]},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}


def _ok(description: str, schema: str) -> dict[str, Any]:
    reference = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {JSON: {"schema": reference}}}


def _error(description: str) -> dict[str, Any]:
    return _ok(description, "Error")


def _webhook(name: str, config: WebhookConfig) -> dict[str, Any]:
    record = {"type": "object", "additionalProperties": True, "description": "one record: `row` in templates"}
    body: dict[str, Any] = record
    if config.items:
        body = {
            "type": "object",
            "required": [config.items],
            "properties": {config.items: {"type": "array", "items": record, "maxItems": MAX_ITEMS}},
        }
    operation: dict[str, Any] = {
        "operationId": f"deliver_{name}",
        "summary": f"Deliver to webhook source {name!r}",
        "description": (
            f"Authentication: {config.describe_auth()}. A delivery with a webhook-id already answered is "
            f"answered the same way again and sends nothing. Body at most {config.max_body} bytes, "
            f"nested at most {MAX_DEPTH} levels."
        ),
        "requestBody": {"required": True, "content": {JSON: {"schema": body}}},
        "responses": {
            "202": _ok("records are in the ledger; sending continues behind it", "Accepted"),
            "400": _error("not JSON, not UTF-8, or an invalid webhook-id"),
            "401": _error("signature or token missing or wrong"),
            "413": _error("body over max_body, or too many items"),
            "415": _error("Content-Type is not application/json"),
            "422": _error("JSON of the wrong shape: not an object, items missing or not objects, too deep"),
            "503": _error("the ledger cannot be written, or the connector is stopping; retry"),
        },
    }
    if config.secret is not None:
        operation["security"] = [{"standardWebhooks": []}]
        operation["parameters"] = [
            {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
            for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
        ]
    elif config.token is not None:
        operation["security"] = [{"bearer": []}]
        operation["parameters"] = [
            {"name": "webhook-id", "in": "header", "required": False, "schema": {"type": "string"}}
        ]
    else:
        operation["security"] = []
    return {"post": operation}


def document(webhooks: Mapping[str, WebhookConfig], names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`webhooks`: mounted path -> its source config; `names`: path -> source name (default: path)."""
    paths: dict[str, Any] = {}
    for path, config in webhooks.items():
        name = (names or {}).get(path) or path.strip("/").replace("/", "_") or "root"
        paths[path] = _webhook(name, config)
    paths["/events/{id}"] = {
        "get": {
            "operationId": "get_event",
            "summary": "State and reason of one event (no message text, masked number)",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": _ok("the event", "Event"),
                "404": _error("no event with this id"),
            },
        }
    }
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "Process up, ledger reachable, each sink active or paused",
            "responses": {
                "200": _ok("healthy", "Health"),
                "503": _ok("ledger unreachable", "Health"),
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus text exposition",
            "responses": {
                "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "SMS connector", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": ERROR,
                "Accepted": ACCEPTED,
                "AcceptedEvent": EVENT_IN_ANSWER,
                "Event": EVENT,
                "Health": HEALTH,
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "standardWebhooks": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "webhook-signature",
                    "description": "Standard Webhooks: v1,<base64 HMAC-SHA256 of id.timestamp.body>",
                },
            },
        },
    }

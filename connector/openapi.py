"""The OpenAPI 3.1 document served at `GET /openapi.json`, written by hand from what the server does.

The plug-ins' endpoints (each webhook source's) come with their own part of the document, so it is
built per configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connector import __version__
from connector.web import ERROR_SCHEMA, HttpRoute, error_answer, ok_answer

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


def document(routes: Sequence[HttpRoute]) -> dict[str, Any]:
    """The server's own endpoints, and those the plug-ins contribute with their part of the spec."""
    paths: dict[str, Any] = {}
    components: dict[str, dict[str, Any]] = {
        "schemas": {"Error": ERROR_SCHEMA, "Event": EVENT, "Health": HEALTH}
    }
    for route in routes:
        paths[route.path] = dict(route.openapi)
        for kind, entries in route.components.items():
            components.setdefault(kind, {}).update(entries)
    paths["/events/{id}"] = {
        "get": {
            "operationId": "get_event",
            "summary": "State and reason of one event (no message text, masked number)",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": ok_answer("the event", "Event"),
                "404": error_answer("no event with this id"),
            },
        }
    }
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "Process up, ledger reachable, each sink active or paused",
            "responses": {
                "200": ok_answer("healthy", "Health"),
                "503": ok_answer("ledger unreachable", "Health"),
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
        "components": components,
    }

"""The OpenAPI 3.1 document served at `GET /openapi.json`, written by hand from what the server does.

The plug-ins' endpoints (each webhook source's) come with their own part of the document, so it is
built per configuration; so is the security of the server's own endpoints (`server.token`).
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


# `server.token`, not a webhook source's own token (the `bearer` scheme of the webhook routes).
SERVER_TOKEN = {
    "type": "http",
    "scheme": "bearer",
    "description": "server.token; the status page also takes it as the password of HTTP Basic",
}
SERVER_BASIC = {
    "type": "http",
    "scheme": "basic",
    "description": "any user name, server.token as the password",
}


def _page(operation_id: str, summary: str, parameters: list[dict[str, Any]], missing: bool) -> dict[str, Any]:
    html = {"text/html": {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {"200": {"description": "the page", "content": html}}
    if missing:
        responses["404"] = {"description": "no event with this id", "content": html}
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": parameters,
            "responses": responses,
        }
    }


def _secured(paths: dict[str, Any], names: Sequence[str], *, page: bool) -> None:
    """Each operation of `names` needs the server's token (pages: bearer or Basic)."""
    for name in names:
        for operation in paths[name].values():
            either: list[dict[str, list[str]]] = [{"serverToken": []}, {"serverBasic": []}]
            operation["security"] = either if page else [{"serverToken": []}]
            operation["responses"]["401"] = (
                {"description": "no token, or a wrong one (a Basic challenge)"}
                if page
                else error_answer("no token, or a wrong one")
            )


def document(routes: Sequence[HttpRoute], *, token: bool = False, page: bool = False) -> dict[str, Any]:
    """The server's own endpoints, and those the plug-ins contribute with their part of the spec.
    `token`: `server.token` is set; `page`: the status page is served."""
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
    if page:
        query = [
            {"name": "q", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
        ]
        paths["/"] = _page("status_page", "Status page for people (HTML)", query, missing=False)
        record = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
        paths["/records/{id}"] = _page("record_page", "One event's history (HTML)", record, missing=True)
    if token:
        schemes = components.setdefault("securitySchemes", {})
        schemes["serverToken"] = SERVER_TOKEN
        _secured(paths, ["/events/{id}", "/metrics"], page=False)
        if page:
            schemes["serverBasic"] = SERVER_BASIC
            _secured(paths, ["/", "/records/{id}"], page=True)
        paths["/healthz"]["get"]["security"] = []
    return {
        "openapi": "3.1.0",
        "info": {"title": "SMS connector", "version": __version__},
        "paths": paths,
        "components": components,
    }

"""What a plug-in that serves HTTP hands the server: its routes, each with its part of the OpenAPI
document, and the one shape of every error answer (`{"error": code, "detail": text}`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

JSON = "application/json"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code, e.g. invalid_json"},
        "detail": {"type": "string", "description": "what was wrong, for a person"},
    },
}


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """One endpoint a plug-in contributes to the server of `connector run`."""

    path: str
    methods: tuple[str, ...]
    endpoint: Callable[[Request], Awaitable[Response]]
    openapi: Mapping[str, Any]  # the OpenAPI path item, e.g. {"post": {...}}
    components: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # schemas, securitySchemes


def error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def ok_answer(description: str, schema: str) -> dict[str, Any]:
    """An OpenAPI response whose JSON body is `#/components/schemas/<schema>`."""
    reference = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {JSON: {"schema": reference}}}


def error_answer(description: str) -> dict[str, Any]:
    return ok_answer(description, "Error")

"""What a webhook delivery's body and headers may be: the limits, the JSON parsing, the delivery id,
and the answer for each thing that can be wrong. Pure functions; no I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 32  # nesting of arrays/objects in one delivery
MAX_ITEMS = 1000  # records in one delivery
MAX_DELIVERY_ID = 256


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server sends back for one delivery; `records` counts what was newly taken in."""

    status: int
    body: dict[str, Any]
    records: int = 0
    replayed: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class BadDelivery(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.answer = Reply(status, {"error": error, "detail": detail})


def delivery_id(headers: Mapping[str, str], body: bytes) -> str:
    given = headers.get("webhook-id", "").strip()
    if not given:
        return "sha256-" + hashlib.sha256(body).hexdigest()
    if len(given) > MAX_DELIVERY_ID or not given.isprintable():
        detail = f"webhook-id must be printable text of at most {MAX_DELIVERY_ID} characters"
        raise BadDelivery(400, "invalid_webhook_id", detail)
    return given


def require_json(headers: Mapping[str, str]) -> None:
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise BadDelivery(415, "unsupported_media_type", "send the body as Content-Type: application/json")


def parse_body(body: bytes) -> dict[str, Any]:
    """The body as one JSON object, bounded in depth; BadDelivery otherwise."""
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise BadDelivery(422, "too_deep", f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int too long, NaN
        raise BadDelivery(400, "invalid_json", f"the body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadDelivery(422, "not_an_object", f"the body must be a JSON object, not {_kind(payload)}")
    if _depth(payload) > MAX_DEPTH:
        raise BadDelivery(422, "too_deep", f"nested deeper than {MAX_DEPTH} levels")
    return payload


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _depth(value: Any) -> int:
    """Deepest nesting, walked without recursion (the limit is what keeps recursion safe elsewhere)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )

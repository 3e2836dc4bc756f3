"""Pydantic's validation errors, walked back to the YAML key a person has to fix.

Pydantic locates an error by a tuple of keys and indexes into the data (with the discriminated
union's tag in between); a person needs the nearest key that exists in their file and a message
in their words ("unknown key (did you mean 'token'?)").
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from connector.config import ConnectorConfig, KeyPath
from connector.errors import lower_first


@dataclass(frozen=True)
class _Where:
    path: KeyPath  # keys that exist in the data, plus a missing key at the end
    model: Any  # the type that holds the last key, when known (for `did you mean`)
    kind: Any  # the type at `path`, when known
    branch: tuple[KeyPath, str] | None  # a plain union tried this branch at that path ('list[str]')


def located(
    errors: list[ErrorDetails], data: Any, root: type[BaseModel] = ConnectorConfig
) -> list[tuple[KeyPath, str]]:
    """(key path, message) per error of validating `data` as `root`."""
    found = [(_walk(e["loc"], data, root), e) for e in errors]
    # A value matching no member of `str | list[str]` gets one error per member: keep the member its
    # shape was meant for (a list for a list), so the message speaks of the mistake that was made.
    meant: dict[KeyPath, bool] = {}
    for where, _ in found:
        if where.branch is not None:
            prefix, tag = where.branch
            fits = isinstance(_at(data, prefix), list) == tag.startswith("list[")
            meant[prefix] = meant.get(prefix, False) or fits
    out: list[tuple[KeyPath, str]] = []
    for where, error in found:
        if where.branch is not None:
            prefix, tag = where.branch
            fits = isinstance(_at(data, prefix), list) == tag.startswith("list[")
            if meant[prefix] and not fits:
                continue
        out.append(_message(where, error, data))
    return out


def _walk(loc: tuple[int | str, ...], data: Any, root: type[BaseModel]) -> _Where:
    kind: Any = root
    model: Any = None
    node: Any = data
    path: list[str | int] = []
    branch: tuple[KeyPath, str] | None = None
    for part in loc:
        members = _union_members(kind)
        if members is not None:
            tagged = [m for m in members if part in _type_tags(m)]
            if tagged:  # discriminated union: pydantic names the `type:` value
                kind = tagged[0]
                continue
            if len(members) > 1:  # plain union: pydantic names the member it tried
                branch = (tuple(path), str(part))
                kind = None
                continue
            kind = members[0]
        if kind is None and isinstance(node, dict) and part not in node and part == node.get("type"):
            continue
        model = kind
        kind = _child_type(kind, part)
        path.append(part)
        node = node.get(part) if isinstance(node, dict) else None
    return _Where(tuple(path), model, kind, branch)


def _message(where: _Where, error: ErrorDetails, data: Any) -> tuple[KeyPath, str]:
    kind, path = error["type"], where.path
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return path, "field required"
    if kind == "extra_forbidden":
        return path, "unknown key" + _suggest(str(path[-1]), _field_names(where.model))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        known = sorted({t for m in _union_members(where.kind) or [] for t in _type_tags(m)})
        listed = f"known types: {', '.join(known)}"
        if kind == "union_tag_not_found":
            return (*path, "type"), f"field required ({listed})"
        tag = str(ctx.get("tag", ""))
        close = difflib.get_close_matches(tag, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return (*path, "type"), f"unknown type {tag!r} ({hint}{listed})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return path, "expected a mapping of settings (key: value lines)"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if where.branch is not None and not where.branch[1].startswith("list["):
        message += " (or a list of them)"
    return path, lower_first(message)


def _union_members(kind: Any) -> list[Any] | None:
    kind = _unwrap(kind)
    if typing.get_origin(kind) not in (typing.Union, types.UnionType):
        return None
    return [_unwrap(a) for a in typing.get_args(kind) if a is not type(None)]


def _unwrap(kind: Any) -> Any:
    while typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    return kind


def _type_tags(kind: Any) -> list[str]:
    """The `type:` values a source or sink model accepts (its `Literal`)."""
    if not (isinstance(kind, type) and issubclass(kind, BaseModel)) or "type" not in kind.model_fields:
        return []
    return [t for t in typing.get_args(kind.model_fields["type"].annotation) if isinstance(t, str)]


def _child_type(kind: Any, part: str | int) -> Any:
    kind = _unwrap(kind)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        info = kind.model_fields.get(str(part))
        return info.annotation if info is not None else None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is list and args:
        return args[0]
    return None


def _field_names(kind: Any) -> list[str]:
    kind = _unwrap(kind)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return list(kind.model_fields)
    return []


def _suggest(wrong: str, known: list[str]) -> str:
    close = difflib.get_close_matches(wrong, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (allowed: {', '.join(known)})" if known else ""


def _at(data: Any, path: KeyPath) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data

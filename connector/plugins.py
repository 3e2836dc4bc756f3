"""How sources and sinks are registered: one line each, the type name written once.

A plug-in's type name is the `Literal` of its config model's `type` field (`type:
Literal["robo_sms_ro"]`); the registry is a list of "module.Class" lines, imported here. From it the
application builds the config union (a pydantic discriminated union on `type`) and looks plug-ins
up by their config model. No plug-in is special to the core.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field


def type_name_of(config_model: type[BaseModel]) -> str | None:
    """The one value the model's `type` field accepts, or None for a model without one."""
    field = config_model.model_fields.get("type")
    if field is None:
        return None
    names = typing.get_args(field.annotation)
    if typing.get_origin(field.annotation) is not typing.Literal or len(names) != 1:
        raise TypeError(f"{config_model.__name__}.type must be a Literal of one name")
    return str(names[0])


class Plugin:
    """Base of `Sink` and `Source`: a subclass with a `config_model` gets its `type_name` from it."""

    type_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = cls.__dict__.get("config_model")
        name = type_name_of(model) if model is not None and "type_name" not in cls.__dict__ else None
        if name is not None:
            cls.type_name = name


def load(base: type[Any], *paths: str) -> tuple[type[Any], ...]:
    """The classes named "package.module.Class", each checked to be a `base`."""
    found: list[type[Any]] = []
    for path in paths:
        module_name, _, class_name = path.rpartition(".")
        plugin = getattr(importlib.import_module(module_name), class_name)
        if not (isinstance(plugin, type) and issubclass(plugin, base)):
            raise TypeError(f"{path} is not a {base.__name__}")
        found.append(plugin)
    return tuple(found)


def config_union(models: Sequence[type[BaseModel]]) -> Any:
    """The models as one pydantic union that picks a model by its `type` value."""
    if len(models) == 1:
        return models[0]
    return Annotated[typing.Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007 - built at run time

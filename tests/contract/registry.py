"""The one place the contract suite reads the plug-in registries.

Registries are being reshaped (a dict `SINK_TYPES` today, a tuple `REGISTERED` beside it); if they
move again, repoint these two functions and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sinks
import sources
from sinks.base import Sink
from sources.base import Source


def _by_type_name(plugins: Iterable[Any]) -> dict[str, Any]:
    return {plugin.type_name: plugin for plugin in plugins}


def registered_sinks() -> dict[str, type[Sink]]:
    """Every registered sink class, by its type name."""
    listed = getattr(sinks, "REGISTERED", None)
    return _by_type_name(listed if listed is not None else sinks.SINK_TYPES.values())


def registered_sources() -> dict[str, type[Source]]:
    """Every registered source class, by its type name."""
    listed = getattr(sources, "REGISTERED", None)
    return _by_type_name(listed if listed is not None else sources.SOURCE_TYPES.values())

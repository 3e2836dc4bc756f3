"""Sinks, sources and budgets built from a loaded config: for the runtime, a reload, the read-only
commands."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

import httpx

from connector.config_loader import LoadedConfig
from connector.policy import Budget
from connector.stop_signal import StopSignal
from sinks import REGISTERED as SINKS
from sinks.base import Sink
from sources import REGISTERED as SOURCES
from sources.base import Source, SourceContext


def build_sinks(loaded: LoadedConfig, client: httpx.AsyncClient) -> dict[str, Sink]:
    return {name: build_sink(loaded, name, client) for name in loaded.config.sinks}


def build_sink(loaded: LoadedConfig, name: str, client: httpx.AsyncClient) -> Sink:
    cfg = loaded.config.sinks[name]
    sink_type = _SINK_OF_MODEL[type(cfg)]  # validation only lets registered models through
    return sink_type(name, cfg.resolved(loaded.base_dir), client)


def build_sources(
    loaded: LoadedConfig, ctx: SourceContext, only: Sequence[str] | None = None
) -> dict[str, Source]:
    return {
        name: build_source(loaded, name, ctx) for name in loaded.config.sources if not only or name in only
    }


def build_source(loaded: LoadedConfig, name: str, ctx: SourceContext) -> Source:
    """One source, with a stop of its own: a reload can stop it alone (the runtime's stop stops all)."""
    cfg = loaded.config.sources[name]
    stop = ctx.stopping.child() if isinstance(ctx.stopping, StopSignal) else asyncio.Event()
    own = dataclasses.replace(ctx, stopping=stop)
    return _SOURCE_OF_MODEL[type(cfg)](name, cfg, own)


def budgets_of(loaded: LoadedConfig, sinks: dict[str, Sink]) -> dict[str, Budget]:
    """Each sink's `daily_budget`, in its own unit (a sink without a price counts messages)."""

    def cost_of(sink: Sink) -> Callable[[str], int]:
        def cost(text: str) -> int:
            price = sink.cost(text)
            return 1 if price is None else price.amount

        return cost

    return {
        name: Budget(cfg.daily_budget, cost_of(sinks[name]))
        for name, cfg in loaded.config.sinks.items()
        if cfg.daily_budget is not None
    }


_SINK_OF_MODEL = {sink.config_model: sink for sink in SINKS}
_SOURCE_OF_MODEL = {source.config_model: source for source in SOURCES}

"""Prometheus metrics for `GET /metrics`, in a registry of their own (never the global one).

Counters count what happened in this process; the ledger's state counts are read at each scrape
into gauges, so totals survive restarts and include what other processes did.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from connector.events import Outcome
from connector.ledger import Ledger
from connector.policy import PolicyContext
from policies.budget import day_of
from sinks.base import Sink

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Provider requests take tens of milliseconds to tens of seconds (read timeouts).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class ConfigState:
    """When the running config was loaded, and the last reload refused (for /healthz)."""

    loaded_at: float
    refused_at: float | None = None
    refusal: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "loaded_at": _iso(self.loaded_at),
            "last_refusal": None
            if self.refused_at is None
            else {"at": _iso(self.refused_at), "problems": self.refusal},
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "connector_webhook_records_received",
            "Records taken in by a webhook source (repeated deliveries not counted).",
            ["source"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "connector_webhook_deliveries",
            "Webhook deliveries answered, by HTTP status.",
            ["source", "status"],
            registry=self.registry,
        )
        self.sends = Counter(
            "connector_sends",
            "Send outcomes reported by sinks in this process.",
            ["sink", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "connector_send_latency_seconds",
            "Time from a provider request leaving to its answer.",
            ["sink"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ledger_entries = Gauge(
            "connector_ledger_entries",
            "Ledger entries by source, rule and state (read from the ledger at scrape time).",
            ["source", "rule", "state"],
            registry=self.registry,
        )
        self.lease_left = Gauge(
            "connector_instance_lease_seconds",
            "Seconds of lease this instance can count on (0: lapsed or not renewed).",
            registry=self.registry,
        )
        self.holding = Gauge(
            "connector_instance_holds",
            "1 for each hold this instance has (a CSV file, a sheet's poll, the sweeper).",
            ["hold"],
            registry=self.registry,
        )
        self.budget = Gauge(
            "connector_budget_daily_limit",
            "A sink's daily_budget, in its own unit (RO credits, PK SMS segments).",
            ["sink"],
            registry=self.registry,
        )
        self.spent = Gauge(
            "connector_budget_spent_today",
            "What a sink has spent of its budget today (the day in the config's timezone).",
            ["sink"],
            registry=self.registry,
        )
        self.sink_paused = Gauge(
            "connector_sink_paused",
            "1 while the sink is paused (account problem).",
            ["sink"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "connector_config_reloads",
            "Config reloads by result: applied, refused (invalid, or needs a restart), unchanged.",
            ["result"],
            registry=self.registry,
        )
        for result in ("applied", "refused", "unchanged"):
            self.reloads.labels(result)  # shown at 0 before the first reload
        self.config = ConfigState(loaded_at=time.time())

    def reloaded(self, result: str, refusal: str = "") -> None:
        self.reloads.labels(result).inc()
        now = time.time()
        if result == "applied":
            self.config.loaded_at = now
        elif result == "refused":
            self.config.refused_at, self.config.refusal = now, refusal

    def observe_send(self, sink: str, outcomes: Sequence[Outcome], seconds: float | None) -> None:
        """The engine's SendObserver: one call per provider request (or per held batch)."""
        for outcome in outcomes:
            self.sends.labels(sink, outcome.kind.value).inc()
        if seconds is not None:
            self.latency.labels(sink).observe(seconds)

    def delivery(self, source: str, status: int, records: int) -> None:
        self.deliveries.labels(source, str(status)).inc()
        if records:
            self.received.labels(source).inc(records)

    async def render(
        self, ledger: Ledger, sinks: Mapping[str, Sink], context: PolicyContext | None = None
    ) -> bytes:
        counts = await ledger.counts_aside()  # every row: never in the writer's turn
        self.ledger_entries.clear()  # a (source, rule) gone from the ledger must not linger
        for row in counts:
            self.ledger_entries.labels(row.source, row.rule, row.state.value).set(row.count)
        for name, sink in sinks.items():
            self.sink_paused.labels(name).set(1 if sink.paused else 0)
        if context is not None and context.budgets:
            today = await ledger.spent(day_of(time.time(), context.zone)[0])
            for name, budget in context.budgets.items():
                self.budget.labels(name).set(budget.limit)
                self.spent.labels(name).set(today.get(name, 0))
        self.lease_left.set(ledger.lease_left)
        self.holding.clear()
        for hold in ledger.held:
            self.holding.labels(hold).set(1)
        return generate_latest(self.registry)

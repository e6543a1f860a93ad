"""Prometheus metrics; every name starts with `veriflow_`. One registry per running service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.limits import Refusal
from service.store.limits import refusal_counter

MAX_LABELLED = 1000
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._labelled: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.outcomes = Counter(
            "veriflow_outcomes", "Verifications reaching verified or a terminal status, by code.",
            ["channel", "status", "code"], registry=self.registry,
        )
        self.replies = Counter(
            "veriflow_replies", "Error replies given to API calls, by catalog code.",
            ["channel", "code"], registry=self.registry,
        )
        self.started = Counter(
            "veriflow_started", "Verifications started.", ["channel"], registry=self.registry,
        )
        self.request_seconds = Histogram(
            "veriflow_http_request_seconds", "API latency by route.", ["method", "route", "status"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.commit_conflicts = Counter(
            "veriflow_commit_conflicts", "Commits retried because another writer won the version.",
            registry=self.registry,
        )
        self.record_cache = Counter(
            "veriflow_record_cache", "Steps by what this process's own copy of the record did: hit (the "
            "commit on it won, no read), miss (none kept: read), stale (another writer had moved it on), "
            "unchanged (nothing to commit checks it: read).", ["result"], registry=self.registry,
        )
        self.live = Gauge(
            "veriflow_live_verifications", "Verifications pending or verified (armed timers).",
            registry=self.registry,
        )
        self.timer_lag_seconds = Histogram(
            "veriflow_timer_lag_seconds", "How late timers fire after their deadline.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=self.registry,
        )
        self.effects = Counter(
            "veriflow_effects", "Outbox effects performed, by kind and result.", ["kind", "result"],
            registry=self.registry,
        )
        # veriflow_limit_refusals_total{limit}: requests refused with 3006, by the deciding limit.
        self.limit_refusal: Callable[[Refusal], None] = refusal_counter(self.registry)
        self.webhook_refusals = Counter(
            "veriflow_webhook_refusals", "Provider webhooks refused (401 3004), by reason: "
            "bad_signature (missing, wrong or stale) or unknown_provider.", ["reason"], registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "veriflow_outbox_pending", "Outbox entries delivered but not yet acknowledged.",
            registry=self.registry,
        )

    def labelled(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: `labels` validates and locks on every call, a
        few microseconds of each request. Odd label values (an unknown HTTP method) must not grow
        the table forever: past MAX_LABELLED children are looked up each time."""
        key = (metric, labels)
        child = self._labelled.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._labelled) < MAX_LABELLED:
                self._labelled[key] = child
        return child

"""Prometheus metrics, one registry per gateway (no process-global collectors)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from router.engine import Exchange
    from router.gateway import Gateway

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_MODEL_LABELS = 200  # client model names are client input: bound the label cardinality


class _StateCollector(Collector):
    """Values read at scrape time: cooling accounts, config generation, reloads."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        gw = self.gateway
        gen = GaugeMetricFamily("router_config_generation", "Generation of the config snapshot serving")
        gen.add_metric([], gw.generation)
        yield gen
        reloads = CounterMetricFamily("router_config_reloads", "Config reloads by result", labels=["result"])
        reloads.add_metric(["success"], gw.reloads_ok)
        reloads.add_metric(["failure"], gw.reloads_failed)
        yield reloads
        cooling = GaugeMetricFamily("router_accounts_cooling", "Accounts cooling down, by provider",
                                    labels=["provider"])
        total = GaugeMetricFamily("router_accounts", "Accounts with a key, by provider", labels=["provider"])
        if gw.snapshot is not None:
            now = gw.store.clock()
            for name, p in gw.snapshot.providers.items():
                n = sum(1 for a in p.pool.accounts if gw.store.state(a.state_key).cooling_until > now)
                cooling.add_metric([name], n)
                total.add_metric([name], len(p.pool.accounts))
        yield cooling
        yield total


class Metrics:
    """The gateway's collectors and the one call the dispatcher makes per request."""

    def __init__(self, gateway: Gateway):
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("router_requests", "Requests by route, status, client model and provider",
                                ["route", "status", "client_model", "provider"], registry=r)
        self.latency = Histogram("router_request_duration_seconds", "Request latency (streams: until the end)",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttfb = Histogram("router_time_to_first_byte_seconds", "Time until the first response byte",
                              ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.attempts = Counter("router_upstream_attempts", "Upstream attempts by provider and outcome",
                                ["provider", "outcome"], registry=r)
        self.retries = Counter("router_upstream_retries", "Attempts after the first", ["provider"], registry=r)
        self.rotations = Counter("router_account_rotations", "Retries that moved to another account",
                                 ["provider"], registry=r)
        self.tokens = Counter("router_tokens", "Tokens by provider and direction", ["provider", "direction"],
                              registry=r)
        r.register(_StateCollector(gateway))
        self._models: set[str] = set()

    def _model_label(self, model: str | None) -> str:
        if not model:
            return ""
        if model in self._models:
            return model
        if len(self._models) < MAX_MODEL_LABELS:
            self._models.add(model)
            return model
        return "other"

    def observe(self, x: Exchange, route: str, status: int, latency: float) -> None:
        provider = x.provider.name if x.provider else ""
        self.requests.labels(route, str(status), self._model_label(x.client_model), provider).inc()
        self.latency.labels(route).observe(latency)
        if x.ttfb is not None:
            self.ttfb.labels(route).observe(x.ttfb)
        if not x.attempts:
            return
        prev = None
        for i, a in enumerate(x.attempts):
            self.attempts.labels(provider, str(a.outcome)).inc()
            if i:
                self.retries.labels(provider).inc()
                if a.account != prev:
                    self.rotations.labels(provider).inc()
            prev = a.account
        if x.usage is not None:
            self.tokens.labels(provider, "in").inc(x.usage.input_tokens)
            self.tokens.labels(provider, "out").inc(x.usage.output_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)

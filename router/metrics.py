"""Prometheus metrics, one registry per gateway (no process-global collectors)."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from router.circuit import state_samples
from router.metrics_shared import SharedMetrics
from router.status.traffic import Traffic
from router.status.view import publish as publish_traffic

if TYPE_CHECKING:
    from router.exchange import Exchange
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
        busy = GaugeMetricFamily("router_accounts_in_flight", "Upstream attempts in flight in this process, "
                                 "by provider", labels=["provider"])
        if gw.snapshot is not None:
            now = gw.store.clock()
            for name, p in gw.snapshot.providers.items():
                states = [gw.store.state(a.state_key) for a in p.pool.accounts]
                cooling.add_metric([name], sum(1 for st in states if st.cooling_until > now))
                total.add_metric([name], len(p.pool.accounts))
                busy.add_metric([name], sum(st.in_flight for st in states))
        yield cooling
        yield total
        yield busy
        yield from _circuits(gw)
        yield _counter("router_token_refreshes", "Access token refreshes by provider and result (ok, failed, revoked)",
                       ["provider", "result"], gw.tokens.refreshes)
        yield _counter("router_account_credentials_revoked", "Accounts disabled because their token server "
                       "refused the credential for good (invalid_grant)", ["provider", "account"],
                       gw.tokens.revocations)
        up = GaugeMetricFamily("router_state_backend_up", "1 while the state backend answers (memory: always)",
                               labels=["backend"])
        shared = gw.shared
        up.add_metric([shared.settings.backend if shared else "memory"], 1 if shared is None or shared.up else 0)
        yield up


def _circuits(gw: Gateway) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """Each circuit's state (0 closed, 1 open, 2 half-open; account "": the provider's) and its openings."""
    state = GaugeMetricFamily("router_circuit_state", "Circuit state: 0 closed, 1 open, 2 half-open (account "
                              "'': the provider's circuit)", labels=["provider", "account"])
    if gw.snapshot is not None:
        for provider, account, value in state_samples(gw.store, (p.pool for p in gw.snapshot.providers.values())):
            state.add_metric([provider, account], value)
    yield state
    yield _counter("router_circuit_ejections", "Circuit openings by provider and account ('': the provider's)",
                   ["provider", "account"], gw.store.circuits.ejected)


class _Histogram:
    """Bucket counts kept in a plain list; exported by the collector at scrape time."""

    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, value)] += 1
        self.total += value
        self.n += 1

    def family_samples(self) -> tuple[list[tuple[str, float]], float]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts, strict=True):
            acc += count
            out.append((bound, acc))
        return out, self.total


class Metrics:
    """Per-request counters as plain dict increments (a request costs a few µs, no locks: one
    event loop per process); prometheus-client renders them at scrape time."""

    content_type = CONTENT_TYPE

    def __init__(self, gateway: Gateway):
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests: dict[tuple[str, str, str, str, str], int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = defaultdict(_Histogram)
        self.ttfb: dict[str, _Histogram] = defaultdict(_Histogram)
        self.attempts: dict[tuple[str, str], int] = defaultdict(int)
        self.retries: dict[str, int] = defaultdict(int)
        self.rotations: dict[str, int] = defaultdict(int)
        self.tokens: dict[tuple[str, str, str], int] = defaultdict(int)
        self.registry.register(_StateCollector(gateway))
        self.registry.register(_RequestCollector(self))
        self._models: set[str] = set()
        self.traffic = Traffic()  # the last minutes, per second, for the status page (router.status)
        # a --workers child: scrapes show every worker's values (see metrics_shared)
        self.shared = SharedMetrics(gateway.worker_dir) if gateway.worker_dir is not None else None

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
        self.traffic.observe(x, status, latency)
        provider = x.provider.name if x.provider else ""
        key = x.client_key or ""  # a name from the config (bounded); "" without a key
        self.requests[(route, str(status), self._model_label(x.client_model), provider, key)] += 1
        self.latency[route].observe(latency)
        if x.ttfb is not None:
            self.ttfb[route].observe(x.ttfb)
        if not x.attempts:
            return
        prev = None
        for i, a in enumerate(x.attempts):
            self.attempts[(provider, str(a.outcome))] += 1
            if i:
                self.retries[provider] += 1
                if a.account != prev:
                    self.rotations[provider] += 1
            prev = a.account
        if x.usage is not None:
            self.tokens[(provider, "in", key)] += x.usage.input_tokens
            self.tokens[(provider, "out", key)] += x.usage.output_tokens

    def render(self) -> bytes:
        if self.shared is not None:
            return self.shared.render(self.registry)
        return generate_latest(self.registry)

    def share(self) -> None:
        """A --workers child: write the current values for the other workers' scrapes to read."""
        if self.shared is not None:
            self.shared.publish(self.registry)
            publish_traffic(self.shared.dir, self.traffic)


class _RequestCollector(Collector):
    def __init__(self, m: Metrics):
        self.m = m

    def collect(self) -> Iterator[Any]:
        m = self.m
        yield _counter("router_requests", "Requests by route, status, client model, provider and API key name",
                       ["route", "status", "client_model", "provider", "key"], m.requests)
        yield _counter("router_upstream_attempts", "Upstream attempts by provider and outcome",
                       ["provider", "outcome"], m.attempts)
        yield _counter("router_upstream_retries", "Attempts after the first", ["provider"],
                       {(k,): v for k, v in m.retries.items()})
        yield _counter("router_account_rotations", "Retries that moved to another account", ["provider"],
                       {(k,): v for k, v in m.rotations.items()})
        yield _counter("router_tokens", "Tokens by provider, direction and API key name",
                       ["provider", "direction", "key"], m.tokens)
        for name, doc, hists in (
                ("router_request_duration_seconds", "Request latency (streams: until the end)", m.latency),
                ("router_time_to_first_byte_seconds", "Time until the first response byte", m.ttfb)):
            fam = HistogramMetricFamily(name, doc, labels=["route"])
            for route, h in list(hists.items()):
                buckets, total = h.family_samples()
                fam.add_metric([route], buckets, total)
            yield fam


def _counter(name: str, doc: str, labels: list[str], values: dict[Any, int]) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=labels)
    for key, value in list(values.items()):
        fam.add_metric(list(key), value)
    return fam

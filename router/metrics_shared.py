"""``/metrics`` under ``router serve --workers N``: every worker's values in every scrape, whichever
worker answers it (the equivalent of prometheus-client's multiprocess mode for our plain-dict metrics).

Each worker writes its current values to the shared directory (``router.worker_dir``) once a second,
off the request path, and again right before it answers a scrape; the answer merges its own values
with the other workers' latest files. Writing before answering is what keeps counters monotonic:
a scrape answered by worker 1 reads worker 0's file, which is at least what worker 0 reported when it
answered the previous scrape. A worker that exited keeps its last file, so its counts stay in the sums.

Merging: counters and histograms (buckets, sums, counts) are summed; a gauge in ``GAUGE_MERGE`` is
combined by its function; any other gauge (``router_config_generation``, a worker's own condition)
is given one series per worker with a ``worker`` label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from router.worker_dir import WorkerDir

Family = dict[str, Any]  # {"name", "type", "help", "samples": [[sample name, {label: value}, value], ...]}
Combine = Callable[[float, float], float]

SUMMED = {"counter", "histogram", "summary"}
# gauges that mean the same in every worker: the accounts a provider has, and the accounts cooling
# (with per-worker state, the most any worker sees; with a shared state, every worker's one value)
GAUGE_MERGE: dict[str, Combine] = {"router_accounts": max, "router_accounts_cooling": max}


def families(source: Collector) -> list[Family]:
    """A collector's current values as plain data (what a worker's metrics file holds)."""
    return [{"name": m.name, "type": m.type, "help": m.documentation,
             "samples": [[s.name, s.labels, s.value] for s in m.samples]} for m in source.collect()]


def _add(a: float, b: float) -> float:
    return a + b


def _combine(name: str, typ: str) -> Combine | None:
    """How the values of one sample from several workers combine; None: one series per worker."""
    if typ in SUMMED:
        return _add
    return GAUGE_MERGE.get(name)


def merge(snapshots: Iterable[tuple[int, list[Family]]]) -> list[Metric]:
    """The workers' families as one set, in first-seen order (the answering worker's first)."""
    out: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for worker, fams in snapshots:
        for fam in fams:
            name = fam["name"]
            if name not in out:
                out[name] = Metric(name, fam["help"], fam["type"])
                values[name] = {}
            combine, acc = _combine(name, fam["type"]), values[name]
            for sample, labels, value in fam["samples"]:
                if combine is None:
                    labels = {**labels, "worker": str(worker)}
                key = (sample, tuple(labels.items()))
                acc[key] = combine(acc[key], value) if combine is not None and key in acc else value
    for name, metric in out.items():
        for (sample, labels), value in values[name].items():
            metric.add_sample(sample, dict(labels), value)
    return list(out.values())


def exposition(snapshots: Iterable[tuple[int, list[Family]]]) -> bytes:
    """The Prometheus text of the workers' merged families."""
    return generate_latest(_Merged(merge(snapshots)))


class _Merged(Collector):
    def __init__(self, metrics: list[Metric]):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


class SharedMetrics:
    """One worker's side: write its values, and render a scrape with every worker's."""

    def __init__(self, worker_dir: WorkerDir):
        self.dir = worker_dir

    def publish(self, source: Collector) -> list[Family]:
        own = families(source)
        self.dir.write_metrics(own)
        return own

    def render(self, source: Collector) -> bytes:
        own = self.publish(source)  # first: the next scrape, whichever worker answers it, reads these
        return exposition([(self.dir.worker, own), *self.dir.others_metrics()])

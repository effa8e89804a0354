"""The directory a --workers parent shares with its workers: merged metrics (a dead worker's counts
kept), what a worker may signal, and nothing of it without --workers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from router import worker_dir
from router.metrics_shared import SharedMetrics, exposition, families
from router.worker_dir import WorkerDir
from tests.conftest import Harness


def _family(name: str, typ: str, samples: list[tuple[str, dict[str, str], float]]) -> dict[str, object]:
    return {"name": name, "type": typ, "help": name, "samples": [list(s) for s in samples]}


def _values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_counters_and_histograms_are_summed_gauges_per_their_meaning() -> None:
    def worker(requests: float, bucket: float, generation: float, cooling: float) -> list[dict[str, object]]:
        return [_family("router_requests", "counter", [("router_requests_total", {"route": "/a"}, requests)]),
                _family("router_request_duration_seconds", "histogram", [
                    ("router_request_duration_seconds_bucket", {"route": "/a", "le": "+Inf"}, bucket),
                    ("router_request_duration_seconds_count", {"route": "/a"}, bucket),
                    ("router_request_duration_seconds_sum", {"route": "/a"}, bucket / 10)]),
                _family("router_config_generation", "gauge", [("router_config_generation", {}, generation)]),
                _family("router_accounts_cooling", "gauge", [("router_accounts_cooling", {"provider": "p"}, cooling)])]

    values = _values(exposition([(0, worker(3, 4, 2, 1)), (1, worker(5, 6, 1, 0))]).decode())
    assert values[("router_requests_total", (("route", "/a"),))] == 8
    assert values[("router_request_duration_seconds_bucket", (("le", "+Inf"), ("route", "/a")))] == 10
    assert values[("router_request_duration_seconds_count", (("route", "/a"),))] == 10
    assert values[("router_config_generation", (("worker", "0"),))] == 2
    assert values[("router_config_generation", (("worker", "1"),))] == 1
    assert values[("router_accounts_cooling", (("provider", "p"),))] == 1


def test_a_scrape_writes_first_and_keeps_a_dead_workers_counts(tmp_path: Path) -> None:
    gone = WorkerDir(tmp_path, 1)  # worker 1 wrote its values once, then exited
    gone.write_metrics([_family("router_requests", "counter", [("router_requests_total", {"route": "/a"}, 7)])])
    registry = CollectorRegistry()
    Counter("router_requests", "doc", ["route"], registry=registry).labels("/a").inc(2)
    text = SharedMetrics(WorkerDir(tmp_path, 0)).render(registry).decode()
    assert _values(text)[("router_requests_total", (("route", "/a"),))] == 9
    own = worker_dir.read_json(tmp_path / "metrics-0.json")  # written before the answer: the next scrape reads it
    assert own["families"] == families(registry)


def test_the_dir_is_private_and_removed(tmp_path: Path) -> None:
    path = worker_dir.create()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    finally:
        worker_dir.remove(path)
    assert not path.exists()


def test_only_the_parents_own_workers_are_signalled(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # our child, not a sibling
    try:
        wd = WorkerDir(tmp_path, 0)
        assert wd.sibling(1) is None  # no list from the parent yet
        worker_dir.write_json(tmp_path / worker_dir.WORKERS_FILE, {"parent": os.getppid(),
                                                                   "pids": [os.getpid(), child.pid]})
        assert wd.sibling(0) is None  # never itself
        if Path("/proc/self/stat").exists():
            assert wd.sibling(1) is None  # its parent is this process, not this process's parent
        worker_dir.write_json(tmp_path / worker_dir.WORKERS_FILE, {"parent": os.getppid() + 1,
                                                                   "pids": [os.getpid(), child.pid]})
        assert wd.worker_pids() == []  # a list written by some other process than our parent
    finally:
        child.kill()
        child.wait()


async def test_without_workers_nothing_is_shared(gw: Harness) -> None:
    assert gw.gateway.worker_dir is None and gw.runner.dispatcher.metrics.shared is None
    text = await (await gw.request("GET", "/metrics")).text()
    assert "router_config_generation 1.0" in text and 'worker="' not in text
    assert "workers" not in await (await gw.request("GET", "/admin/config")).json()
    status, answer, _ = await gw.post_json("/admin/reload", {})
    assert status == 200 and "workers" not in answer

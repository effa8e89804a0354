"""``router serve --workers N``: what the parent says about per-worker state, a worker id on every log
line (each child's own lines and its access lines), admin answers that name the worker; and one
gateway across the workers: ``/metrics``, ``POST /admin/reload`` and SIGHUP reach every worker."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import copy_routes
from tests.serving import free_port, serve_process, stop


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_each_workers_lines_carry_its_index(tmp_path: Path) -> None:
    config, port = copy_routes(tmp_path / "routes.d"), free_port()
    proc = serve_process(config, port, "--workers", "2", stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not _healthy(port):
            assert proc.poll() is None and time.monotonic() < deadline, "the gateway did not come up"
            time.sleep(0.1)
        for _ in range(20):  # a new connection each: either worker may accept it
            assert _healthy(port)
        for path in ("/admin/config", "/admin/accounts"):  # each worker answers for itself, and says so
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                assert json.loads(r.read())["worker"] in (0, 1)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = json.loads(r.read())
            assert answer["reloaded"] is True and answer["worker"] in (0, 1) and answer["generation"] == 2
        time.sleep(1.0)  # the access log is flushed every 0.5 s
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    text = err.decode()
    assert re.search(r"2 workers, each with its own memory \(state.backend: memory\): account cooldowns.* are per worker; to share them set state: \{backend: redis", text), text
    lines = [line for line in text.splitlines() if line.strip()]
    access = [line for line in lines if "router.access: GET /healthz" in line]
    assert len(access) >= 20, text
    assert all(json.loads(line.split("  ", 1)[1])["worker"] in (0, 1) for line in access), access
    own = [line for line in lines if "config generation 1 loaded" in line]  # every worker loads its config
    assert sorted(json.loads(line.split("  ", 1)[1])["worker"] for line in own) == [0, 1], own


# --- one gateway across workers: /metrics, POST /admin/reload, SIGHUP -------------------------------

WAIT = 30.0  # seconds any one wait below may take before the test fails


def _call(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    """One request on a new connection (so either worker may answer it)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _until(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _each_worker(port: int, path: str, n: int = 2) -> dict[int, dict[str, Any]]:
    """``path``'s JSON answer from each of the ``n`` workers (new connections until each answered)."""
    seen: dict[int, dict[str, Any]] = {}

    def ask() -> bool:
        try:
            status, body = _call(port, path)
        except urllib.error.URLError:  # not listening yet
            return False
        if status == 200:
            answer = json.loads(body)
            seen.setdefault(answer["worker"], answer)
        return len(seen) == n

    _until(f"both workers to answer {path}", ask)
    return seen


@contextlib.contextmanager
def _two_workers(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    config, port = copy_routes(tmp_path / "routes.d"), free_port()
    proc = serve_process(config, port, "--workers", "2", stderr=subprocess.DEVNULL)
    try:
        _each_worker(port, "/admin/config")  # both workers are serving (no /healthz counted yet)
        yield proc, port, config
    finally:
        stop(proc)


def _samples(text: str, name: str, route: str | None = None) -> float:
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and (route is None or s.labels.get("route") == route))


def test_metrics_count_every_worker_and_never_go_backwards(tmp_path: Path) -> None:
    with _two_workers(tmp_path) as (_, port, _config):
        sent, seen = 0, []
        for _ in range(40):
            for _ in range(3):
                assert _call(port, "/healthz")[0] == 200
                sent += 1
            text = _call(port, "/metrics")[1].decode()
            seen.append((_samples(text, "router_requests_total", "/healthz"),
                         _samples(text, "router_request_duration_seconds_count", "/healthz"),
                         _samples(text, "router_requests_total")))
        for column in zip(*seen, strict=True):  # whichever worker answered each scrape
            assert list(column) == sorted(column), column
        deadline, final = time.monotonic() + 10, [0.0, 0.0]
        while final != [sent, sent]:  # each worker writes its values at least once a second
            assert time.monotonic() < deadline, f"/metrics counts {final} of the {sent} requests sent"
            text = _call(port, "/metrics")[1].decode()
            final = [_samples(text, "router_requests_total", "/healthz"),
                     _samples(text, "router_request_duration_seconds_count", "/healthz")]
            time.sleep(0.1)
        text = _call(port, "/metrics")[1].decode()
        generations = {s.labels["worker"]: s.value for fam in text_string_to_metric_families(text)
                       for s in fam.samples if s.name == "router_config_generation"}
        assert generations == {"0": 1, "1": 1}, generations


def _generations(port: int) -> dict[int, int]:
    """Each worker's generation as /admin/config lists it (from whichever worker answers)."""
    return {w["worker"]: w["generation"] for w in json.loads(_call(port, "/admin/config")[1])["workers"]}


def test_admin_reload_reloads_every_worker_and_lists_them(tmp_path: Path) -> None:
    with _two_workers(tmp_path) as (_, port, config):
        status, body = _call(port, "/admin/reload", "POST")
        answer = json.loads(body)
        assert status == 200 and answer["reloaded"] is True and answer["generation"] == 2, answer
        assert [(w["worker"], w["generation"], w["answered"], w["ok"]) for w in answer["workers"]] == \
            [(0, 2, True, True), (1, 2, True, True)], answer["workers"]
        for worker, view in _each_worker(port, "/admin/config").items():  # each worker says so itself
            assert view["generation"] == 2 and _generations(port) == {0: 2, 1: 2}, (worker, view)
        assert {json.loads(_call(port, "/healthz")[1])["config_generation"] for _ in range(20)} == {2}

        edited = config / "20-mapping.yaml"  # a valid edit: every worker serves the new file after the reload
        edited.write_text(edited.read_text() + "\n# edited\n")
        digest = hashlib.sha256(edited.read_bytes()).hexdigest()
        status, body = _call(port, "/admin/reload", "POST")
        answer = json.loads(body)
        assert status == 200 and all(w["answered"] and w["ok"] and w["generation"] >= 3
                                     for w in answer["workers"]), answer["workers"]

        def serve_the_edit() -> bool:
            views = _each_worker(port, "/admin/config")
            return all({f["name"]: f["sha256"] for f in v["files"]}["20-mapping.yaml"] == digest
                       for v in views.values())

        _until("both workers to serve the edited file", serve_the_edit)

        (config / "95-bad.yaml").write_text("providers: 5\n")  # rejected by every worker
        status, body = _call(port, "/admin/reload", "POST")
        answer = json.loads(body)
        assert status == 422 and answer["reloaded"] is False, answer
        assert [(w["worker"], w["answered"], w["ok"], bool(w["errors"])) for w in answer["workers"]] == \
            [(0, True, False, True), (1, True, False, True)], answer["workers"]


def test_sighup_to_the_parent_reloads_every_worker(tmp_path: Path) -> None:
    with _two_workers(tmp_path) as (proc, port, _config):
        assert _generations(port) == {0: 1, 1: 1}
        proc.send_signal(signal.SIGHUP)
        _until("both workers at generation 2", lambda: _generations(port) == {0: 2, 1: 2})
        for worker, view in _each_worker(port, "/admin/config").items():
            assert view["generation"] == 2 and view["last_reload"]["reason"] == "sighup", (worker, view)
            assert [w["generation"] for w in view["workers"]] == [2, 2], view["workers"]

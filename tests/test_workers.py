"""``router serve --workers N``: what the parent says about per-worker state, a worker id on every log
line (each child's own lines and its access lines), and admin answers that name the worker."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

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

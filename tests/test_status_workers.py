"""``/admin/status`` under ``router serve --workers 2``: whichever worker answers, its traffic and failed
requests are every worker's (summed through the shared worker directory)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import copy_routes
from tests.serving import free_port, serve_process, stop

WAIT = 30.0  # seconds any one wait may take
HI = json.dumps({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}).encode()


def _call(port: int, path: str, body: bytes | None = None) -> tuple[int, Any]:
    """One request on a new connection (so either worker may answer it)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:
        return 0, None


def _until(check: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_worker_answers_with_the_whole_gateways_traffic(tmp_path: Path) -> None:
    config, port = copy_routes(tmp_path / "routes.d"), free_port()
    proc = serve_process(config, port, "--workers", "2")
    try:
        _until(lambda: _call(port, "/healthz")[0] == 200, "the gateway to come up")
        sent = 40  # on new connections: both workers serve some (the kernel spreads them)
        for _ in range(sent):
            assert _call(port, "/v1/chat/completions", HI)[0] == 200
        answered: set[int] = set()

        def whole() -> bool:
            code, doc = _call(port, "/admin/status")
            if code != 200 or doc["traffic"]["totals"]["requests"] != sent:
                return False
            answered.add(doc["worker"])
            return answered == {0, 1}

        _until(whole, f"both workers to report all {sent} requests")
        _, doc = _call(port, "/admin/status")
        assert len(doc["config"]["workers"]) == 2 and doc["listen"].endswith(f":{port}")
    finally:
        stop(proc)

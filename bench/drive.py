"""Drive load from separate processes: ``wrk`` when installed (duration-bounded runs), else one
long-lived ``bench/load.py serve`` worker; request-count-bounded runs and streams always go to the
worker (wrk can neither stop after N requests nor time individual SSE events).

Every method returns the JSON shape of ``bench/load.py`` (``rps``, ``errors``, ``latency_ms`` …),
whichever tool produced it.
"""

from __future__ import annotations

import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson

LOAD_PY = Path(__file__).with_name("load.py")
WRK_MARK = "BENCH_JSON "

_WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"mean":%f,"max":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send load: a URL, the JSON body and extra headers."""

    name: str
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    """A Lua long-bracket string literal (no escaping needed) that ``text`` cannot close early."""
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def wrk_script(target: Target) -> str:
    """A wrk Lua script that POSTs ``target.body`` and prints a JSON summary line."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(target.body.decode())}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in target.headers.items()]
    return "\n".join(lines) + "\n" + _WRK_DONE


def run_wrk(wrk: str, target: Target, concurrency: int, duration: float) -> dict[str, Any]:
    """One wrk run (1 thread, ``concurrency`` connections, whole seconds) as a load.py-shaped dict."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(wrk_script(target))
        script = fh.name
    try:
        cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
               "-s", script, target.url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    finally:
        Path(script).unlink(missing_ok=True)
    mark = [ln for ln in proc.stdout.splitlines() if ln.startswith(WRK_MARK)]
    if proc.returncode != 0 or not mark:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    raw = orjson.loads(mark[-1][len(WRK_MARK):])
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    elapsed = raw["duration_us"] / 1e6
    ok = max(0, raw["requests"] - raw["status"])
    latency = {k: raw[k] / 1000 for k in ("p50", "p90", "p99", "mean", "max")}
    problems = [f"{k}={raw[k]}" for k in ("connect", "read", "write", "status", "timeout") if raw[k]]
    return {"requests": ok, "errors": errors, "first_error": ", ".join(problems) or None, "elapsed_s": elapsed,
            "rps": ok / elapsed if elapsed > 0 else 0.0, "latency_ms": latency,
            "concurrency": concurrency, "tool": "wrk"}


class Driver:
    """Runs bounded load from processes separate from the servers under test.

    ``use_wrk``: duration-bounded runs go to wrk when it is installed. Everything else goes to one
    ``bench/load.py serve`` worker, started on first use and stopped by ``close()``.
    """

    def __init__(self, use_wrk: bool = True) -> None:
        self.wrk = wrk_path() if use_wrk else None
        self._worker: subprocess.Popen[bytes] | None = None

    @property
    def tool(self) -> str:
        if self.wrk is None:
            return "bench/load.py (aiohttp)"
        return "wrk for duration-bounded runs, bench/load.py for count-bounded runs and streams"

    def plain(self, target: Target, concurrency: int, *, duration: float | None = None,
              requests: int | None = None) -> dict[str, Any]:
        """Closed-loop non-stream load bounded by ``duration`` seconds and/or ``requests``."""
        if self.wrk is not None and duration is not None and requests is None:
            return run_wrk(self.wrk, target, concurrency, duration)
        job = {"mode": "plain", "concurrency": concurrency, "requests": requests, "duration": duration}
        return self._job(target, job, (duration or 0) + (requests or 0) / 20 + 60)

    def stream(self, target: Target, requests: int) -> dict[str, Any]:
        """``requests`` sequential streams, each event timed."""
        return self._job(target, {"mode": "stream", "requests": requests}, 60 + requests * 5)

    def _job(self, target: Target, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        worker = self._ensure_worker()
        assert worker.stdin is not None and worker.stdout is not None
        job.update(url=target.url, body=target.body.decode(), headers=target.headers)
        worker.stdin.write(orjson.dumps(job) + b"\n")
        worker.stdin.flush()
        line = _read_line(worker.stdout, timeout)
        if not line:
            self.close()
            raise RuntimeError(f"load.py worker gave no result within {timeout:.0f}s for {target.url}")
        result: dict[str, Any] = orjson.loads(line)
        if "error" in result:
            raise RuntimeError(f"load.py: {result['error']}")
        return result

    def _ensure_worker(self) -> subprocess.Popen[bytes]:
        if self._worker is None or self._worker.poll() is not None:
            self._worker = subprocess.Popen([sys.executable, str(LOAD_PY), "serve"], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE)
        return self._worker

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if worker.stdin is not None:
            worker.stdin.close()
        try:
            worker.wait(5)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
        if worker.stdout is not None:
            worker.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a pipe, or b"" when none arrives within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(min(1.0, deadline - time.monotonic())):
                return stream.readline()
    return b""

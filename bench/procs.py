"""Start, probe and stop the benchmark's server processes; read their memory.

Every process runs on 127.0.0.1 in its own process group, logs to a file under the run's work dir,
and is stopped by its own pid (SIGTERM, then SIGKILL to its group after a grace period).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

try:
    import psutil
except ImportError:  # /proc fallback below
    psutil = None

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CONFIG_OVERRIDES = BENCH_DIR / "config"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(slots=True)
class Server:
    """One started server process (the simulator, the gateway, the bare proxy or LiteLLM)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        """Poll ``GET path`` until it answers (any HTTP status); raise with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: the workers go too
                self.proc.wait(grace)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start(name: str, cmd: list[str], work: Path, env: dict[str, str] | None = None,
          repo_on_path: bool = True) -> Server:
    """Start ``cmd`` (with ``{port}`` filled in) in its own process group, logging to ``work``."""
    port = free_port()
    log = work / (re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") + ".log")
    full_env = {**os.environ, **({"PYTHONPATH": str(REPO)} if repo_on_path else {}), **(env or {})}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([c.format(port=port) for c in cmd], stdout=fh, stderr=subprocess.STDOUT,
                                cwd=REPO, env=full_env, start_new_session=True)
    return Server(name, port, proc, log)


def start_simulator(work: Path, chunks: int) -> Server:
    server = start("simulator", [sys.executable, "-m", "router", "sim", "--port", "{port}",
                                 "--chunks", str(chunks)], work)
    server.wait_ready("/v1/models")
    return server


def gateway_config(work: Path) -> Path:
    """The shipped ``routes.d`` with the bench overrides (provider → simulator, auth off) on top.

    The overrides read the simulator's URL from ``${BENCH_SIM_URL}``, resolved by the gateway.
    """
    directory = work / "gateway-config"
    directory.mkdir(parents=True, exist_ok=True)
    for src in [*sorted((REPO / "routes.d").glob("*.yaml")), *sorted(CONFIG_OVERRIDES.glob("*.yaml"))]:
        shutil.copy(src, directory / src.name)
    return directory


def start_gateway(work: Path, config: Path, sim_url: str, workers: int = 1) -> Server:
    name = "gateway" if workers <= 1 else f"gateway --workers {workers}"
    server = start(name, [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", "{port}",
                          "--workers", str(workers)], work, env={"BENCH_SIM_URL": sim_url})
    server.wait_ready("/healthz")
    return server


def start_bare(work: Path, sim_url: str) -> Server:
    server = start("bare", [sys.executable, str(BENCH_DIR / "bare_proxy.py"), "--port", "{port}",
                            "--upstream", sim_url], work)
    server.wait_ready("/healthz")
    return server


# --- memory ------------------------------------------------------------------------------------

def _proc_status(pid: int, field_name: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/PID/status in bytes (0 when unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a ``--workers`` gateway or a uvicorn supervisor has children)."""
    if psutil is not None:
        try:
            return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
        except psutil.Error:
            return [pid]
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parts = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(parts[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def rss_bytes(pid: int) -> int:
    """Current resident set size of ``pid`` and its descendants."""
    total = 0
    for p in process_tree(pid):
        if psutil is not None:
            try:
                total += psutil.Process(p).memory_info().rss
                continue
            except psutil.Error:
                continue
        total += _proc_status(p, "VmRSS")
    return total


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size (VmHWM) of ``pid`` and its descendants; current RSS if unknown."""
    peak = sum(_proc_status(p, "VmHWM") for p in process_tree(pid))
    return peak or rss_bytes(pid)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by ``pid`` and its descendants."""
    total = 0.0
    for p in process_tree(pid):
        if psutil is not None:
            try:
                times = psutil.Process(p).cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
            continue
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            continue
    return total

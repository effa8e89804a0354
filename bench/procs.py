"""Start, probe and stop the benchmark's server processes; read their memory.

Every process runs on 127.0.0.1 in its own process group, logs to a file under the run's work dir,
and is stopped by its own pid (SIGTERM, then SIGKILL to its group after a grace period). That
includes the ``redis-server`` behind the ``state:redis`` gateways (Debian's, without persistence).
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
from typing import Any, Self

try:
    import psutil
except ImportError:  # /proc fallback below
    psutil = None

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CONFIG_OVERRIDES = BENCH_DIR / "config"
REDIS_SUFFIX = " state:redis"  # a gateway subject with ``state: {backend: redis}``; its name without it: memory
KEY_SUFFIX = " +key"  # a gateway subject whose requests carry a client key with limits (``bench/config_keys``, whose ``06-auth.yaml`` replaces the bench one)
KEYS_OVERLAY = BENCH_DIR / "config_keys"
CLIENT_KEY = "bench-client-key"  # the key of bench/config_keys/06-auth.yaml (a benchmark's, not a secret)
REDIS_START_TIMEOUT = 10.0  # seconds for redis-server to answer PING


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


def gateway_config(work: Path, redis: dict[str, str] | None = None, keys: bool = False) -> Path:
    """The shipped ``routes.d`` with the bench overrides (provider → simulator, auth off) on top.

    The overrides read the simulator's URL from ``${BENCH_SIM_URL}``, resolved by the gateway. With
    ``redis`` (settings beyond the shipped defaults, usually none), a copy in its own directory that
    adds ``05-state.yaml``: ``state: {backend: redis}`` at ``${BENCH_REDIS_URL}``. With ``keys``, the
    client key of ``bench/config_keys`` too (``auth.mode: strict``; send ``client_headers``).
    """
    directory = work / ("gateway-config" + ("-keys" if keys else "") + ("" if redis is None else "-redis"))
    directory.mkdir(parents=True, exist_ok=True)
    overlays = [*sorted(CONFIG_OVERRIDES.glob("*.yaml")), *(sorted(KEYS_OVERLAY.glob("*.yaml")) if keys else [])]
    for src in [*sorted((REPO / "routes.d").glob("*.yaml")), *overlays]:
        shutil.copy(src, directory / src.name)
    if redis is not None:
        (directory / "05-state.yaml").write_text(
            "# bench/procs.py: the state:redis gateways share their state through the run's redis-server\n"
            "state:\n  backend: redis\n  url: \"${BENCH_REDIS_URL}\"\n  prefix: bench\n"
            + "".join(f"  {key}: {value}\n" for key, value in redis.items()))
    return directory


def client_headers(name: str) -> dict[str, str]:
    """What a subject's requests carry: the client key for a ``+key`` gateway, else nothing."""
    return {"Authorization": f"Bearer {CLIENT_KEY}"} if KEY_SUFFIX in name else {}


def start_gateway(work: Path, config: Path, sim_url: str, workers: int = 1, redis_url: str | None = None,
                  keys: bool = False) -> Server:
    """``router serve`` on ``config``; ``redis_url`` fills ``${BENCH_REDIS_URL}`` of a redis config;
    ``keys``: the config holds the bench's client key (the name says so)."""
    name = (("gateway" if workers <= 1 else f"gateway --workers {workers}") + (KEY_SUFFIX if keys else "")
            + (REDIS_SUFFIX if redis_url else ""))
    env = {"BENCH_SIM_URL": sim_url, **({"BENCH_REDIS_URL": redis_url} if redis_url else {})}
    server = start(name, [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", "{port}",
                          "--workers", str(workers)], work, env=env)
    server.wait_ready("/healthz")
    return server


def start_bare(work: Path, sim_url: str) -> Server:
    server = start("bare", [sys.executable, str(BENCH_DIR / "bare_proxy.py"), "--port", "{port}",
                            "--upstream", sim_url], work)
    server.wait_ready("/healthz")
    return server


# --- redis-server (the state of the ``state:redis`` gateways) -------------------------------------

def start_redis(work: Path) -> Server:
    """Debian's ``redis-server`` on a free loopback port, without persistence; RuntimeError (a note
    in the report, never a crash) when it is not installed or does not answer PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    server = start("redis-server", [binary, "--port", "{port}", "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(work)], work, repo_on_path=False)
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            if redis_call(server.port, "PING") == b"PONG":
                return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server on port {server.port} did not answer PING in {REDIS_START_TIMEOUT:.0f}s")


def redis_url(server: Server, db: int = 0) -> str:
    return f"redis://127.0.0.1:{server.port}/{db}"


def redis_call(port: int, command: str, timeout: float = 2.0) -> bytes:
    """One inline command's reply: a simple string's text (``PONG``) or a bulk string's bytes (``INFO``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command.encode() + b"\r\n")
        reply = b""
        while b"\r\n" not in reply:
            reply += _recv(sock)
        head, _, rest = reply.partition(b"\r\n")
        if head[:1] != b"$":
            return head[1:]
        size = int(head[1:])
        while len(rest) < size:
            rest += _recv(sock)
        return rest[:size]


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("redis-server closed the connection")
    return chunk


def redis_stats(server: Server) -> dict[str, Any]:
    """Version, commands processed and CPU seconds of a running redis-server (``INFO``)."""
    info = dict(line.split(":", 1) for line in redis_call(server.port, "INFO").decode().splitlines()
                if ":" in line and not line.startswith("#"))
    return {"version": info.get("redis_version"), "commands": int(info.get("total_commands_processed", 0)),
            "cpu_s": float(info.get("used_cpu_user", 0)) + float(info.get("used_cpu_sys", 0))}


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

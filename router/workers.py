"""``router serve --workers N``: N gateway processes accepting on one socket that this process bound.

The parent binds the port (``listen.bind``: no ``SO_REUSEPORT``, so a second gateway on the same port
fails instead of joining this one) and hands the listening sockets to its children, which accept on
them; the kernel gives each new connection to whichever child accepts it first. It also creates the
private directory through which the workers share their metric values and reload status
(``router.worker_dir``), and removes it when they have all exited.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from router import worker_dir


def serve_workers(n: int, config_dir: Path, host: str, sockets: list[socket.socket], grace: float,
                  extra: list[str] | None = None) -> int:
    """Start ``n`` single-worker gateways on the bound ``sockets``; forward SIGTERM/SIGINT/SIGHUP;
    wait for all.

    Each worker is a whole gateway with its own state store: cooldowns, sticky sessions and stored
    responses are per worker unless ``state: {backend: redis}`` shares them (round-robin positions
    always are). Only worker 0 logs the served-config summary.
    """
    shared = worker_dir.create()
    try:
        return _run(n, config_dir, host, sockets, grace, shared, extra or [])
    finally:
        worker_dir.remove(shared)


def _run(n: int, config_dir: Path, host: str, sockets: list[socket.socket], grace: float, shared: Path,
         extra: list[str]) -> int:
    fds = [s.fileno() for s in sockets]
    cmd = [sys.executable, "-m", "router", "serve", "--config", str(config_dir), "--host", host,
           *(a for fd in fds for a in ("--listen-fd", str(fd))), "--worker-dir", str(shared), *extra]
    procs: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    # the workers start with SIGHUP ignored (an ignored signal stays ignored across exec) until their
    # config watcher takes it over: a reload asked for while one starts must not kill it, and it loads
    # the current config anyway
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        procs.extend(subprocess.Popen([*cmd, "--worker", str(i)], pass_fds=fds) for i in range(n))
    finally:
        for s in sockets:  # the children hold the port now: when they have all closed it, it is free
            s.close()
    signal.signal(signal.SIGHUP, forward)
    worker_dir.announce_workers(shared, [p.pid for p in procs])
    deadline: float | None = None
    while any(p.poll() is None for p in procs):
        if deadline is None and any(p.poll() is not None for p in procs):
            deadline = time.monotonic() + grace + 5  # one died: stop the others too
            forward(signal.SIGTERM, None)
        if deadline is not None and time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
    return max((p.returncode or 0) for p in procs)

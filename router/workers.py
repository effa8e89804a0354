"""``router serve --workers N``: N independent processes sharing one port through SO_REUSEPORT."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


def serve_workers(n: int, config_dir: Path, host: str, port: int, grace: float,
                  extra: list[str] | None = None) -> int:
    """Start ``n`` single-worker gateways on ``host:port``; forward SIGTERM/SIGINT; wait for all.

    Each worker is a whole gateway with its own state store: cooldowns and round-robin positions
    are per worker (a shared store is future work).
    """
    cmd = [sys.executable, "-m", "router", "serve", "--config", str(config_dir), "--host", host,
           "--port", str(port), "--workers", "1", "--reuse-port", *(extra or [])]
    procs = [subprocess.Popen(cmd) for _ in range(n)]

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
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

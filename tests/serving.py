"""``router serve`` in a subprocess, for what only a whole process shows (signals, ports, exit codes)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_process(config: Path, port: int, *args: str, stderr: int = subprocess.STDOUT) -> subprocess.Popen[bytes]:
    """``python -m router serve --config CONFIG --port PORT ARGS...`` from the checkout; stdout piped,
    stderr merged into it unless ``stderr`` says otherwise."""
    return subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(config), "--port", str(port),
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr)


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Until GET /healthz answers 200; fails the test when the process exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                async with s.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered /healthz (exit code {proc.poll()})")


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; the pipes are closed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()

"""A real redis-server on a free loopback port for tests (no mocks), restartable on the same port.

CI installs the Debian package `redis-server` when it is missing (.ci/run).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 10.0  # seconds for redis-server to answer PING


def _free_port() -> int:
    # redis-server takes no port 0: bind one, read it, release it (a tiny race, acceptable in tests)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process on loopback, without persistence, restartable on the same port."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.args = args  # more redis-server options, e.g. ("--requirepass", "...")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: install the Debian package redis-server (.ci/run does)"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ping()

    def _wait_ping(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, "redis-server exited at start"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # up (with or without a password)
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"redis-server on port {self.port} did not answer PING in {START_TIMEOUT}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


def server_fixture(*args: str) -> Callable[..., Iterator[RedisServer]]:
    """A module-scoped pytest fixture: one redis-server (with ``args``) for a test module, stopped after it."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
        instance = RedisServer(tmp_path_factory.mktemp("redis"), *args)
        instance.start()
        yield instance
        instance.stop()

    return server

"""Ports: a port in use is one clear line and a non-zero exit, never a silently shared port."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from router.listen import ListenError, bind, url
from tests.conftest import copy_routes
from tests.serving import free_port, serve_process, stop


def _serve(config: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    return serve_process(config, port, "--workers", str(workers), stderr=subprocess.PIPE)


def _config_dir_served(port: int) -> str | None:
    """The config dir of whichever gateway answers on ``port`` (None while nothing answers)."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/config", timeout=2) as r:
            return str(json.loads(r.read())["config_dir"])
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "workers2"])
def test_second_gateway_on_a_taken_port_exits_with_one_line(tmp_path: Path, workers: int) -> None:
    first_dir, second_dir = copy_routes(tmp_path / "first"), copy_routes(tmp_path / "second")
    port = free_port()
    first = _serve(first_dir, port, workers)
    try:
        deadline = time.monotonic() + 30
        while _config_dir_served(port) is None:
            assert first.poll() is None and time.monotonic() < deadline, "first gateway did not come up"
            time.sleep(0.1)
        for second_workers in (2, 1):
            second = _serve(second_dir, port, second_workers)
            try:
                out, err = second.communicate(timeout=15)  # a second gateway that joined would not exit
            finally:
                stop(second)
            text = err.decode()
            assert second.returncode != 0
            lines = [line for line in text.splitlines() if line.strip()]
            assert len(lines) == 1, text
            assert str(port) in lines[0] and "--port" in lines[0] and "server.port" in lines[0]
            assert "in use" in lines[0]
            assert "Traceback" not in text + out.decode() and "listening" not in text + out.decode()
        # every request still reaches the first gateway's config
        assert {_config_dir_served(port) for _ in range(20)} == {str(first_dir)}
        assert first.poll() is None
    finally:
        stop(first)


def test_bind_refuses_a_taken_port_and_names_the_options() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        port = taken[0].getsockname()[1]
        assert url(taken[0]) == f"http://127.0.0.1:{port}"
        with pytest.raises(ListenError) as e:
            bind("127.0.0.1", port)
        assert f"port {port} on 127.0.0.1 is already in use" in str(e.value)
        assert "--port N or server.port" in str(e.value)
    finally:
        for s in taken:
            s.close()
    again = bind("127.0.0.1", port)  # released: SO_REUSEADDR lets a restart take it at once
    for s in again:
        s.close()


def test_bind_explains_other_failures() -> None:
    with pytest.raises(ListenError, match="not a TCP port .*--port N or server.port"):
        bind("127.0.0.1", 70000)
    with pytest.raises(ListenError, match="change --host or server.host"):
        bind("host.invalid", 0)
    with pytest.raises(ListenError, match="not an address of this machine: change --host or server.host"):
        bind("192.0.2.1", 0)  # TEST-NET-1: never assigned to this machine


def test_bound_socket_is_not_shared_through_so_reuseport() -> None:
    socks = bind("127.0.0.1", 0)
    try:
        assert socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        intruder = socket.socket()
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with intruder, pytest.raises(OSError):
            intruder.bind(socks[0].getsockname())
    finally:
        for s in socks:
            s.close()

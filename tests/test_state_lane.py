"""The admission lane (router.state_lane) on a real redis-server: replies matched in order under
concurrency, the same answers as redis-py's script call, NOSCRIPT after a flush, a restart and a
stopped server failing calls fast and the next call reconnecting."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.state_lane import Lane
from router.state_redis import RedisState
from tests.redis_server import RedisServer

T0 = 1_700_000_000_000  # ms


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    instance = RedisServer(tmp_path)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    connection = Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=0.5)
    yield connection
    await connection.aclose()


async def test_concurrent_calls_get_their_own_replies(client: Redis) -> None:
    lane = Lane(client, timeout=2.0)
    try:
        replies = await asyncio.gather(*(lane.call("ECHO", f"r{i}") for i in range(300)))
        assert replies == [f"r{i}".encode() for i in range(300)]
        with pytest.raises(ResponseError, match="unknown command"):
            await lane.call("NO-SUCH-COMMAND")
        assert await lane.call("PING") in (b"PONG", "PONG")  # an error reply leaves the order intact
    finally:
        await lane.close()


async def test_the_lane_answers_as_redis_py_does_and_reloads_a_flushed_script(client: Redis) -> None:
    through_lane = RedisState(client, prefix="a", lane_timeout=2.0)
    direct = RedisState(client, prefix="b")
    cells = [("key:k:rpm:2", 30.0, 2, 1), ("team:t:tpm:100", 0.6, 100, 80)]
    try:
        assert await through_lane.reserve_all("t", cells, T0) == await direct.reserve_all("t", cells, T0)
        await client.script_flush()  # a restarted Redis has no scripts: NOSCRIPT, loaded once, run again
        assert await through_lane.reserve_all("t", cells, T0) == await direct.reserve_all("t", cells, T0)
    finally:
        await through_lane.close()


async def test_a_restart_fails_the_waiting_calls_and_the_next_call_reconnects(server: RedisServer,
                                                                              client: Redis) -> None:
    lane = Lane(client, timeout=1.0)
    try:
        assert await lane.call("ECHO", "before") == b"before"
        server.stop()
        with pytest.raises((RedisConnectionError, OSError)):
            await lane.call("ECHO", "down")
        server.start()  # same port
        assert await lane.call("ECHO", "after") == b"after"
    finally:
        await lane.close()


async def test_a_stopped_server_times_out_then_the_lane_recovers(server: RedisServer, client: Redis) -> None:
    lane = Lane(client, timeout=0.2)
    assert server.process is not None
    try:
        assert await lane.call("ECHO", "x") == b"x"
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = asyncio.get_running_loop().time()
            results = await asyncio.gather(*(lane.call("ECHO", str(i)) for i in range(5)), return_exceptions=True)
            assert all(isinstance(r, RedisTimeoutError) for r in results), results
            assert asyncio.get_running_loop().time() - started < 1.0  # bounded by the timeout, not by Redis
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert await lane.call("ECHO", "back") == b"back"  # a new connection: no late reply mixed in
    finally:
        await lane.close()


async def test_a_closed_lane_refuses_calls(client: Redis) -> None:
    lane = Lane(client, timeout=1.0)
    assert await lane.call("ECHO", "x") == b"x"
    await lane.close()
    with pytest.raises(RedisConnectionError):
        await lane.call("ECHO", "y")

"""router/state_limits.py on a real redis-server: a gateway's concurrency leases taken at admission,
given back in the background (batched), kept while Redis is down, renewed once a sync for the long
requests, handed over by a reload to the same Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from router.accounts import StateStore
from router.shared_state import SharedState
from router.state_settings import StateSettings
from tests.redis_server import RedisServer, server_fixture
from tests.serving import free_port

server = server_fixture()
SLOT = ("key:k:concurrency:2", 2)
RPM = ("key:k:rpm:100", 0.6, 100, 1)


def settings(port: int, **changes: object) -> StateSettings:
    values: dict[str, object] = {"backend": "redis", "url": f"redis://127.0.0.1:{port}/0", "prefix": "t",
                                 "sync_interval": 3600.0, "timeout": 1.0}  # the tests call sync() themselves
    values.update(changes)
    return StateSettings(**values)  # type: ignore[arg-type]  # test data of the right types


async def gateway(port: int, previous: SharedState | None = None, **changes: object) -> SharedState:
    shared = SharedState(settings(port, **changes), StateStore(), lambda: [])
    shared.start(previous)
    await shared.sync()
    return shared


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    async with Redis(host="127.0.0.1", port=server.port) as connection:
        await connection.flushall()
        yield connection


@pytest.fixture
async def shared(server: RedisServer, client: Redis) -> AsyncIterator[SharedState]:
    state = await gateway(server.port)
    yield state
    await state.close()


async def held(client: Redis, shared: SharedState) -> list[str]:
    members = await client.zrange(shared.redis.limit_key("k", SLOT[0]), 0, -1)
    return sorted(m.decode() for m in members)


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the time given"
        await asyncio.sleep(0.01)


async def test_a_lease_is_taken_with_the_rates_and_released_in_the_background(shared: SharedState,
                                                                            client: Redis) -> None:
    limits = shared.limits
    replies = [await limits.reserve_limits("k", [RPM], [SLOT]) for _ in range(3)]
    assert [r[0] for r in replies if r] == [0, 0, 2]  # the third: the concurrency cell (after the one rate cell)
    first, second = (r[3] for r in replies[:2] if r)
    assert first is not None and second is not None and replies[2] and replies[2][3] is None
    assert len(await held(client, shared)) == 2 and len(limits.leases.live) == 2
    first()
    second()  # while the first release is being written: one more pipelined call, not one task each
    assert len(shared._tasks) == 1
    await until(lambda: _empty(client, shared))
    assert not limits.leases.live and not limits.leases.released


async def _empty(client: Redis, shared: SharedState) -> bool:
    return not await held(client, shared)


async def test_a_release_while_redis_is_down_is_sent_when_it_is_back(shared: SharedState, client: Redis) -> None:
    reply = await shared.limits.reserve_limits("k", [], [SLOT])
    assert reply is not None and reply[3] is not None
    shared.up = False  # as a failed sync marks it
    reply[3]()
    await asyncio.sleep(0.05)
    assert len(await held(client, shared)) == 1 and len(shared.limits.leases.released) == 1  # kept
    await shared.sync()  # Redis answers: up again, the kept release sent
    assert not await held(client, shared) and not shared.limits.leases.released


async def test_a_failed_round_trip_gives_its_lease_back() -> None:
    shared = SharedState(settings(free_port(), timeout=0.2, connect_timeout=0.2), StateStore(), lambda: [])
    shared.start()
    try:
        shared.up = True  # not known to be down yet: the admission tries (the script may run, the reply be lost)
        assert await shared.limits.reserve_limits("k", [], [SLOT]) is None
        await asyncio.wait(shared._tasks, timeout=2)  # the release tried at once fails too: kept
        assert list(shared.limits.leases.released) == [f"{shared.limits.leases.gateway}:1"]
        assert not shared.limits.leases.live
    finally:
        await shared.close()


async def scores(client: Redis, key: str) -> dict[str, float]:
    return {member.decode(): float(score) for member, score in await client.zrange(key, 0, -1, withscores=True)}


async def test_long_requests_leases_are_renewed_once_a_sync(shared: SharedState, client: Redis) -> None:
    limits = shared.limits
    for _ in range(2):
        assert (await limits.reserve_limits("k", [], [SLOT])) is not None
    key = shared.redis.limit_key("k", SLOT[0])
    before = await scores(client, key)
    old, young = list(limits.leases.live)
    keys, _ = limits.leases.live[old]
    limits.leases.live[old] = (keys, time.monotonic() - limits.leases.ttl / 2)  # a long request
    await asyncio.sleep(0.01)
    await shared.sync()
    after = await scores(client, key)
    assert after[old] > before[old] and after[young] == before[young]
    assert time.monotonic() - limits.leases.live[old][1] < 1  # written again: not due before a third of the ttl


async def test_a_reload_to_the_same_redis_hands_its_leases_over(server: RedisServer, client: Redis) -> None:
    old = await gateway(server.port)
    reply = await old.limits.reserve_limits("k", [], [SLOT])
    assert reply is not None and reply[3] is not None
    new = await gateway(server.port, previous=old, timeout=2.0)  # another setting, the same keys
    other = await gateway(server.port, previous=new, prefix="elsewhere")
    try:
        assert new.limits.leases is old.limits.leases and other.limits.leases is not new.limits.leases
        await old.close()
        reply[3]()  # the request ends after the reload: its release goes through the new connection
        await until(lambda: _empty(client, new))
    finally:
        await new.close()
        await other.close()

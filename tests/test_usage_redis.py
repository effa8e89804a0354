"""Usage with ``state.backend: redis`` against a real redis-server: two gateways' rows summed in
``/admin/usage``, increments kept while Redis is down and sent when it is back, the ``source`` flag,
the rows a gateway still holds sent at shutdown, the Redis layout."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from router.usage import day_of
from tests.conftest import Harness, copy_routes, start_gateway
from tests.redis_server import RedisServer, server_fixture

server = server_fixture()
HI = [{"role": "user", "content": "count me"}]


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    connection = Redis(host="127.0.0.1", port=server.port)
    yield connection
    await connection.aclose()


def config(tmp_path: Path, name: str, port: int, prefix: str, sync: str = "100ms", lease_ttl: str = "30s") -> Path:
    directory = copy_routes(tmp_path / name)
    (directory / "05-state.yaml").write_text(
        f"state: {{backend: redis, url: 'redis://127.0.0.1:{port}/0', prefix: {prefix}, sync_interval: {sync}, "
        f"lease_ttl: {lease_ttl}}}\n"
        "prices:\n  'sim-openai/*': {input: 2.0, output: 4.0}\n")
    return directory


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def chat(h: Harness, model: str = "gpt-5") -> Any:
    status, body, _ = await h.post_json("/v1/chat/completions", {"model": model, "messages": HI})
    assert status == 200, body
    return body["usage"]


async def report(h: Harness, query: str = "?group_by=model") -> Any:
    async with h.session.get(h.url + "/admin/usage" + query) as r:
        assert r.status == 200, await r.text()
        return await r.json()


@pytest.fixture
async def pair(tmp_path: Path, server: RedisServer) -> AsyncIterator[tuple[Harness, Harness]]:
    prefix = "u" + uuid.uuid4().hex[:8]
    a = await start_gateway(config(tmp_path, "a", server.port, prefix))
    b = await start_gateway(config(tmp_path, "b", server.port, prefix))
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_two_gateways_usage_is_summed(pair: tuple[Harness, Harness], client: Redis) -> None:
    a, b = pair
    used = [await chat(a), await chat(a), await chat(b)]
    await chat(b, "gpt-4o")

    async def summed() -> bool:
        rows = {r["model"]: r for r in (await report(a))["rows"]}
        return rows.get("gpt-5", {}).get("requests") == 3 and rows.get("gpt-4o", {}).get("requests") == 1

    await until(summed)
    doc = await report(b)
    assert doc["source"] == "redis" and doc["complete"] is True
    row = next(r for r in doc["rows"] if r["model"] == "gpt-5")
    assert row["input_tokens"] == sum(u["prompt_tokens"] for u in used)
    assert row["output_tokens"] == sum(u["completion_tokens"] for u in used)
    assert row["cost_usd"] == pytest.approx((row["input_tokens"] * 2 + row["output_tokens"] * 4) / 1e6)
    # the layout: one hash per day, a field per row and counter, expiring after the retention
    prefix = a.gateway.current.state.prefix
    key = f"{{{prefix}:usage}}:{day_of(time.time())}"
    fields = await client.hgetall(key)
    assert int(fields[b"\x1f\x1fgpt-5\x1frequests"]) == 3
    ttl = await client.ttl(key)
    assert 399 * 86_400 < ttl <= 401 * 86_400


async def test_redis_down_keeps_the_increments_and_sends_them_when_back(
        pair: tuple[Harness, Harness], server: RedisServer) -> None:
    a, b = pair
    await until(lambda: _up(a))
    server.stop()  # no persistence: it comes back empty, so all it holds after is what was kept
    try:
        await until(lambda: _down(a))
        for _ in range(3):
            await chat(a)
        doc = await report(a)  # this process's own rows, said to be incomplete
        assert (doc["source"], doc["complete"], doc["totals"]["requests"]) == ("local", False, 3)
    finally:
        server.start()

    async def sent() -> bool:  # read through the other gateway: what a kept reached Redis
        doc = await report(b)
        return bool(doc["source"] == "redis" and doc["totals"]["requests"] == 3)

    await until(sent, timeout=15.0)


async def _down(h: Harness) -> bool:
    shared = h.gateway.shared
    return shared is not None and not shared.up


async def test_a_gateway_that_stops_sends_what_it_still_holds(tmp_path: Path, server: RedisServer,
                                                              client: Redis) -> None:
    prefix = "s" + uuid.uuid4().hex[:8]
    h = await start_gateway(config(tmp_path, "slow", server.port, prefix, sync="1h", lease_ttl="3h"))
    try:
        await until(lambda: _up(h))
        await chat(h)
        await asyncio.sleep(0.05)  # recorded after the response
        assert await client.exists(f"{{{prefix}:usage}}:{day_of(time.time())}") == 0  # not synced yet
    finally:
        await h.close()
    fields = await client.hgetall(f"{{{prefix}:usage}}:{day_of(time.time())}")
    assert int(fields[b"\x1f\x1fgpt-5\x1frequests"]) == 1


async def _up(h: Harness) -> bool:
    shared = h.gateway.shared
    return shared is not None and shared.up


async def test_unsent_rows_show_at_once_and_a_range_reads_every_day(pair: tuple[Harness, Harness]) -> None:
    a, _ = pair
    await until(lambda: _up(a))
    await chat(a)
    today = date.fromisoformat(day_of(time.time()))
    query = f"?from={today - timedelta(days=399)}&to={today}&group_by="  # 400 days, one round trip

    async def there() -> bool:  # sent or not yet (a send in flight may hide it for a moment)
        doc = await report(a, query)
        return bool(doc["source"] == "redis" and doc["totals"]["requests"] == 1)

    await until(there, timeout=2.0)


async def test_a_client_sees_every_gateways_use_of_its_limits(tmp_path: Path, server: RedisServer) -> None:
    prefix = "k" + uuid.uuid4().hex[:8]
    auth = "auth:\n  mode: strict\n  api_keys:\n    - {name: me, key: sk-me-usage, limits: {rpm: 5}}\n"
    gateways = []
    for name in ("ka", "kb"):
        directory = config(tmp_path, name, server.port, prefix)
        (directory / "00-server.yaml").write_text(auth)
        gateways.append(await start_gateway(directory))
    a, b = gateways
    me = {"Authorization": "Bearer sk-me-usage"}
    try:
        await until(lambda: _up(a))
        await until(lambda: _up(b))
        for h in (a, a, b):
            status, _, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI}, headers=me)
            assert status == 200

        async def seen() -> bool:
            async with b.session.get(b.url + "/v1/usage?group_by=", headers=me) as r:
                doc = await r.json()
            return bool(doc["source"] == "redis" and doc["totals"]["requests"] == 3)

        await until(seen)
        for h in (a, b):
            async with h.session.get(h.url + "/v1/usage", headers=me) as r:
                limits = (await r.json())["limits"]
            assert limits["requests"]["limit"] == 5 and limits["requests"]["remaining"] == 2  # reading took none
    finally:
        for h in gateways:
            await h.close()


async def test_steady_traffic_costs_one_round_trip_a_sync(tmp_path: Path, server: RedisServer, client: Redis) -> None:
    """Rows that change while a send is under way wait for the next sync (they used to be sent at once,
    round trip after round trip, as long as requests kept coming)."""
    prefix = "f" + uuid.uuid4().hex[:8]
    h = await start_gateway(config(tmp_path, "steady", server.port, prefix, sync="1h", lease_ttl="3h"))
    try:
        await until(lambda: _up(h))
        sync = h.gateway.usage.sync
        assert sync is not None
        await chat(h)
        await asyncio.sleep(0.05)
        sends = 0
        original = sync._send

        async def counted(taken: Any) -> bool:
            nonlocal sends
            sends += 1
            if sends == 1:  # a request finishes while the send is under way: its row is dirty again
                await chat(h)
                await asyncio.sleep(0.05)
            return await original(taken)

        sync._send = counted  # type: ignore[method-assign]  # counting the round trips of one flush
        assert await sync.flush() is True and sends == 1
        fields = await client.hgetall(f"{{{prefix}:usage}}:{day_of(time.time())}")
        assert int(fields[b"\x1f\x1fgpt-5\x1frequests"]) == 1  # the second request waits for the next sync
        sync._send = original  # type: ignore[method-assign]
        assert await sync.flush() is True
        fields = await client.hgetall(f"{{{prefix}:usage}}:{day_of(time.time())}")
        assert int(fields[b"\x1f\x1fgpt-5\x1frequests"]) == 2
    finally:
        await h.close()

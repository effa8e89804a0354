"""Budgets with ``state.backend: redis`` (two in-process gateways, one real redis-server): their spend
adds up (one uses the team's budget up, the other refuses after a sync); with Redis down the charges
are kept and sent when it is back; ``limits_when_down: closed`` answers a 503 meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.budgets import period
from tests.conftest import Harness, copy_routes, start_gateway
from tests.redis_server import RedisServer, server_fixture
from tests.serving import free_port

server = server_fixture()

ONE, TWO = "sk-budget-one", "sk-budget-two"
HI = [{"role": "user", "content": "hi"}]


def config(port: int, when_down: str = "open") -> str:
    return f"""\
auth:
  mode: strict
  api_keys:
    - {{name: one, key: {ONE}, team: crew}}
    - {{name: two, key: {TWO}, team: crew}}
  teams:
    crew: {{budget: {{tokens: 30, period: month}}}}
state: {{backend: redis, url: 'redis://127.0.0.1:{port}/0', prefix: bt, sync_interval: 200ms,
        limits_when_down: {when_down}}}
"""


async def gateway(tmp_path: Path, name: str, port: int, when_down: str = "open") -> Harness:
    directory = copy_routes(tmp_path / name)
    (directory / "00-server.yaml").write_text(config(port, when_down))
    return await start_gateway(directory)


@pytest.fixture
async def pair(tmp_path: Path, server: RedisServer) -> AsyncIterator[tuple[Harness, Harness]]:
    if server.process is None:
        server.start()
    redis = Redis(host="127.0.0.1", port=server.port)
    await redis.flushall()
    await redis.aclose()
    a = await gateway(tmp_path, "a", server.port)
    b = await gateway(tmp_path, "b", server.port)
    yield a, b
    for gw in (a, b):
        await gw.close()


async def chat(h: Harness, key: str) -> tuple[int, object, object]:
    return await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI},
                             headers={"Authorization": f"Bearer {key}"})


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> bool:
    """Poll ``check`` every 50 ms, at most ``seconds``."""
    for _ in range(int(seconds / 0.05)):
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


async def stored(port: int) -> tuple[int, int]:
    """The team's tokens and nano-dollars this month, as Redis holds them."""
    redis = Redis(host="127.0.0.1", port=port)
    try:
        label = period("month", time.time()).label
        values = await redis.mget([f"{{bt:budget}}:team:crew:month:{label}#{what}" for what in ("tokens", "nano")])
    finally:
        await redis.aclose()
    return int(values[0] or 0), int(values[1] or 0)


async def test_two_gateways_spend_one_team_budget(pair: tuple[Harness, Harness], server: RedisServer) -> None:
    a, b = pair
    assert [(await chat(a, ONE))[0] for _ in range(2)] == [200, 200]  # 24 of 30
    assert (await chat(b, TWO))[0] == 200  # b had not seen a's yet (or had: 24 < 30); now 36
    assert await until(lambda: _sees(a, 36)) and await until(lambda: _sees(b, 36)), "a sync never summed them"
    assert (await chat(a, ONE))[0] == 429
    status, doc, headers = await chat(b, TWO)
    assert status == 429 and doc["error"]["code"] == "insufficient_quota"  # type: ignore[index]
    assert "the team 'crew' budget (30 tokens per month) is used up (36 tokens this month)" in \
        doc["error"]["message"]  # type: ignore[index]
    assert int(headers["Retry-After"]) > 0  # type: ignore[index]
    assert await stored(server.port) == (36, 0)  # no price for sim-openai/gpt-5 in the shipped table


async def _sees(h: Harness, tokens: int) -> bool:
    """Whether ``h``'s view of the team's spend this month is ``tokens``."""
    key = h.gateway.current.auth.identify(ONE)
    assert key is not None and key.budget is not None
    return h.gateway.budgets.spent(key.budget.cells[0])[0] == tokens


async def _refused(h: Harness, key: str) -> bool:
    return (await chat(h, key))[0] == 429


async def test_charges_made_while_redis_is_down_are_sent_when_it_is_back(
        pair: tuple[Harness, Harness], server: RedisServer) -> None:
    a, b = pair
    server.stop()
    try:
        assert (await chat(a, ONE))[0] == 200  # fail open: the local view
        assert (await chat(a, ONE))[0] == 200
        assert await until(lambda: _down(a)), "a never noticed Redis is down"
        assert (await chat(a, ONE))[0] == 200  # 24, then 36 in a's own view
        assert (await chat(a, ONE))[0] == 429  # held to its own view meanwhile
        assert a.gateway.budgets.pending
    finally:
        server.start()
    assert await until(lambda: _stored_is(server.port, 36)), "the kept charges never reached Redis"
    assert not a.gateway.budgets.pending
    assert await until(lambda: _sees(b, 36)), "b never saw the charges a kept"
    assert (await chat(b, TWO))[0] == 429


async def _down(h: Harness) -> bool:
    sync = h.gateway.budget_sync
    return sync is not None and sync.up is False


async def _stored_is(port: int, tokens: int) -> bool:
    try:
        return (await stored(port))[0] == tokens
    except (OSError, RedisError):
        return False


async def test_closed_answers_503_while_the_spend_cannot_be_read(tmp_path: Path) -> None:
    h = await gateway(tmp_path, "closed", free_port(), "closed")
    try:
        status, doc, _ = await chat(h, ONE)
        assert status == 503 and "limits_when_down: closed" in doc["error"]["message"]  # type: ignore[index]
    finally:
        await h.close()
    h = await gateway(tmp_path, "open", free_port(), "open")
    try:
        assert (await chat(h, ONE))[0] == 200
    finally:
        await h.close()

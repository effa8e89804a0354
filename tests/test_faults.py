"""Upstream faults from the simulator, seen by every client dialect: a flapping account that comes
back after its cooldown, a pool that is rate limited everywhere, malformed answers and upstreams
slower than the first-byte timeout. Each failure reaches the client as an error in its own dialect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import FAST_RETRY, ROUTES, Harness, start_gateway

A, B = "sim-key-a", "sim-key-b"
EMAIL = {A: "sim-a@simulator.local", B: "sim-b@simulator.local"}
USER_MSG = [{"role": "user", "content": "hi"}]
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}

# dialect -> (path, error style, body); gpt-4o maps to the simulator's gemini pool (accounts a, b)
DIALECTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "openai.chat": ("/v1/chat/completions", "openai", {"model": "gpt-4o", "messages": USER_MSG}),
    "openai.completions": ("/v1/completions", "openai", {"model": "gpt-4o", "prompt": "hi"}),
    "openai.responses": ("/v1/responses", "openai", {"model": "gpt-4o", "input": "hi"}),
    "anthropic.messages": ("/v1/messages", "anthropic", {"model": "gpt-4o", "max_tokens": 50, "messages": USER_MSG}),
    "gemini": ("/v1beta/models/gemini-2.5-flash:generateContent", "gemini", GEMINI_BODY),
}


def request_for(dialect: str, stream: bool) -> tuple[str, dict[str, Any]]:
    path, _, body = DIALECTS[dialect]
    if dialect == "gemini":
        return (path.replace(":generateContent", ":streamGenerateContent") if stream else path), body
    return path, {**body, "stream": stream}


async def call(h: Harness, dialect: str, stream: bool = False) -> tuple[int, Any, Any, bytes]:
    path, body = request_for(dialect, stream)
    async with h.session.post(h.url + path, json=body) as r:
        raw = await r.read()
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        return r.status, doc, r.headers, raw


def check_error(dialect: str, status: int, doc: Any, openai_type: str, anthropic_type: str,
                gemini_status: str) -> None:
    style = DIALECTS[dialect][1]
    assert isinstance(doc, dict), doc
    if style == "openai":
        assert doc["error"]["type"] == openai_type, doc
    elif style == "anthropic":
        assert doc["type"] == "error" and doc["error"]["type"] == anthropic_type, doc
    else:
        assert doc["error"]["code"] == status and doc["error"]["status"] == gemini_status, doc
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"], doc


async def keys_seen(h: Harness) -> list[str]:
    return [r["key"] for r in await h.sim_requests()]


@pytest.fixture
async def h(config_dir: Path) -> AsyncIterator[Harness]:
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY)
    harness = await start_gateway(config_dir)
    try:
        yield harness
    finally:
        await harness.close()


# --- a flapping account -----------------------------------------------------------------------------


async def test_flapping_account_serves_again_after_its_cooldown(h: Harness) -> None:
    """Round robin over the simulator's two accounts: a rests for its Retry-After, then serves again."""
    async def served_by() -> str:
        status, doc, headers, _ = await call(h, "openai.chat")
        assert status == 200, doc
        return headers["X-Account-Email"]

    for cycle in range(2):  # it flaps twice: the second 429 cools it again
        await h.sim_reset()
        # serve until b has just served, so round robin picks a next
        while True:
            first = await served_by()
            if first == EMAIL[B]:
                break
        await h.sim_reset()
        await h.faults(A, {"status": 429, "retry_after": 1})
        t0 = asyncio.get_running_loop().time()
        assert await served_by() == EMAIL[B]  # a said 429, the request rotated to b
        assert await keys_seen(h) == [A, B]
        cooling = [await served_by() for _ in range(4)]
        assert cooling == [EMAIL[B]] * 4, (cycle, cooling)  # a rests for its Retry-After
        assert asyncio.get_running_loop().time() - t0 < 1.0, "the cooldown checks ran too slowly"
        await asyncio.sleep(max(0.0, t0 + 1.2 - asyncio.get_running_loop().time()))
        after = [await served_by() for _ in range(4)]
        assert after.count(EMAIL[A]) == 2 and after.count(EMAIL[B]) == 2, (cycle, after)  # round robin again
        statuses = [(r["key"], r["status"]) for r in await h.sim_requests()]
        assert statuses[0] == (A, 429) and all(s == 200 for _, s in statuses[1:]), statuses


# --- the whole pool rate limited --------------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(DIALECTS))
async def test_whole_pool_429_in_each_dialect(h: Harness, dialect: str) -> None:
    await h.faults("*", {"status": 429, "retry_after": 7, "times": -1})
    status, doc, headers, _ = await call(h, dialect)
    assert status == 429, doc
    check_error(dialect, status, doc, "rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED")
    assert headers["Retry-After"] == "7"
    assert sorted(await keys_seen(h)) == [A, B]  # each account tried once, bounded by the pool
    if dialect == "gemini":
        details = doc["error"].get("details") or []
        assert any(d.get("retryDelay") == "7s" for d in details), doc
    # every account now rests: the next request is refused at once, in the same shape, upstream untouched
    await h.sim_reset()
    status, doc, headers, _ = await call(h, dialect, stream=True)
    assert status == 429, doc
    check_error(dialect, status, doc, "rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED")
    assert 1 <= int(headers["Retry-After"]) <= 7
    assert await keys_seen(h) == []


# --- malformed upstream answers -----------------------------------------------------------------------


async def test_malformed_upstream_json_on_every_account_is_502(h: Harness) -> None:
    for dialect in DIALECTS:
        for stream in (False, True):
            await h.sim_reset()
            await h.faults("*", {"kind": "malformed", "times": -1})
            status, doc, headers, raw = await call(h, dialect, stream)
            assert status == 502, (dialect, stream, raw[:300])
            assert headers["Content-Type"].startswith("application/json"), (dialect, stream)
            check_error(dialect, status, doc, "server_error", "api_error", "UNAVAILABLE")
            assert "malformed" in doc["error"]["message"], doc
            assert sorted(await keys_seen(h)) == [A, B], (dialect, stream)  # rotated, then gave up
            assert "Retry-After" not in headers


# --- first byte slower than the timeout ------------------------------------------------------------------


async def test_first_byte_timeout_on_every_account_is_504(config_dir: Path) -> None:
    providers = (ROUTES / "10-providers.yaml").read_text()
    anchor = "  simulator:\n    dialect: gemini\n    base_url: builtin:simulator\n"
    assert anchor in providers
    (config_dir / "10-providers.yaml").write_text(
        providers.replace(anchor, anchor + "    timeouts: {first_byte: 0.2}\n"))
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY)
    h = await start_gateway(config_dir)
    try:
        for dialect, stream in [(d, False) for d in DIALECTS] + [("anthropic.messages", True)]:
            await h.sim_reset()
            await h.faults("*", {"kind": "slow_first_byte", "delay": 1.0, "times": -1})
            t0 = asyncio.get_running_loop().time()
            status, doc, headers, raw = await call(h, dialect, stream)
            elapsed = asyncio.get_running_loop().time() - t0
            assert status == 504, (dialect, stream, raw[:300])
            check_error(dialect, status, doc, "timeout_error", "timeout_error", "DEADLINE_EXCEEDED")
            assert "Retry-After" not in headers, (dialect, headers)
            assert sorted(await keys_seen(h)) == [A, B], dialect
            assert 0.35 <= elapsed < 1.0, (dialect, elapsed)  # two attempts of 0.2 s, not the upstream's 1 s
    finally:
        await h.close()

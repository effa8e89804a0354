"""Retries and account rotation against the simulator's scripted faults: which account served each attempt."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import openai
import pytest

from tests.conftest import FAST_RETRY, Harness, start_gateway

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
A, B, C = "sim-key-a", "sim-key-b", "sim-key-c"
EMAIL = {A: "sim-a@simulator.local", B: "sim-b@simulator.local", C: "sim-c@simulator.local"}

PROVIDERS = """
providers:
  gemini:
    dialect: gemini
    base_url: builtin:simulator
    template: gemini
    scheduling: {scheduling}
    timeouts: {{first_byte: 0.5, idle: 0.5, total: 10}}
    accounts:
      - {{email: sim-a@simulator.local, api_key: sim-key-a}}
      - {{email: sim-b@simulator.local, api_key: sim-key-b}}
      - {{email: sim-c@simulator.local, api_key: sim-key-c}}
  openai:
    dialect: openai
    base_url: builtin:simulator
    template: openai
    accounts: [{{email: o@simulator.local, api_key: sim-key-openai}}]
  anthropic:
    dialect: anthropic
    base_url: builtin:simulator
    template: anthropic
    accounts: [{{email: an@simulator.local, api_key: sim-key-anthropic}}]
"""

async def _harness(config_dir: Path, scheduling: str = "round_robin") -> Harness:
    (config_dir / "10-providers.yaml").write_text(PROVIDERS.format(scheduling=scheduling))
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY)
    return await start_gateway(config_dir)


@pytest.fixture
async def h(config_dir: Path):
    harness = await _harness(config_dir)
    try:
        yield harness
    finally:
        await harness.close()


async def keys_seen(h: Harness) -> list[str]:
    return [r["key"] for r in await h.sim_requests()]


async def test_429_rotates_and_cools_the_account(h: Harness) -> None:
    await h.faults(A, {"status": 429, "retry_after": 30})
    status, doc, headers = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 200, doc
    assert await keys_seen(h) == [A, B]
    assert headers["X-Account-Email"] == EMAIL[B]
    acc = h.gateway.current.providers["gemini"].pool.accounts[0]
    assert h.gateway.store.state(acc.state_key).cooling_for("x", h.gateway.store.clock()) > 25
    # the cooling account is skipped by the next requests
    for _ in range(4):
        _, _, headers = await h.post_json("/v1/chat/completions", CHAT)
        assert headers["X-Account-Email"] != EMAIL[A]


async def test_whole_pool_429_gives_client_429_with_retry_after(h: Harness) -> None:
    await h.faults("*", {"status": 429, "retry_after": 7, "times": -1})
    status, doc, headers = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 429 and doc["error"]["type"] in ("rate_limit_error", "rate_limit_exceeded")
    assert headers["Retry-After"] == "7"
    assert await keys_seen(h) == [A, B, C]  # bounded by the pool and max_attempts
    assert headers["X-Mapped-Model"] == "gemini-2.5-flash"
    # now every account is cooling: immediate 429, no upstream call
    await h.sim_reset()
    status, doc, headers = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert await keys_seen(h) == []


async def test_gemini_retry_delay_detail_is_honoured(h: Harness) -> None:
    await h.faults("*", {"status": 429, "retry_delay": "3s", "times": -1})
    status, _, headers = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 429 and headers["Retry-After"] == "3"


@pytest.mark.parametrize("code", [503, 529])
async def test_overload_stays_on_the_account_with_backoff(h: Harness, code: int) -> None:
    await h.faults(A, {"status": code})
    status, doc, headers = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 200, doc
    assert await keys_seen(h) == [A, A]
    assert headers["X-Account-Email"] == EMAIL[A]


async def test_400_is_not_retried(h: Harness) -> None:
    await h.faults(A, {"status": 400, "message": "bad field foo"})
    status, doc, _ = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 400 and "bad field foo" in doc["error"]["message"]
    assert await keys_seen(h) == [A]


@pytest.mark.parametrize("fault", [
    {"kind": "reset", "after_chunks": 0},
    {"kind": "malformed", "after_chunks": 0},
    {"kind": "slow_first_byte", "delay": 2},
    {"status": 500},
], ids=["reset", "malformed", "slow-first-byte", "500"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_failure_before_first_byte_rotates(h: Harness, fault: dict, stream: bool) -> None:
    await h.faults(A, fault)
    body = {**CHAT, "stream": stream}
    async with h.session.post(h.url + "/v1/chat/completions", json=body) as r:
        text = await r.text()
        assert r.status == 200, text
        assert r.headers["X-Account-Email"] == EMAIL[B]
    if stream:
        assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text
    assert (await keys_seen(h))[:2] == [A, B]


async def test_reset_mid_stream_reaches_the_client_as_an_error(h: Harness) -> None:
    await h.faults(A, {"kind": "reset", "after_chunks": 2})
    client = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="x", max_retries=0)
    got = []
    with pytest.raises(openai.APIError):
        stream = await client.chat.completions.create(stream=True, **CHAT)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert got  # text arrived before the failure, and no retry happened after it
    assert await keys_seen(h) == [A]
    await client.close()


async def test_stall_mid_stream_hits_the_idle_timeout(h: Harness) -> None:
    await h.faults(A, {"kind": "stall", "after_chunks": 1, "delay": 3})
    async with h.session.post(h.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        text = await r.text()
    assert '"error"' in text and "idle" in text


async def test_sticky_sessions_stay_on_one_account(config_dir: Path) -> None:
    h = await _harness(config_dir, scheduling="sticky")
    try:
        async def one(session: str) -> str:
            _, _, headers = await h.post_json("/v1/chat/completions", CHAT, headers={"x-session-id": session})
            return headers["X-Account-Email"]

        first = await asyncio.gather(*(one("s1") for _ in range(12)))
        assert len(set(first)) == 1
        other = await asyncio.gather(*(one(f"s{i}") for i in range(2, 8)))
        assert len(set(other) | set(first)) > 1  # different sessions spread over the pool
        # when the bound account cools down the session moves, and then stays
        bound = next(k for k, e in EMAIL.items() if e == first[0])
        await h.faults(bound, {"status": 429, "retry_after": 30})
        moved = await one("s1")
        assert moved != first[0]
        assert {await one("s1") for _ in range(5)} == {moved}
    finally:
        await h.close()


async def test_upstream_keys_never_logged_or_returned(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await h.faults("*", {"status": 401, "message": "API key sim-key-a not valid", "times": -1})
    status, doc, _ = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 401
    assert "sim-key" not in str(doc)
    assert "sim-key" not in caplog.text


@pytest.mark.parametrize("model,dialect", [("gpt-5", "openai"), ("claude-x", "anthropic")])
async def test_other_upstream_dialects(h: Harness, model: str, dialect: str) -> None:
    status, doc, headers = await h.post_json("/v1/chat/completions", {**CHAT, "model": model})
    assert status == 200, doc
    assert doc["choices"][0]["message"]["content"].startswith("Echo: hi")
    assert headers["X-Mapped-Model"] == model
    seen = await h.sim_requests()
    assert seen[-1]["path"] == ("/v1/chat/completions" if dialect == "openai" else "/v1/messages")

"""Client rate limits (rpm, tpm, concurrency) on keys and teams: the in-process GCRA, all-or-none
reservations, 429s in every client family with Retry-After naming the limit, concurrency released
when the response ends, tpm corrected with the real usage, counters kept across a reload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import openai
import pytest

from router.errors import GatewayError
from router.limit_headers import Window, go_duration
from router.limits import Cell, Limiter, LimitPlan, Limits, gcra, limit_plan
from tests.conftest import Harness, start_gateway

A_KEY, B_KEY, C_KEY = "sk-limit-alpha", "sk-limit-beta", "sk-limit-free"
AUTH = f"""\
auth:
  mode: strict
  api_keys:
    - {{name: alpha, key: "{A_KEY}", limits: {{rpm: 2}}}}
    - {{name: beta, key: "{B_KEY}", team: crew, limits: {{tpm: 100000}}}}
    - {{name: free, key: "{C_KEY}"}}
  teams:
    crew: {{limits: {{rpm: 3, concurrency: 1}}}}
"""
HI = [{"role": "user", "content": "hi"}]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plan(**limits: int) -> LimitPlan:
    made = limit_plan("k", Limits(**limits), None, None)
    assert made is not None
    return made


# --- the in-process limiter --------------------------------------------------------------------------


def test_gcra_admits_a_burst_then_an_even_rate_no_fixed_window() -> None:
    clock = Clock()
    limiter, rpm = Limiter(clock), plan(rpm=3)
    for _ in range(3):
        limiter.admit(rpm, 0)
    with pytest.raises(GatewayError) as info:
        limiter.admit(rpm, 0)
    err = info.value
    assert err.status == 429 and err.code == "rate_limit_exceeded"
    assert err.retry_after == pytest.approx(20.0)  # one request every 60/3 s
    assert "key 'k' rpm limit (3 requests per minute)" in err.message
    clock.now += 19.9
    with pytest.raises(GatewayError):
        limiter.admit(rpm, 0)
    clock.now += 0.1
    limiter.admit(rpm, 0)  # one slot back after 20 s, not the whole minute's
    with pytest.raises(GatewayError):
        limiter.admit(rpm, 0)


def test_gcra_step_matches_the_redis_script() -> None:
    # new_tat = max(tat, now) + cost * interval; it fits when new_tat - burst * interval <= now
    assert gcra(0.0, 10.0, 2.0, 3, 1) == (12.0, 0.0)
    assert gcra(16.0, 10.0, 2.0, 3, 1) == (18.0, 2.0)
    assert gcra(16.0, 10.0, 2.0, 3, -10) == (10.0, 0.0)  # a refund never goes below now


def test_all_or_none_across_key_and_team() -> None:
    clock = Clock()
    limiter = Limiter(clock)
    both = limit_plan("k", Limits(rpm=10), "t", Limits(tpm=100))
    assert both is not None
    limiter.admit(both, 80)
    with pytest.raises(GatewayError) as info:
        limiter.admit(both, 50)  # the team's tpm is short: the key's rpm is not taken either
    assert "team 't' tpm limit" in info.value.message
    key_rpm = next(c for c in both.rates if c.kind == "rpm")
    assert limiter.pending(key_rpm) == pytest.approx(6.0)  # one request of 10/min: 6 s


def test_tpm_reserves_the_estimate_and_is_corrected() -> None:
    clock = Clock()
    limiter, tpm = Limiter(clock), plan(tpm=600)  # 10 tokens a second
    cell = tpm.rates[0]
    admission = limiter.admit(tpm, 100)
    assert limiter.pending(cell) == pytest.approx(10.0)
    limiter.adjust(admission, -60)  # used 40
    assert limiter.pending(cell) == pytest.approx(4.0)
    limiter.adjust(admission, 1000)  # used far more: charged past the burst, later requests wait
    with pytest.raises(GatewayError) as info:
        limiter.admit(tpm, 1)
    assert info.value.retry_after == pytest.approx(104.0 - 60.0 + 0.1)


def test_a_request_larger_than_the_tpm_limit_fits_a_full_bucket() -> None:
    limiter, tpm = Limiter(Clock()), plan(tpm=50)
    limiter.admit(tpm, 10_000)
    with pytest.raises(GatewayError):
        limiter.admit(tpm, 1)


def test_concurrency_counts_requests_in_flight_released_once() -> None:
    limiter, one = Limiter(Clock()), plan(concurrency=1)
    first = limiter.admit(one, 0)
    with pytest.raises(GatewayError) as info:
        limiter.admit(one, 0)
    assert info.value.retry_after == 1.0 and "concurrency limit (1 request in flight)" in info.value.message
    limiter.release(first)
    limiter.release(first)  # twice is once
    second = limiter.admit(one, 0)
    with pytest.raises(GatewayError):
        limiter.admit(one, 0)
    limiter.release(second)


def test_counters_are_kept_by_owner_and_limit_value() -> None:
    assert Cell("key", "a", "rpm", 5).id == Cell("key", "a", "rpm", 5).id
    assert Cell("key", "a", "rpm", 5).id != Cell("key", "a", "rpm", 6).id != Cell("team", "a", "rpm", 6).id
    assert limit_plan("a", None, None, None) is None and limit_plan("a", None, "t", None) is None


# --- through the gateway -------------------------------------------------------------------------------


@pytest.fixture
async def h(config_dir: Path) -> AsyncIterator[Harness]:
    (config_dir / "00-server.yaml").write_text(AUTH)
    harness = await start_gateway(config_dir, sim_options={"latency": 0.3})
    try:
        yield harness
    finally:
        await harness.close()


async def chat(h: Harness, key: str, **extra: object) -> tuple[int, object, object]:
    return await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI, **extra},
                             headers=bearer(key))


async def test_rpm_429_in_every_family_with_retry_after(h: Harness) -> None:
    assert [(await chat(h, A_KEY))[0] for _ in range(2)] == [200, 200]
    client = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key=A_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-5", messages=HI)  # type: ignore[arg-type]
    assert info.value.code == "rate_limit_exceeded"
    assert "key 'alpha' rpm limit (2 requests per minute)" in info.value.message
    assert 1 <= int(info.value.response.headers["Retry-After"]) <= 30
    status, doc, headers = await h.post_json("/v1/messages", {"model": "claude-sonnet-4", "max_tokens": 8,
                                                              "messages": HI}, headers={"x-api-key": A_KEY})
    assert status == 429 and doc["error"]["type"] == "rate_limit_error" and "Retry-After" in headers
    status, doc, headers = await h.post_json("/v1beta/models/gemini-2.5-flash:generateContent",
                                             {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                                             headers={"x-goog-api-key": A_KEY})
    assert status == 429 and doc["error"]["status"] == "RESOURCE_EXHAUSTED" and "Retry-After" in headers
    assert (await chat(h, C_KEY))[0] == 200  # a key without limits is not held


async def test_team_concurrency_is_released_when_the_response_ends(h: Harness) -> None:
    first = asyncio.create_task(chat(h, B_KEY))
    await asyncio.sleep(0.1)
    status, doc, headers = await chat(h, B_KEY)
    assert status == 429 and "team 'crew' concurrency limit" in doc["error"]["message"]  # type: ignore[index]
    assert headers["Retry-After"] == "1"  # type: ignore[index]
    assert (await first)[0] == 200
    status, body, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI, "stream": True},
                                        headers=bearer(B_KEY))
    assert status == 200 and b"[DONE]" in body
    assert (await chat(h, B_KEY))[0] == 200  # the stream's slot was given back when it ended


async def test_concurrency_released_when_the_client_goes_away(h: Harness) -> None:
    first = asyncio.create_task(chat(h, B_KEY))
    await asyncio.sleep(0.1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    for _ in range(50):  # the gateway notices the closed connection
        await asyncio.sleep(0.02)
        cells = h.runner.dispatcher.engine.limiter.inflight()
        if not cells:
            break
    assert not cells
    assert (await chat(h, B_KEY))[0] == 200


async def test_tpm_is_corrected_with_the_real_usage(h: Harness) -> None:
    limiter = h.runner.dispatcher.engine.limiter
    key = h.gateway.current.auth.identify(B_KEY)
    assert key is not None and key.plan is not None
    tpm = next(c for c in key.plan.rates if c.kind == "tpm")
    status, doc, _ = await chat(h, B_KEY, max_tokens=5000)
    assert status == 200
    used = doc["usage"]["total_tokens"]  # type: ignore[index]
    assert limiter.pending(tpm) == pytest.approx(used * tpm.interval, abs=0.5)  # not the 5000 reserved
    status, body, _ = await h.post_json("/v1/chat/completions", {
        "model": "gpt-5", "messages": HI, "stream": True, "max_tokens": 5000,
        "stream_options": {"include_usage": True}}, headers=bearer(B_KEY))
    assert status == 200 and b'"total_tokens"' in body
    assert limiter.pending(tpm) == pytest.approx(2 * used * tpm.interval, abs=1.0)


async def test_reload_keeps_counters_of_unchanged_keys(h: Harness) -> None:
    assert [(await chat(h, A_KEY))[0] for _ in range(3)] == [200, 200, 429]
    (h.config_dir / "00-server.yaml").write_text(AUTH.replace("- {name: free", "- {name: added"))
    assert await h.gateway.reload("test"), h.gateway.last_error
    assert (await chat(h, A_KEY))[0] == 429  # unchanged: still used up
    (h.config_dir / "00-server.yaml").write_text(AUTH.replace("rpm: 2}", "rpm: 5}"))
    assert await h.gateway.reload("test"), h.gateway.last_error
    assert (await chat(h, A_KEY))[0] == 200  # a changed limit starts afresh


async def test_a_bad_limit_is_a_config_error(h: Harness) -> None:
    (h.config_dir / "00-server.yaml").write_text(AUTH.replace("rpm: 2}", "rpm: 0}"))
    assert not await h.gateway.reload("test")
    assert "rpm" in str(h.gateway.last_error)


# --- rate-limit headers ---------------------------------------------------------------------------------


def test_go_durations_as_openai_writes_them() -> None:
    assert [go_duration(s) for s in (0, 0.006, 0.9999, 1, 1.5, 20, 60, 61.25, 3723)] == \
        ["0s", "6ms", "1s", "1s", "1.5s", "20s", "1m0s", "1m1.25s", "1h2m3s"]


def test_status_shows_the_tightest_of_key_and_team() -> None:
    clock = Clock()
    limiter = Limiter(clock)
    both = limit_plan("k", Limits(rpm=10, tpm=1000), "t", Limits(rpm=4))
    assert both is not None
    limiter.admit(both, 100)
    status = limiter.status(both)
    assert status.requests == Window(4, 3, 15.0)  # the team's 4/min: 3 left, whole again in 15 s
    assert status.tokens == Window(1000, 900, 6.0)


async def test_rate_limit_headers_through_the_openai_sdk(h: Harness) -> None:
    client = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key=A_KEY, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(model="gpt-5", messages=HI)  # type: ignore[arg-type]
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.headers["x-ratelimit-reset-requests"] == "30s"
    assert "x-ratelimit-limit-tokens" not in raw.headers  # no tpm limit on this key
    assert raw.parse().choices[0].message.content
    await client.chat.completions.create(model="gpt-5", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-5", messages=HI)  # type: ignore[arg-type]
    assert info.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    free = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key=C_KEY, max_retries=0)
    raw = await free.chat.completions.with_raw_response.create(model="gpt-5", messages=HI)  # type: ignore[arg-type]
    assert not any(name.startswith("x-ratelimit") for name in raw.headers)  # a key without limits


async def test_rate_limit_headers_on_streams_and_anthropic_routes(h: Harness) -> None:
    async with h.session.post(h.url + "/v1/chat/completions", headers=bearer(B_KEY),
                              json={"model": "gpt-5", "messages": HI, "stream": True, "max_tokens": 100}) as r:
        assert r.status == 200
        assert r.headers["x-ratelimit-limit-tokens"] == "100000" and r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == "2"
        assert int(r.headers["x-ratelimit-remaining-tokens"]) < 100000 - 100
        await r.read()
    status, _, headers = await h.post_json("/v1/messages", {"model": "claude-sonnet-4", "max_tokens": 8,
                                                            "messages": HI}, headers={"x-api-key": B_KEY})
    assert status == 200 and headers["anthropic-ratelimit-requests-limit"] == "3"
    assert headers["anthropic-ratelimit-requests-remaining"] == "1"
    reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
    assert 0 < reset.timestamp() - time.time() <= 41
    assert headers["anthropic-ratelimit-tokens-limit"] == "100000" and "x-ratelimit-limit-requests" not in headers

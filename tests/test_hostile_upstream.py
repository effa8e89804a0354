"""A hostile or broken upstream cannot exhaust the gateway's memory, stall other requests, or rest a
pool for years: huge JSON bodies, gzip bombs and endless SSE lines are cut at the configured limits
(a retryable ``malformed`` outcome), retry hints are capped by the policy's ``max_cooldown``, and a
stream ended by the ``total`` timeout says so.

The upstream here is a small aiohttp server in the test process that generates its answers piece by
piece (it never holds them), so the process's peak RSS measures what the gateway kept.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.conftest import FAST_RETRY, Harness, start_gateway

MiB = 1024 * 1024
PIECE = b"a" * (64 * 1024)
CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}  # gpt-* -> the openai provider
FIRST_EVENT = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-5","choices":'
               b'[{"index":0,"delta":{"role":"assistant","content":"hel"},"finish_reason":null}]}\n\n')


def gzip_bomb(size: int, encoding: str = "gzip") -> bytes:
    """A gzip (or zlib "deflate") stream inflating to ``size`` bytes of ``a`` from ~size/1000 bytes. After
    a full flush deflate starts afresh, so each further MiB compresses to the same bytes: built in ms."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
    first = c.compress(b"a" * MiB) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(b"a" * MiB) + c.flush(zlib.Z_FULL_FLUSH)
    return first + again * (size // MiB - 1)  # no trailer: nothing reads that far


class Hostile:
    """An OpenAI-compatible upstream whose next answers are whatever ``answer`` produces."""

    def __init__(self) -> None:
        self.answer: Callable[[web.Request], Awaitable[web.StreamResponse]] = self.huge_json
        self.hits = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.hits += 1
        return await self.answer(request)

    @staticmethod
    async def _stream(request: web.Request, content_type: str, head: bytes, total: int, piece: bytes = PIECE,
                      headers: dict[str, str] | None = None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type, **(headers or {})})
        await resp.prepare(request)
        try:
            await resp.write(head)
            for _ in range(total // len(piece)):
                await resp.write(piece)
            await resp.write_eof()
        except ConnectionError:
            pass  # the gateway hung up once it had enough: the point of the exercise
        return resp

    async def huge_json(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "application/json", b'{"id":"x","pad":"', 200 * MiB)

    async def huge_line(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "text/event-stream", b"data: ", 200 * MiB)

    async def huge_line_after_an_event(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "text/event-stream", FIRST_EVENT + b"data: ", 200 * MiB)

    async def many_data_lines(self, request: web.Request) -> web.StreamResponse:
        # "data:" lines without the blank line that would end the event: each one costs the parser a
        # list slot with no payload, so the limit counts raw bytes, not data bytes
        return await self._stream(request, "text/event-stream", b"", 200 * MiB, piece=b"data:\n" * 10000)

    def bomb(self, payload: bytes, encoding: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def answer(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Encoding": encoding})
            await resp.prepare(request)
            try:
                for i in range(0, len(payload), 64 * 1024):
                    await resp.write(payload[i:i + 64 * 1024])
                await resp.write_eof()
            except ConnectionError:
                pass
            return resp
        return answer

    def status(self, code: int, headers: dict[str, str], body: Any = None) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def answer(request: web.Request) -> web.StreamResponse:
            doc = body if body is not None else {"error": {"message": "slow down", "type": "requests"}}
            return web.Response(status=code, body=orjson.dumps(doc), content_type="application/json", headers=headers)
        return answer


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[Hostile, str]]:
    up = Hostile()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", up.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield up, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def h(config_dir: Path, hostile: tuple[Hostile, str]) -> AsyncIterator[Harness]:
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY)
    harness = await start_gateway(config_dir, env={"OPENAI_BASE_URL": hostile[1], "OPENAI_API_KEY": "sk-hostile-key"})
    try:
        yield harness
    finally:
        await harness.close()


# --- memory: the process's peak RSS while the gateway reads one hostile answer ------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


async def peak_growth_and_stall(h: Harness, call: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    """(peak RSS growth in MiB, worst /healthz latency in s, ``call()``'s result) while ``call`` runs.

    Writing 5 to clear_refs resets VmHWM (the peak) to the current RSS, so VmHWM afterwards minus
    VmRSS now is the peak growth however short the spike was.
    """
    worst = 0.0
    done = asyncio.Event()

    async def probe() -> None:
        nonlocal worst
        loop = asyncio.get_running_loop()
        while not done.is_set():
            t0 = loop.time()
            async with h.session.get(h.url + "/healthz") as r:
                assert r.status == 200
                await r.read()
            worst = max(worst, loop.time() - t0)
            await asyncio.sleep(0.01)

    gc.collect()
    # Freed memory glibc kept from earlier tests would be reused unseen: hand it back first.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kib("VmRSS")
    prober = asyncio.create_task(probe())
    try:
        result = await asyncio.wait_for(call(), 60)
    finally:
        done.set()
        await prober
    growth = (_status_kib("VmHWM") - base) / 1024
    print(f"peak RSS growth {growth:.1f} MiB, worst /healthz {worst * 1000:.0f} ms")
    return growth, worst, result


async def post(h: Harness, body: dict[str, Any]) -> tuple[int, str, Any]:
    async with h.session.post(h.url + "/v1/chat/completions", json=body) as r:
        return r.status, (await r.read()).decode(), r.headers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse-line"])
async def test_a_200_mib_answer_costs_less_than_40_mib(h: Harness, hostile: tuple[Hostile, str], stream: bool) -> None:
    up = hostile[0]
    up.answer = up.huge_line if stream else up.huge_json
    growth, stall, (status, text, _) = await peak_growth_and_stall(h, lambda: post(h, {**CHAT, "stream": stream}))
    assert status == 502, text[:300]
    doc = orjson.loads(text)
    limit = "max_event_bytes" if stream else "max_body_bytes"
    assert "malformed" in doc["error"]["message"] or "larger than" in doc["error"]["message"], doc
    assert f"server.upstream_limits.{limit}" in doc["error"]["message"], doc
    assert up.hits == 1  # retryable, but the pool has one account
    assert growth < 40, f"peak RSS grew {growth:.1f} MiB"
    assert stall < 0.25, f"/healthz took {stall * 1000:.0f} ms while the answer was read"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_gzip_bomb_is_cut_after_decompression(h: Harness, hostile: tuple[Hostile, str], encoding: str) -> None:
    up = hostile[0]
    payload = gzip_bomb(1024 * MiB, encoding)  # 1 GiB inflated from ~1 MiB
    assert len(payload) < 2 * MiB and zlib.decompressobj(31 if encoding == "gzip" else 15).decompress(
        payload[:4096], 100) == b"a" * 100
    up.answer = up.bomb(payload, encoding)
    growth, stall, (status, text, _) = await peak_growth_and_stall(h, lambda: post(h, CHAT))
    assert status == 502, text[:300]
    assert "server.upstream_limits.max_body_bytes" in orjson.loads(text)["error"]["message"]
    assert growth < 40, f"peak RSS grew {growth:.1f} MiB"
    assert stall < 0.25, f"/healthz took {stall * 1000:.0f} ms while the bomb was read"


async def test_data_lines_without_an_event_end_are_bounded(h: Harness, hostile: tuple[Hostile, str]) -> None:
    up = hostile[0]
    up.answer = up.many_data_lines
    growth, _, (status, text, _) = await peak_growth_and_stall(h, lambda: post(h, {**CHAT, "stream": True}))
    assert status == 502 and "max_event_bytes" in text, text[:300]
    assert growth < 40, f"peak RSS grew {growth:.1f} MiB"


async def test_limit_after_the_first_byte_is_an_in_stream_error(h: Harness, hostile: tuple[Hostile, str]) -> None:
    up = hostile[0]
    up.answer = up.huge_line_after_an_event
    status, text, headers = await post(h, {**CHAT, "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert '"content":"hel"' in text  # what arrived before the limit reached the client
    frames = [f for f in text.split("\n\n") if f.startswith("data: {")]
    error = orjson.loads(frames[-1][len("data: "):])["error"]
    assert "server.upstream_limits.max_event_bytes" in error["message"], error
    assert text.rstrip().endswith("data: [DONE]")
    assert up.hits == 1  # no retry once the client saw bytes


async def test_limits_are_configurable(config_dir: Path, hostile: tuple[Hostile, str]) -> None:
    server = config_dir / "00-server.yaml"
    server.write_text(server.read_text().replace(
        "server:\n", "server:\n  upstream_limits: {max_body_bytes: 4096, max_event_bytes: 2048}\n", 1))
    h = await start_gateway(config_dir, env={"OPENAI_BASE_URL": hostile[1], "OPENAI_API_KEY": "sk-hostile-key"})
    try:
        assert h.gateway.current.server.upstream_max_body_bytes == 4096
        up = hostile[0]
        body = {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-5", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x" * 5000}, "finish_reason": "stop"}]}
        up.answer = up.status(200, {}, body)
        status, text, _ = await post(h, CHAT)
        assert status == 502 and "larger than 4096 bytes" in text, text[:300]
        body["choices"][0]["message"]["content"] = "x" * 3000  # under the body limit
        status, text, _ = await post(h, CHAT)
        assert status == 200 and orjson.loads(text)["choices"][0]["message"]["content"] == "x" * 3000
        up.answer = up.huge_line_after_an_event
        status, text, _ = await post(h, {**CHAT, "stream": True})
        # a 502 when the first read held the whole overflow, else an in-stream error after the first event
        assert status in (200, 502) and "larger than 2048 bytes" in text, text[:300]
    finally:
        await h.close()


# --- retry hints ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "client_retry_after"), [
    ({"Retry-After": "1000000000"}, "300"),
    ({"retry-after-ms": "1e308"}, "300"),
    ({"Retry-After": "9" * 400}, "300"),
    ({"Retry-After": "1e400"}, None),
    ({"Retry-After": "-5"}, None),
    ({"Retry-After": "nan"}, None),
    ({"Retry-After": "in a while"}, None),
    ({"Retry-After": "12"}, "12"),
], ids=["31-years", "ms-1e308", "400-digits", "infinite", "negative", "nan", "unparseable", "sane"])
async def test_retry_hints_are_capped_and_odd_ones_logged(h: Harness, hostile: tuple[Hostile, str],
                                                          caplog: pytest.LogCaptureFixture,
                                                          headers: dict[str, str], client_retry_after: str | None) -> None:
    caplog.set_level(logging.INFO, logger="router")
    up = hostile[0]
    up.answer = up.status(429, headers)
    t0 = time.time()
    for _ in range(3):
        status, text, got = await post(h, CHAT)
        assert status == 429, text
        assert got.get("Retry-After") == client_retry_after
        h.gateway.store.reset(h.gateway.current.providers["openai"].pool.accounts[0].state_key)
    acc = h.gateway.current.providers["openai"].pool.accounts[0]
    await post(h, CHAT)  # once more, and look at the cooldown it left
    async with h.session.get(h.url + "/admin/accounts") as r:
        (row,) = [a for a in (await r.json())["accounts"] if a["key"] == acc.state_key]
    assert row["state"] == "cooling"
    expected = float(client_retry_after) if client_retry_after else 60.0  # the default cooldown
    assert t0 + expected - 1 <= row["cooling_until"] <= time.time() + expected + 1
    warnings = [r for r in caplog.records if r.getMessage().startswith("upstream sent an unusable retry delay")]
    if client_retry_after in (None, "300"):
        assert len(warnings) == 1, [r.getMessage() for r in warnings]  # four answers, one line a minute
        message = warnings[0].getMessage()
        assert len(message) < 400 and "sk-hostile-key" not in caplog.text
        assert ("capped at max_cooldown 300 s" in message) is (client_retry_after == "300"), message
    else:
        assert warnings == []


async def test_retry_hint_in_a_header_is_redacted_in_the_log(h: Harness, hostile: tuple[Hostile, str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router")
    up = hostile[0]
    up.answer = up.status(429, {"Retry-After": "sk-hostile-key"})
    status, _, _ = await post(h, CHAT)
    assert status == 429
    assert "Retry-After '***' is neither a number nor an HTTP date" in caplog.text
    assert "sk-hostile-key" not in caplog.text


async def test_max_cooldown_is_per_policy(config_dir: Path, hostile: tuple[Hostile, str]) -> None:
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY.replace("max_wait: 5s", "max_wait: 5s\n    max_cooldown: 2s"))
    h = await start_gateway(config_dir, env={"OPENAI_BASE_URL": hostile[1], "OPENAI_API_KEY": "sk-hostile-key"})
    try:
        assert h.gateway.current.providers["openai"].retry.max_cooldown == 2.0
        up = hostile[0]
        up.answer = up.status(429, {"Retry-After": "1000000000"})
        status, _, headers = await post(h, CHAT)
        assert status == 429 and headers["Retry-After"] == "2"
        t0 = time.monotonic()
        status, _, headers = await post(h, CHAT)  # the pool rests 2 s (< max_wait): waited, then asked again
        assert status == 429 and headers["Retry-After"] == "2"
        assert up.hits == 2 and 1.5 < time.monotonic() - t0 < 4  # rested for two seconds, not 31 years
    finally:
        await h.close()


async def test_gemini_retry_delay_is_capped(gw: Harness) -> None:
    """Through the simulator: a Gemini ``RetryInfo.retryDelay`` of three years, to each client dialect."""
    async with gw.session.post(gw.sim_url + "/_sim/faults", json={
            "key": "*", "faults": [{"status": 429, "retry_delay": "99999999s", "times": -1}]}) as r:
        assert r.status == 200
    status, _, headers = await gw.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": CHAT["messages"]})
    assert status == 429 and headers["Retry-After"] == "300"
    status, doc, headers = await gw.post_json("/v1beta/models/gemini-2.5-flash:generateContent",
                                              {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert status == 429 and int(headers["Retry-After"]) <= 300
    assert [d["retryDelay"] for d in doc["error"]["details"]] == [headers["Retry-After"] + "s"]


# --- timeouts -----------------------------------------------------------------------------------------


async def test_total_timeout_ending_a_stream_says_total(config_dir: Path) -> None:
    providers = config_dir / "10-providers.yaml"
    anchor = "  simulator:\n    dialect: gemini\n    base_url: builtin:simulator\n"
    assert anchor in providers.read_text()
    providers.write_text(providers.read_text().replace(anchor, anchor + "    timeouts: {total: 1, idle: 30}\n"))
    h = await start_gateway(config_dir, sim_options={"chunks": 6})
    try:
        await h.faults("*", {"kind": "stall", "after_chunks": 2, "delay": 5})
        t0 = time.monotonic()
        status, text, _ = await post(h, {"model": "gpt-4o", "stream": True, "messages": CHAT["messages"]})
        assert status == 200
        assert '"error"' in text and "total timeout" in text and "idle" not in text, text[-500:]
        assert time.monotonic() - t0 < 3
    finally:
        await h.close()


@pytest.mark.parametrize(("seconds", "told"), [
    (0.0, 1), (0.2, 1), (7.0, 7), (7.01, 8), (300.0, 300), (1e308, 86400), (float("inf"), 86400), (float("nan"), 86400),
], ids=["zero", "fraction", "whole", "rounded-up", "cap", "1e308", "inf", "nan"])
def test_clients_are_told_a_small_integer(seconds: float, told: int) -> None:
    from router.client_codecs import gemini_native
    from router.errors import GatewayError, client_retry_after

    assert client_retry_after(seconds) == told
    body = gemini_native.error_body(GatewayError("rate_limit", "slow down", retry_after=seconds))
    assert body["error"]["details"][0]["retryDelay"] == f"{told}s"


def test_log_throttle_lets_one_message_a_minute_through_per_key() -> None:
    from router.logs import Throttle

    now = [0.0]
    t = Throttle(60.0, clock=lambda: now[0])
    assert t.allow("gemini") == 0 and t.allow("openai") == 0
    assert [t.allow("gemini") for _ in range(5)] == [None] * 5
    now[0] = 59.9
    assert t.allow("gemini") is None
    now[0] = 60.0
    assert t.allow("gemini") == 6  # the ones held back are counted in the next line
    assert t.allow("openai") == 0
    for i in range(Throttle.MAX_KEYS + 10):  # keys are bounded even if they were not config names
        t.allow(f"k{i}")
    assert len(t._next) <= Throttle.MAX_KEYS

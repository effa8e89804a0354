"""A client that sends its request body too slowly gets a 408 in its dialect instead of holding a
handler for as long as it likes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.conftest import Harness, start_gateway

BODY = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'


async def _trickle(h: Harness, path: str, head: bytes, body: bytes, every: float) -> tuple[bytes, float]:
    """Send the headers, then the body one byte every ``every`` seconds; the answer and when it came."""
    port = int(h.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode() + head
                 + b"\r\n")

    async def send() -> None:
        for i in range(len(body)):
            writer.write(body[i:i + 1])
            await writer.drain()
            await asyncio.sleep(every)

    sender = asyncio.create_task(send())
    try:
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(next(line.split(b":")[1] for line in answer.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        answer += await asyncio.wait_for(reader.readexactly(length), 5)
        return answer, time.monotonic() - started
    finally:
        sender.cancel()
        writer.close()


@pytest.fixture
async def slow_gw(config_dir: Path) -> Harness:
    (config_dir / "00-server.yaml").write_text("server: {body_timeout: 700ms}\n")
    h = await start_gateway(config_dir)
    try:
        yield h
    finally:
        await h.close()


@pytest.mark.parametrize("path,check", [
    ("/v1/chat/completions",
     lambda b: b["error"]["type"] == "invalid_request_error" and b["error"]["code"] == "request_timeout"),
    ("/v1/messages",
     lambda b: b["type"] == "error" and b["error"]["type"] == "invalid_request_error"),
    ("/v1beta/models/gemini-2.5-flash:generateContent",
     lambda b: b["error"]["code"] == 408 and b["error"]["status"] == "DEADLINE_EXCEEDED"),
    ("/v1/responses", lambda b: b["error"]["type"] == "invalid_request_error"),
], ids=["openai", "anthropic", "gemini", "responses"])
async def test_a_trickled_body_is_408_in_the_callers_dialect(slow_gw: Harness, path: str, check) -> None:
    answer, took = await _trickle(slow_gw, path, f"Content-Length: {len(BODY)}\r\n".encode(), BODY, 0.3)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert b"connection: close" in head.lower()  # the unread rest of the body is not waited for
    doc = json.loads(body)
    assert check(doc), doc
    assert "700 ms" in json.dumps(doc) or "0.7 s" in json.dumps(doc)
    assert took < 3


async def test_a_trickled_chunked_body_is_408(slow_gw: Harness) -> None:
    chunks = b"".join(b"1\r\n" + BODY[i:i + 1] + b"\r\n" for i in range(len(BODY))) + b"0\r\n\r\n"
    answer, took = await _trickle(slow_gw, "/v1/chat/completions", b"Transfer-Encoding: chunked\r\n", chunks, 0.1)
    assert answer.startswith(b"HTTP/1.1 408 ") and took < 3


async def test_a_body_in_time_is_served_and_the_limit_can_be_switched_off(config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text("server: {body_timeout: 0}\n")
    h = await start_gateway(config_dir)
    try:
        assert h.gateway.current.server.body_timeout is None
        answer, _ = await _trickle(h, "/v1/chat/completions", f"Content-Length: {len(BODY)}\r\n".encode(),
                                   BODY, 0.01)
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        await h.close()


async def test_body_timeout_defaults_to_a_minute(gw: Harness) -> None:
    assert gw.gateway.current.server.body_timeout == 60.0

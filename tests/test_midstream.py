"""Upstream failures after the first byte: each client dialect gets its own error form, never a silent 200.

Also: a client that disconnects cancels its upstream request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.conftest import Harness

FAULTS = {
    "reset": {"kind": "reset", "after_chunks": 2},
    "malformed": {"kind": "malformed", "after_chunks": 2},
    "stall": {"kind": "stall", "after_chunks": 2, "delay": 3},
}
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai.chat": ("/v1/chat/completions", {"model": "gpt-4o", "stream": True,
                                             "messages": [{"role": "user", "content": "hello"}]}),
    "openai.completions": ("/v1/completions", {"model": "gpt-4o", "stream": True, "prompt": "hello"}),
    "openai.responses": ("/v1/responses", {"model": "gpt-4o", "stream": True, "input": "hello"}),
    "anthropic.messages": ("/v1/messages", {"model": "gpt-4o", "stream": True, "max_tokens": 100,
                                            "messages": [{"role": "user", "content": "hello"}]}),
    "gemini": ("/v1beta/models/gpt-4o:streamGenerateContent?alt=sse",
               {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}),
    "ollama.chat": ("/api/chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}),
    "ollama.generate": ("/api/generate", {"model": "gpt-4o", "prompt": "hello"}),  # both stream by default
}


def error_form(dialect: str, text: str) -> bool:
    """Whether the stream ends with the dialect's error form (and no success terminator)."""
    tail = text.rstrip().rsplit("\n\n", 2)[-2:]
    joined = "\n\n".join(tail)
    if dialect in ("openai.chat", "openai.completions"):
        return 'data: {"error":' in text and "[DONE]" in joined and '"finish_reason":"stop"' not in text
    if dialect == "openai.responses":
        return "event: response.failed" in joined and "response.completed" not in text
    if dialect == "anthropic.messages":
        return "event: error" in joined and "message_stop" not in text
    if dialect.startswith("ollama."):  # NDJSON: the last line is the error, and no line says done
        return text.rstrip().rsplit("\n", 1)[-1].startswith('{"error":') and '"done":true' not in text
    return 'data: {"error":' in joined and '"finishReason"' not in text


@pytest.fixture
async def gw_fast(config_dir):
    from tests.conftest import start_gateway

    p = config_dir / "10-providers.yaml"
    anchor = "  simulator:\n    dialect: gemini\n    base_url: builtin:simulator\n"
    text = p.read_text()
    assert anchor in text, "the shipped simulator provider changed shape: update this fixture"
    p.write_text(text.replace(anchor, anchor + "    timeouts: {idle: 0.5}\n", 1))
    h = await start_gateway(config_dir, sim_options={"chunks": 6})
    try:
        yield h
    finally:
        await h.close()


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("dialect", list(REQUESTS))
async def test_failure_after_first_byte(gw_fast: Harness, dialect: str, fault: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="router")
    await gw_fast.faults("*", FAULTS[fault])
    path, body = REQUESTS[dialect]
    async with gw_fast.session.post(gw_fast.url + path, json=body) as r:
        assert r.status == 200  # headers went out with the first chunk
        text = (await r.read()).decode()
    assert error_form(dialect, text), text[-600:]
    assert len(await gw_fast.sim_requests()) == 1  # no retry once the client saw bytes
    assert "stream failed after the first byte: POST http://127.0.0.1:" in caplog.text  # method, host, path
    assert ":streamGenerateContent -> " in caplog.text


async def test_client_disconnect_cancels_upstream(config_dir) -> None:
    from tests.conftest import start_gateway

    h = await start_gateway(config_dir, sim_options={"chunks": 50, "chunk_delay": 0.1})
    try:
        connector = h.gateway.session.connector
        body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        r = await h.session.post(h.url + "/v1/chat/completions", json=body)
        await r.content.readline()
        assert len(connector._acquired) == 1  # the upstream connection is in use
        r.close()  # the client goes away mid-stream
        for _ in range(50):
            if not connector._acquired:
                break
            await asyncio.sleep(0.05)
        assert not connector._acquired  # upstream request cancelled, not read to the end
        # non-stream: a slow upstream answer is abandoned too
        await h.faults("*", {"kind": "slow_first_byte", "delay": 5})
        task = asyncio.create_task(h.session.post(h.url + "/v1/chat/completions",
                                                  json={**body, "stream": False}))
        for _ in range(50):
            if connector._acquired:
                break
            await asyncio.sleep(0.02)
        assert len(connector._acquired) == 1  # waiting for the slow upstream
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(50):
            if not connector._acquired:
                break
            await asyncio.sleep(0.05)
        assert not connector._acquired
    finally:
        await h.close()

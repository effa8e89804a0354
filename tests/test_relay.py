"""The stream relay and the JSON answer: only upstream decoding errors are the upstream's fault.

A ValueError from the SSE parser, the stream decoder or the upstream's JSON body is a malformed
upstream (retried, or the dialect's error event mid-stream). A ValueError from the client codec's
encoder is the gateway's own bug: it reaches the app's error boundary, is logged there with its
traceback and is never retried or blamed on the upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest

from router.client_codecs import openai_chat
from tests.conftest import Harness

LIMIT = aiohttp.ClientTimeout(total=30)  # a broken relay must fail the test, not hang it
STREAM = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hello"}]}


def _boom(*_: Any) -> Any:
    raise ValueError("encoder bug")


@contextmanager
def _codec_attribute(name: str, value: Any) -> Iterator[None]:
    """Swaps one attribute of the frozen openai.chat codec record for the test's duration."""
    old = getattr(openai_chat.CODEC, name)
    object.__setattr__(openai_chat.CODEC, name, value)  # a frozen record: monkeypatch cannot set it
    try:
        yield
    finally:
        object.__setattr__(openai_chat.CODEC, name, old)


def _internal_error(caplog: pytest.LogCaptureFixture) -> None:
    """The boundary logged the encoder's exception with its traceback; nothing blamed the upstream."""
    unhandled = [r for r in caplog.records if r.name == "router.app" and r.getMessage() == "unhandled error"]
    assert len(unhandled) == 1, caplog.text
    exc_info = unhandled[0].exc_info
    assert exc_info is not None and exc_info[0] is ValueError and str(exc_info[1]) == "encoder bug"
    assert "malformed" not in caplog.text
    assert "stream failed after the first byte" not in caplog.text
    assert "upstream attempt" not in caplog.text  # no failed attempt: the upstream answered fine


@pytest.mark.parametrize("method", ["start", "feed", "finish"])
async def test_stream_encoder_error_is_internal(gw: Harness, caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    caplog.set_level(logging.INFO, logger="router")
    monkeypatch.setattr(openai_chat.StreamEncoder, method, _boom)
    async with gw.session.post(gw.url + "/v1/chat/completions", json=STREAM, timeout=LIMIT) as r:
        assert r.status == 200  # the headers went out before the encoder failed: no second status line
        text = (await r.read()).decode()
    assert '"error"' not in text and "[DONE]" not in text  # not an upstream error event, not a clean end
    assert len(await gw.sim_requests()) == 1  # not retried
    _internal_error(caplog)


async def test_json_encoder_error_is_internal(gw: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router")
    with _codec_attribute("encode_response", _boom):
        status, doc, headers = await gw.post_json("/v1/chat/completions", {**STREAM, "stream": False},
                                                    timeout=LIMIT)
    assert status == 500
    assert doc["error"]["message"] == "internal gateway error"  # the openai family's error body
    assert headers["X-Request-Id"]
    assert len(await gw.sim_requests()) == 1
    _internal_error(caplog)


async def test_malformed_upstream_stream_is_still_retried(gw: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """The decoder's ValueError before the first byte stays an upstream failure: retried."""
    caplog.set_level(logging.INFO, logger="router")
    await gw.faults("*", {"kind": "malformed", "after_chunks": 0})
    async with gw.session.post(gw.url + "/v1/chat/completions", json=STREAM, timeout=LIMIT) as r:
        text = (await r.read()).decode()
    assert len(await gw.sim_requests()) >= 2, text
    assert "-> malformed (retrying)" in caplog.text
    assert not [r for r in caplog.records if r.name == "router.app" and r.exc_info]

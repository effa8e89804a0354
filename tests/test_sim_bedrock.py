"""The simulator's Bedrock paths on their own: signatures checked, JSON and event-stream answers, faults."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from router import eventstream as es
from router.credential_aws import AwsSigV4
from router.sim import SimServer
from router.sim import sigv4_check as keys
from router.sim.faults import parse_fault
from router.upstream_request import UpstreamRequest

SIGNER = AwsSigV4(keys.TEST_ACCESS_KEY_ID, keys.TEST_SECRET_ACCESS_KEY, "us-east-1")
BODY = {"messages": [{"role": "user", "content": [{"text": "hello"}]}], "inferenceConfig": {"maxTokens": 2}}


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(chunks=2) as s:
        yield s


async def _post(sim: SimServer, path: str, body: Any = BODY, signer: AwsSigV4 | None = SIGNER
                ) -> tuple[int, dict[str, str], bytes]:
    up = UpstreamRequest("POST", sim.url + path, None, {"Content-Type": "application/json"}, orjson.dumps(body))
    if signer is not None:
        signer.sign(up, time.time())
    async with aiohttp.ClientSession() as http, http.post(up.url, headers=up.headers, data=up.body) as r:
        try:
            raw = await r.read()
        except aiohttp.ClientPayloadError:
            raw = b"<cut>"
        return r.status, dict(r.headers), raw


async def test_json_and_stream_answers(sim: SimServer) -> None:
    status, _, raw = await _post(sim, "/model/m%3A1/converse")
    answer = orjson.loads(raw)
    assert status == 200 and answer["stopReason"] == "max_tokens"
    assert answer["output"]["message"]["content"] == [{"text": "Echo: hello"}]
    assert answer["usage"] == {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3, "cacheReadInputTokens": 0,
                               "cacheWriteInputTokens": 0}
    status, headers, raw = await _post(sim, "/model/m%3A1/converse-stream")
    assert status == 200 and headers["Content-Type"] == es.MEDIA_TYPE
    names = [name for name, _ in es.EventStreamFraming().feed(raw)]
    assert names == ["messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "messageStop",
                     "metadata"]
    log = sim.requests()
    assert [(e["key"], e["model"], e["stream"], e["dialect"]) for e in log] == [
        (keys.TEST_ACCESS_KEY_ID, "m:1", False, "bedrock"), (keys.TEST_ACCESS_KEY_ID, "m:1", True, "bedrock")]


async def test_unsigned_and_badly_signed_requests_are_refused(sim: SimServer) -> None:
    status, headers, raw = await _post(sim, "/model/m/converse", signer=None)
    assert status == 403 and headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException:")
    status, headers, raw = await _post(sim, "/model/m/converse",
                                       signer=AwsSigV4(keys.TEST_ACCESS_KEY_ID, "wrong", "us-east-1"))
    assert status == 403 and headers["x-amzn-ErrorType"].startswith("InvalidSignatureException:")
    assert b"does not match" in raw and sim.requests() == []


async def test_faults(sim: SimServer) -> None:
    sim.add_faults(keys.TEST_ACCESS_KEY_ID, {"status": 429, "message": "slow down"},
                   {"kind": "exception", "status": 429, "after_chunks": 1},
                   {"kind": "malformed", "after_chunks": 1}, {"kind": "exception", "status": 503})
    status, _, raw = await _post(sim, "/model/m/converse-stream")
    assert (status, orjson.loads(raw)) == (429, {"message": "slow down"})
    status, _, raw = await _post(sim, "/model/m/converse-stream")
    assert status == 200
    assert [n for n, _ in es.EventStreamFraming().feed(raw)][-2:] == ["contentBlockDelta",
                                                                     "exception:throttlingException"]
    status, _, raw = await _post(sim, "/model/m/converse-stream")
    assert status == 200 and es.EventStreamFraming().feed(raw)[-1][0] == es.MALFORMED
    status, _, raw = await _post(sim, "/model/m/converse")  # no stream to break: a status answer
    assert (status, orjson.loads(raw)) == (503, {"message": "Simulated upstream error 503."})


async def test_an_exception_fault_cuts_a_dialect_without_exception_frames(sim: SimServer) -> None:
    sim.add_faults("ok", {"kind": "exception", "status": 500, "after_chunks": 1})
    async with aiohttp.ClientSession() as http, http.post(
            sim.url + "/v1/chat/completions", headers={"Authorization": "Bearer ok"},
            json={"model": "gpt-5", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    with pytest.raises(ValueError, match="status"):
        parse_fault({"kind": "exception"})

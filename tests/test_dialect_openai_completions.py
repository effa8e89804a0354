from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types import Completion

from router.canonical import (
    CanonicalRequest,
    Finish,
    ReasoningDelta,
    ResponseContext,
    StreamError,
    TextDelta,
    ToolCallStart,
    Usage,
)
from router.client_codecs import openai_chat
from router.client_codecs import openai_completions as ocm
from router.errors import BadRequest


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-3.5-turbo-instruct", "prompt": "Say", **extra}


def ctx(payload: dict[str, Any] | None = None, include_usage: bool = False) -> ResponseContext:
    request = ocm.decode_request(payload or body(), {})
    request.include_usage = include_usage
    return ResponseContext(id="cmpl-abc", model="gpt-3.5-turbo-instruct", created=1700000000, request=request)


def frames(data: bytes) -> list[Any]:
    assert data.endswith(b"\n\n")
    out: list[Any] = []
    for frame in data.split(b"\n\n")[:-1]:
        assert frame.startswith(b"data: ")
        payload = frame[6:]
        out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return out


def validate_chunk(chunk: dict[str, Any]) -> None:
    """The SDK types finish_reason as non-null, yet the stream (like OpenAI's) sends null mid-stream
    and the SDK parses stream chunks leniently; check everything else strictly."""
    choices = [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk["choices"]]
    Completion.model_validate({**chunk, "choices": choices})


def stream(events: list[Any], c: ResponseContext | None = None) -> bytes:
    enc = ocm.StreamEncoder(c or ctx())
    return enc.start() + b"".join(enc.feed(e) for e in events) + enc.finish()


DECODE_CASES = [
    ("string_prompt", body(), {"messages": [{"role": "user", "content": [{"type": "text", "text": "Say"}]}]}),
    ("one_item_list", body(prompt=["Hi"]),
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}),
    ("max_tokens", body(max_tokens=5), {"max_tokens": 5}),
    ("max_tokens_absent", body(), {"max_tokens": None}),
    ("sampling", body(n=2, stop="x", temperature=0.2, top_p=0.5, seed=3),
     {"n": 2, "stop": ["x"], "temperature": 0.2, "top_p": 0.5, "seed": 3}),
    ("stream_usage", body(stream=True, stream_options={"include_usage": True}),
     {"stream": True, "include_usage": True}),
    ("suffix_and_logprobs_ignored", body(suffix="end", logprobs=2, echo=False), {"system": None, "tools": None}),
]


@pytest.mark.parametrize("payload,expected", [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES])
def test_decode_request(payload: dict[str, Any], expected: dict[str, Any]) -> None:
    req = ocm.decode_request(payload, {})
    for key, value in expected.items():
        assert getattr(req, key) == value, key
    assert req.inbound == "openai.completions" and req.raw is payload


BAD_CASES = [
    ("body_list", [], None),
    ("body_null", None, None),
    ("body_string", "prompt", None),
    ("missing_model", {"prompt": "x"}, "model"),
    ("missing_prompt", {"model": "m"}, "prompt"),
    ("prompt_number", body(prompt=5), "prompt"),
    ("prompt_object", body(prompt={}), "prompt"),
    ("prompt_empty_list", body(prompt=[]), "prompt"),
    ("several_prompts", body(prompt=["a", "b"]), "prompt"),
    ("token_ids", body(prompt=[1, 2, 3]), "prompt"),
    ("token_id_batches", body(prompt=[[1, 2]]), "prompt"),
    ("echo_string", body(echo="yes"), "echo"),
    ("max_tokens_string", body(max_tokens="5"), "max_tokens"),
    ("temperature_list", body(temperature=[]), "temperature"),
    ("stop_object", body(stop={}), "stop"),
    ("stream_number", body(stream=1), "stream"),
]


@pytest.mark.parametrize("payload,param", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_decode_request_rejects(payload: Any, param: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        ocm.decode_request(payload, {})
    assert info.value.param == param


ENCODE_CASES = [
    ("text", body(), [TextDelta(" wor"), TextDelta("ld"), Finish("stop"), Usage(3, 2)], " world", "stop"),
    ("echo", body(echo=True), [TextDelta(" world"), Finish("length")], "Say world", "length"),
    ("tool_calls_finish_is_stop", body(), [ToolCallStart(0, "c", "f"), Finish("tool_calls")], "", "stop"),
    ("reasoning_dropped", body(), [ReasoningDelta("hmm"), TextDelta("x")], "x", "stop"),
    ("content_filter", body(), [Finish("content_filter")], "", "content_filter"),
]


@pytest.mark.parametrize(
    "payload,events,text,finish", [c[1:] for c in ENCODE_CASES], ids=[c[0] for c in ENCODE_CASES]
)
def test_encode_response(payload: dict[str, Any], events: list[Any], text: str, finish: str) -> None:
    obj = ocm.encode_response(events, ctx(payload))
    Completion.model_validate(obj)
    assert (obj["id"], obj["object"], obj["created"], obj["model"]) == (
        "cmpl-abc", "text_completion", 1700000000, "gpt-3.5-turbo-instruct")
    assert obj["choices"] == [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]
    usage = [e for e in events if isinstance(e, Usage)]
    assert obj["usage"]["total_tokens"] == (usage[0].total_tokens if usage else 0)


def test_stream_frames_exact() -> None:
    out = frames(stream([TextDelta(" wor"), TextDelta(""), TextDelta("ld"), Finish("stop")]))
    head = {"id": "cmpl-abc", "object": "text_completion", "created": 1700000000, "model": "gpt-3.5-turbo-instruct"}
    assert out == [
        {**head, "choices": [{"text": " wor", "index": 0, "logprobs": None, "finish_reason": None}]},
        {**head, "choices": [{"text": "ld", "index": 0, "logprobs": None, "finish_reason": None}]},
        {**head, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]},
        "[DONE]",
    ]
    for p in out[:-1]:
        validate_chunk(p)


STREAM_CASES = [
    ("echo_first", body(echo=True), False, [TextDelta("!"), Finish("stop")], "Say!", ["stop"]),
    ("unfinished_closed", body(), False, [TextDelta("a")], "a", ["stop"]),
    ("empty", body(), False, [], "", ["stop"]),
    ("two_choices", body(n=2), False, [TextDelta("a"), TextDelta("b", choice=1), Finish("length", 1)], "a",
     ["length", "stop"]),
    ("usage_chunk", body(), True, [TextDelta("a"), Finish("stop"), Usage(4, 1)], "a", ["stop"]),
    ("tool_events_ignored", body(), False, [ToolCallStart(0, "c", "f"), TextDelta("a"), Finish("tool_calls")], "a",
     ["stop"]),
]


@pytest.mark.parametrize(
    "payload,include_usage,events,text0,finishes",
    [c[1:] for c in STREAM_CASES],
    ids=[c[0] for c in STREAM_CASES],
)
def test_stream(payload: dict[str, Any], include_usage: bool, events: list[Any], text0: str,
                finishes: list[str]) -> None:
    payloads = frames(stream(events, ctx(payload, include_usage)))
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    for p in chunks:
        validate_chunk(p)
    text = "".join(c["text"] for p in chunks for c in p["choices"] if c["index"] == 0)
    assert text == text0
    assert [c["finish_reason"] for p in chunks for c in p["choices"] if c["finish_reason"]] == finishes
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5
    else:
        assert all("usage" not in p for p in chunks)


def test_stream_error() -> None:
    enc = ocm.StreamEncoder(ctx())
    payloads = frames(enc.feed(TextDelta("a")) + enc.feed(StreamError(504, "timeout", "idle")))
    assert payloads[-2:] == [{"error": {"message": "idle", "type": "timeout_error", "code": None, "param": None}},
                             "[DONE]"]


def test_error_body_is_shared_with_chat() -> None:
    assert ocm.error_body is openai_chat.error_body
    assert ocm.NAME == "openai.completions"


async def test_sdk_client_stream(aiohttp_server: Any) -> None:
    import openai
    from aiohttp import web

    data = stream([TextDelta(" wor"), TextDelta("ld"), Finish("stop"), Usage(2, 2)], ctx(include_usage=True))

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    server = await aiohttp_server(app)
    client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="k", max_retries=0)
    chunks = [c async for c in await client.completions.create(model="m", prompt="Say", stream=True)]
    assert "".join(ch.text for c in chunks for ch in c.choices) == " world"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 4


def test_canonical_request_shape() -> None:
    req = ocm.decode_request(body(), {})
    assert isinstance(req, CanonicalRequest)
    assert req.system is None and req.tools is None and req.reasoning is None

"""Property tests: no client body and no upstream answer, however malformed, crashes a decoder.

Inbound dialect decoders may only raise BadRequest (a 400 in the caller's dialect); upstream
decoders may only raise ValueError (the engine's ``malformed`` outcome). Anything else would reach
the error boundary as a 500. The end-to-end variant posts random bodies to a running gateway.
"""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from router.canonical import CanonicalRequest
from router.client_codecs import (
    anthropic_messages,
    gemini_native,
    openai_chat,
    openai_completions,
    openai_responses,
)
from router.errors import BadRequest, GatewayError
from router.exchange import ClientHeaders
from router.registry import template_filters
from router.snapshot import build
from router.upstream_codecs import anthropic as dec_anthropic
from router.upstream_codecs import gemini as dec_gemini
from router.upstream_codecs import openai as dec_openai
from router.upstream_request import render_request
from tests.conftest import ROUTES, Harness

# No shrink phase: a failure prints its (unshrunk) example at once and the file stays fast.
PURE = settings(max_examples=200, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# --- strategies ------------------------------------------------------------------------------------

FIELD_NAMES = [
    "model", "messages", "role", "content", "type", "text", "name", "arguments", "function", "tools",
    "tool_calls", "tool_call_id", "tool_choice", "image_url", "url", "detail", "input", "output",
    "instructions", "prompt", "max_tokens", "max_output_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "stop", "stream", "stream_options", "include_usage", "n", "seed", "user", "metadata",
    "response_format", "json_schema", "schema", "strict", "reasoning", "effort", "reasoning_effort",
    "system", "thinking", "budget_tokens", "signature", "id", "tool_use", "tool_result", "is_error",
    "source", "media_type", "data", "call_id", "previous_response_id", "contents", "parts", "inlineData",
    "mimeType", "functionCall", "functionResponse", "args", "response", "systemInstruction",
    "generationConfig", "maxOutputTokens", "stopSequences", "candidateCount", "responseMimeType",
    "responseSchema", "responseJsonSchema", "thinkingConfig", "thinkingBudget", "toolConfig",
    "functionCallingConfig", "mode", "allowedFunctionNames", "functionDeclarations", "parameters",
    "candidates", "finishReason", "usageMetadata", "promptTokenCount", "candidatesTokenCount",
    "thought", "thoughtSignature", "choices", "delta", "message", "finish_reason", "usage",
    "prompt_tokens", "completion_tokens", "index", "stop_reason", "content_block", "input_tokens",
    "output_tokens", "partial_json", "error", "code", "status", "promptFeedback", "blockReason",
    "description", "input_schema", "properties", "items", "required", "enum", "format", "anyOf",
    "$ref", "$defs", "parallel_tool_calls", "disable_parallel_tool_use", "refusal", "logprobs",
]

SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(["user", "assistant", "system", "tool", "model", "function", "developer",
                              "text", "image_url", "tool_use", "tool_result", "thinking", "input_text",
                              "function_call", "function_call_output", "message", "auto", "none",
                              "required", "any", "object", "string", "STOP", "MAX_TOKENS", ""]))
KEYS = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(KEYS, children, max_size=4), max_leaves=12)
# what a mutation puts in place of a value: small, so that deep edits of a valid body stay cheap
SMALL_JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=2)
                          | st.dictionaries(KEYS, children, max_size=2), max_leaves=4)


_CONTAINER_ACTIONS = st.sampled_from(["descend", "descend", "drop", "replace"])
_INDEX = [st.integers(0, n - 1) if n else st.nothing() for n in range(32)]


def _mutate(draw: Any, node: Any) -> Any:
    """One random edit somewhere in ``node``: replace a value, drop a field/item, or go deeper."""
    action = draw(_CONTAINER_ACTIONS) if isinstance(node, (dict, list)) and node else "replace"
    if action == "replace":
        return draw(SMALL_JSON)
    if isinstance(node, dict):
        keys = sorted(node)
        key = keys[draw(_INDEX[len(keys)])]
        out = dict(node)
        if action == "drop":
            del out[key]
        else:
            out[key] = _mutate(draw, node[key])
        return out
    index = draw(_INDEX[len(node)])
    items = list(node)
    if action == "drop":
        del items[index]
    else:
        items[index] = _mutate(draw, node[index])
    return items


_EDITS = st.integers(1, 3)


@st.composite
def mutated(draw: Any, base: Any) -> Any:
    body = base  # _mutate copies along the edited path and never changes its input
    for _ in range(draw(_EDITS)):
        body = _mutate(draw, body)
    return copy.deepcopy(body)


# --- valid bodies of each inbound dialect ---------------------------------------------------------

FN = {"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}}, "required": ["city"]}}

VALID_REQUESTS: dict[str, tuple[ModuleType, dict[str, Any], dict[str, Any]]] = {
    "openai.chat": (openai_chat, {}, {
        "model": "gpt-4o", "temperature": 0.5, "max_tokens": 50, "stop": ["x"], "user": "u",
        "stream": True, "stream_options": {"include_usage": True}, "n": 1, "seed": 1,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": FN}], "tool_choice": "auto",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"P\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ]}),
    "openai.completions": (openai_completions, {}, {
        "model": "gpt-4o", "prompt": ["hello"], "max_tokens": 5, "temperature": 1, "stop": "x",
        "stream": False, "echo": False, "suffix": None}),
    "openai.responses": (openai_responses, {}, {
        "model": "gpt-4o", "instructions": "be brief", "max_output_tokens": 100, "temperature": 0.2,
        "reasoning": {"effort": "low"}, "text": {"format": {"type": "json_schema", "name": "n",
                                                             "schema": {"type": "object"}}},
        "tools": [{"type": "function", **FN}], "tool_choice": {"type": "function", "name": "get_weather"},
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                         {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ]}),
    "anthropic.messages": (anthropic_messages, {}, {
        "model": "claude-x", "max_tokens": 100, "system": [{"type": "text", "text": "be brief"}],
        "temperature": 0.5, "top_k": 3, "stop_sequences": ["x"], "metadata": {"user_id": "u"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "get_weather", "description": "d", "input_schema": FN["parameters"]}],
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                              {"type": "tool_use", "id": "t1", "name": "get_weather",
                                               "input": {"city": "P"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
        ]}),
    "gemini": (gemini_native, {"model": "gemini-x"}, {
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"temperature": 0.5, "maxOutputTokens": 64, "stopSequences": ["x"],
                             "responseMimeType": "application/json", "responseSchema": {"type": "OBJECT"},
                             "thinkingConfig": {"thinkingBudget": 128}},
        "tools": [{"functionDeclarations": [FN]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "P"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"r": 1}}}]},
        ]}),
}

INBOUND_BODIES = {name: JSON | mutated(body) for name, (_, _, body) in VALID_REQUESTS.items()}
_SNAPSHOT = build(ROUTES, 0, template_filters(), env={})[0]
TEMPLATES = {name: _SNAPSHOT.providers[name].template for name in ("simulator", "sim-openai", "sim-anthropic")}


def check_decode(module: ModuleType, body: Any, params: dict[str, Any]) -> None:
    """Decoding raises only BadRequest; a decoded request renders through every shipped template."""
    try:
        req = module.decode_request(body, dict(params))
    except BadRequest as e:
        assert e.status == 400 and isinstance(e.message, str) and e.message
        return
    assert isinstance(req, CanonicalRequest)
    for name, template in TEMPLATES.items():
        ctx = {"request": req, "model": "m", "stream": req.stream, "client_headers": ClientHeaders({}),
               "provider": {"name": name, "base_url": "http://up"},
               "account": {"email": "e", "id": "e", "api_key": "k"}}
        try:
            up = render_request(template, ctx, "http://up")
        except GatewayError as e:
            assert 400 <= e.status < 500, (name, e.status, e.message)  # a client problem, not a crash
            continue
        orjson.loads(up.body)


def test_valid_bodies_decode() -> None:
    for name, (module, params, body) in VALID_REQUESTS.items():
        req = module.decode_request(copy.deepcopy(body), dict(params))
        assert isinstance(req, CanonicalRequest), name
        check_decode(module, body, params)


@pytest.mark.parametrize("dialect", list(VALID_REQUESTS))
@PURE
@given(data=st.data())
def test_inbound_decoder_on_random_and_mutated_bodies(dialect: str, data: st.DataObject) -> None:
    """Random JSON values and mutations of a valid body (dropped fields, values replaced)."""
    module, params, _ = VALID_REQUESTS[dialect]
    check_decode(module, data.draw(INBOUND_BODIES[dialect]), params)


# --- upstream decoders ------------------------------------------------------------------------------

UPSTREAM: dict[str, tuple[ModuleType, dict[str, Any], list[tuple[str | None, dict[str, Any]]]]] = {
    "gemini": (dec_gemini, {
        "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
            {"text": "thinking", "thought": True, "thoughtSignature": "c2ln"}, {"text": "hi"},
            {"functionCall": {"name": "f", "args": {"a": 1}}}]}}],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2, "totalTokenCount": 3,
                          "thoughtsTokenCount": 1, "cachedContentTokenCount": 0},
        "modelVersion": "gemini-x"}, [
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "hi"}]}}]}),
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {}}}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2}}),
        (None, {"promptFeedback": {"blockReason": "SAFETY"}}),
        (None, {"error": {"code": 429, "message": "m", "status": "RESOURCE_EXHAUSTED"}}),
    ]),
    "openai": (dec_openai, {
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "hi", "reasoning_content": "r",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                  "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 1}}}, [
        (None, {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}}]}),
        (None, {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]}}]}),
        (None, {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}]}),
        (None, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        (None, {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}),
        (None, {"error": {"message": "m", "type": "server_error"}}),
    ]),
    "anthropic": (dec_anthropic, {
        "id": "msg", "type": "message", "role": "assistant", "model": "m", "stop_reason": "tool_use",
        "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "hi"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
        "usage": {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 0}}, [
        ("message_start", {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "hi"}}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "thinking_delta", "thinking": "t"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"}),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "m"}}),
    ]),
}

UPSTREAM_BODIES = {name: JSON | st.binary(max_size=64) | mutated(response)
                   for name, (_, response, _) in UPSTREAM.items()}
EVENT_NAMES = st.none() | st.sampled_from(["message_start", "content_block_start", "content_block_delta",
                                           "content_block_stop", "message_delta", "message_stop", "error",
                                           "ping"]) | st.text(max_size=10)


def check_response(module: ModuleType, body: Any) -> None:
    try:
        events = module.decode_response(body)
    except ValueError:
        return
    assert isinstance(events, list)


@pytest.mark.parametrize("upstream", list(UPSTREAM))
def test_valid_upstream_answers_decode(upstream: str) -> None:
    module, response, frames = UPSTREAM[upstream]
    assert module.decode_response(copy.deepcopy(response))
    decoder = module.StreamDecoder()
    for name, frame in frames[:-1]:  # the last sample frame is an error event
        decoder.feed(name, orjson.dumps(frame))
    decoder.finish()


@pytest.mark.parametrize("upstream", list(UPSTREAM))
@PURE
@given(data=st.data())
def test_upstream_decode_response_on_random_input(upstream: str, data: st.DataObject) -> None:
    """Random JSON, random bytes and mutations of a valid answer."""
    check_response(UPSTREAM[upstream][0], data.draw(UPSTREAM_BODIES[upstream]))


def _frame_strategy(samples: list[tuple[str | None, dict[str, Any]]]) -> st.SearchStrategy[Any]:
    valid_frame = st.sampled_from([(name, orjson.dumps(frame)) for name, frame in samples])
    mutated_frame = st.one_of([st.tuples(st.just(name) | EVENT_NAMES, mutated(frame).map(orjson.dumps))
                               for name, frame in samples])
    random_frame = st.tuples(EVENT_NAMES, st.binary(max_size=40) | SMALL_JSON.map(orjson.dumps))
    return st.lists(valid_frame | mutated_frame | random_frame, max_size=5)


FRAMES = {name: _frame_strategy(samples) for name, (_, _, samples) in UPSTREAM.items()}


@pytest.mark.parametrize("upstream", list(UPSTREAM))
@PURE
@given(data=st.data())
def test_upstream_stream_decoder_on_random_frames(upstream: str, data: st.DataObject) -> None:
    module = UPSTREAM[upstream][0]
    frames = data.draw(FRAMES[upstream])
    decoder = module.StreamDecoder()
    try:
        for name, payload in frames:
            assert isinstance(decoder.feed(name, payload), list)
        assert isinstance(decoder.finish(), list)
    except ValueError:
        pass  # the engine's "malformed" outcome


# --- deterministic sweep: every field of every valid sample replaced by hostile values ---------------

HOSTILE = [None, True, 0, -1, 1.5, 1e20, 2**63 - 1, 2**64 - 1, "", "x", [], {}, [[]], [{}], ["x"],
           {"type": []}, {"type": {}}, {"a": 1}]
DROP = object()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Any:
    yield prefix
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _paths(child, prefix + (key,))


def _replaced(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(node)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if value is DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def _variants(sample: Any) -> Any:
    for path in _paths(sample):
        for value in HOSTILE + ([DROP] if path else []):
            yield path, _replaced(sample, path, value)


@pytest.mark.parametrize("dialect", list(VALID_REQUESTS))
def test_inbound_decoder_sweep(dialect: str) -> None:
    """Regressions found by the properties above, made deterministic: e.g. ``response_format:
    {"type": []}`` (unhashable in a set lookup), ``max_tokens: 1e20`` (an integral float turned into
    an int wider than 64 bits) and a 2**64-1 thinking budget (overflows once a filter adds max_tokens
    to it) break the upstream body's JSON encoding; they must be 400s, not crashes."""
    module, params, valid = VALID_REQUESTS[dialect]
    failures = []
    for path, body in _variants(valid):
        try:
            check_decode(module, body, params)
        except Exception as e:  # noqa: BLE001 - collect every crash, not only the first
            failures.append(f"{'/'.join(map(str, path))}: {type(e).__name__}: {e}")
    assert failures == [], "\n".join(sorted(set(failures))[:20])


@pytest.mark.parametrize("upstream", list(UPSTREAM))
def test_upstream_decoder_sweep(upstream: str) -> None:
    module, response, frames = UPSTREAM[upstream]
    failures = []
    for path, body in _variants(response):
        try:
            check_response(module, body)
        except Exception as e:  # noqa: BLE001
            failures.append(f"response {'/'.join(map(str, path))}: {type(e).__name__}: {e}")
    for i, (name, frame) in enumerate(frames):
        for path, payload in _variants(frame):
            decoder = module.StreamDecoder()
            try:
                for before_name, before in frames[:i]:
                    decoder.feed(before_name, orjson.dumps(before))
                decoder.feed(name, orjson.dumps(payload))
                decoder.finish()
            except ValueError:
                pass
            except Exception as e:  # noqa: BLE001
                failures.append(f"frame {i} {'/'.join(map(str, path))}: {type(e).__name__}: {e}")
    assert failures == [], "\n".join(failures[:20])


# --- end to end: random bodies through a running gateway ---------------------------------------------

ROUTE_FOR = {
    "openai.chat": ("/v1/chat/completions", "openai"),
    "openai.completions": ("/v1/completions", "openai"),
    "openai.responses": ("/v1/responses", "openai"),
    "anthropic.messages": ("/v1/messages", "anthropic"),
    "gemini": ("/v1beta/models/gemini-x:generateContent", "gemini"),
}


def _collect(dialect: str, n: int) -> list[Any]:
    """n reproducible random bodies (half free-form JSON, half mutations of a valid body)."""
    out: list[Any] = []

    @settings(max_examples=n, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(body=INBOUND_BODIES[dialect])
    def gather(body: Any) -> None:
        out.append(body)

    gather()
    return out


def check_error_shape(style: str, doc: Any) -> None:
    assert isinstance(doc, dict), doc
    if style == "anthropic":
        assert doc.get("type") == "error", doc
        assert isinstance(doc["error"]["type"], str) and doc["error"]["message"], doc
    elif style == "gemini":
        err = doc["error"]
        assert err["code"] == 400 and err["status"] == "INVALID_ARGUMENT" and err["message"], doc
    else:
        err = doc["error"]
        assert err["type"] == "invalid_request_error" and isinstance(err["message"], str) and err["message"], doc


@pytest.mark.parametrize("dialect", list(ROUTE_FOR))
async def test_random_bodies_through_the_gateway(gw: Harness, dialect: str) -> None:
    path, style = ROUTE_FOR[dialect]
    bodies = _collect(dialect, 50)
    statuses = []
    for body in bodies:
        async with gw.session.post(gw.url + path, data=orjson.dumps(body),
                                   headers={"Content-Type": "application/json"}) as r:
            raw = await r.read()
            statuses.append(r.status)
            assert r.status in (200, 400), (body, r.status, raw[:500])
            if r.status == 400:
                check_error_shape(style, orjson.loads(raw))
    assert statuses.count(400) >= 10  # the bodies really were mostly invalid


def _with(dialect: str, path: tuple[Any, ...], value: Any, **top: Any) -> Any:
    return {**_replaced(VALID_REQUESTS[dialect][2], path, value), **top}


HOSTILE_BODIES = [
    pytest.param("openai.chat", _with("openai.chat", ("response_format",), {"type": []}, stream=False),
                 id="chat-response_format-type-list"),
    pytest.param("openai.chat", _with("openai.chat", ("response_format",), {"type": {}}, stream=False),
                 id="chat-response_format-type-object"),
    pytest.param("anthropic.messages", _with("anthropic.messages", ("thinking", "budget_tokens"), 2**64 - 1),
                 id="anthropic-huge-thinking-budget"),
    pytest.param("gemini", _with("gemini", ("generationConfig", "thinkingConfig", "thinkingBudget"), 2**64 - 1),
                 id="gemini-huge-thinking-budget-to-claude"),
    pytest.param("anthropic.messages", _with("anthropic.messages", ("max_tokens",), 1e20),
                 id="anthropic-max_tokens-1e20"),
    pytest.param("gemini", _with("gemini", ("generationConfig", "maxOutputTokens"), 1e20),
                 id="gemini-maxOutputTokens-1e20"),
]


@pytest.mark.parametrize("dialect,body", HOSTILE_BODIES)
async def test_hostile_bodies_through_the_gateway(gw: Harness, dialect: str, body: Any) -> None:
    """Bodies the sweep found: a client mistake must come back as a 400 (or be served), never a 500."""
    path, style = ROUTE_FOR[dialect]
    if dialect == "gemini":
        path = "/v1beta/models/claude-x:generateContent"  # through the Anthropic upstream template
    async with gw.session.post(gw.url + path, data=orjson.dumps(body),
                               headers={"Content-Type": "application/json"}) as r:
        raw = await r.read()
        assert r.status in (200, 400), (r.status, raw[:300])
        if r.status == 400:
            check_error_shape(style, orjson.loads(raw))

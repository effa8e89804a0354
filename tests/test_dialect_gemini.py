"""The inbound Gemini dialect (router.client_codecs.gemini_native), checked against google-genai's types
and, end to end, against the google-genai client talking to a local aiohttp server."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from router.canonical import (
    CanonicalRequest,
    Event,
    Finish,
    ReasoningDelta,
    ResponseContext,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from router.client_codecs import gemini_native as g
from router.errors import BadRequest, GatewayError

MODEL = "gemini-2.5-flash"


def user(*parts: Any) -> dict[str, Any]:
    return {"role": "user", "parts": list(parts)}


def model(*parts: Any) -> dict[str, Any]:
    return {"role": "model", "parts": list(parts)}


def decode(body: Any, **params: Any) -> CanonicalRequest:
    return g.decode_request(body, {"model": MODEL, **params})


def ctx() -> ResponseContext:
    return ResponseContext(id="resp-1", model=MODEL, created=1700000000, request=CanonicalRequest(MODEL, []))


# --- decode_request: messages ------------------------------------------------------------------------

MESSAGE_CASES = [
    pytest.param(
        [user({"text": "hi"})],
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        id="user-text",
    ),
    pytest.param(
        [{"parts": [{"text": "no role"}]}],
        [{"role": "user", "content": [{"type": "text", "text": "no role"}]}],
        id="role-defaults-to-user",
    ),
    pytest.param(
        "just a string",
        [{"role": "user", "content": [{"type": "text", "text": "just a string"}]}],
        id="string-contents",
    ),
    pytest.param(
        [
            user({"inlineData": {"mimeType": "image/png", "data": "QUJD"}}),
            user({"file_data": {"mime_type": "image/jpeg", "file_uri": "https://x.test/a.jpg"}}),
        ],
        [
            {"role": "user", "content": [{"type": "image", "url": None, "media_type": "image/png", "data": "QUJD"}]},
            {
                "role": "user",
                "content": [{"type": "image", "url": "https://x.test/a.jpg", "media_type": "image/jpeg", "data": None}],
            },
        ],
        id="inline-and-file-data-snake-case",
    ),
    pytest.param(
        [
            user({"text": "weather?"}),
            model(
                {"text": "plan", "thought": True},
                {"functionCall": {"name": "get", "args": {"city": "Paris"}}, "thoughtSignature": "SIG"},
                {"functionCall": {"name": "get"}},
            ),
            user(
                {"functionResponse": {"name": "get", "response": {"temp": 21}}},
                {"functionResponse": {"name": "get", "response": {"error": "down"}}},
                {"text": "and?"},
            ),
        ],
        [
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "text": "plan", "signature": None},
                    {"type": "thinking", "text": "", "signature": "SIG"},
                    {"type": "tool_call", "id": "call_1", "name": "get", "arguments": '{"city":"Paris"}'},
                    {"type": "tool_call", "id": "call_2", "name": "get", "arguments": "{}"},
                ],
            },
            {
                "role": "tool",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_call_id": "call_1",
                        "name": "get",
                        "content": '{"temp":21}',
                        "is_error": False,
                    }
                ],
            },
            {
                "role": "tool",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_call_id": "call_2",
                        "name": "get",
                        "content": '{"error":"down"}',
                        "is_error": True,
                    }
                ],
            },
            {"role": "user", "content": [{"type": "text", "text": "and?"}]},
        ],
        id="function-round-trip-ids-by-name-in-order",
    ),
    pytest.param(
        [
            model({"function_call": {"id": "given", "name": "f", "args": {}}}, {"functionCall": {"name": "h"}}),
            user(
                {"functionResponse": {"name": "h", "response": {}}}, {"functionResponse": {"id": "given", "name": "f"}}
            ),
        ],
        [
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_call", "id": "given", "name": "f", "arguments": "{}"},
                    {"type": "tool_call", "id": "call_2", "name": "h", "arguments": "{}"},
                ],
            },
            {
                "role": "tool",
                "content": [
                    {"type": "tool_result", "tool_call_id": "call_2", "name": "h", "content": "{}", "is_error": False}
                ],
            },
            {
                "role": "tool",
                "content": [
                    {"type": "tool_result", "tool_call_id": "given", "name": "f", "content": "{}", "is_error": False}
                ],
            },
        ],
        id="explicit-ids-kept-and-matched",
    ),
    pytest.param(
        [
            user({"inlineData": {"mimeType": "image/png", "data": "a-b_"}}),
            model({"text": "x", "thoughtSignature": "c-d_"}),
        ],
        [
            {"role": "user", "content": [{"type": "image", "url": None, "media_type": "image/png", "data": "a+b/"}]},
            {
                "role": "assistant",
                "content": [{"type": "thinking", "text": "", "signature": "c+d/"}, {"type": "text", "text": "x"}],
            },
        ],
        id="urlsafe-base64-to-standard",
    ),
    pytest.param(
        [user({"functionResponse": {"name": "orphan", "response": {"r": 1}}})],
        [
            {
                "role": "tool",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_call_id": "call_1",
                        "name": "orphan",
                        "content": '{"r":1}',
                        "is_error": False,
                    }
                ],
            }
        ],
        id="orphan-response-gets-fresh-id",
    ),
    pytest.param(
        [model({"text": "answer", "thoughtSignature": "S"}), {"role": "model", "parts": []}],
        [
            {
                "role": "assistant",
                "content": [{"type": "thinking", "text": "", "signature": "S"}, {"type": "text", "text": "answer"}],
            }
        ],
        id="signature-on-text-and-empty-turn-dropped",
    ),
    pytest.param(
        [
            model({"text": "a"}),
            model({"functionCall": {"name": "f"}}),
            model({"text": ""}),
            user({"text": "u"}),
            user({"text": "v"}),
        ],
        [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "tool_call", "id": "call_1", "name": "f", "arguments": "{}"},
                ],
            },
            {"role": "user", "content": [{"type": "text", "text": "u"}]},
            {"role": "user", "content": [{"type": "text", "text": "v"}]},
        ],
        id="consecutive-model-turns-merged",
    ),
]


@pytest.mark.parametrize(("contents", "expected"), MESSAGE_CASES)
def test_decode_messages(contents: Any, expected: list[dict[str, Any]]) -> None:
    assert decode({"contents": contents}).messages == expected


# --- decode_request: the other fields ----------------------------------------------------------------

FIELD_CASES = [
    pytest.param(
        {},
        {},
        {
            "system": None,
            "tools": None,
            "tool_choice": None,
            "stream": False,
            "inbound": "gemini",
            "include_usage": True,
        },
        id="defaults",
    ),
    pytest.param(
        {"systemInstruction": {"parts": [{"text": "Be"}, {"text": "brief"}]}},
        {},
        {"system": "Be\nbrief"},
        id="system-instruction",
    ),
    pytest.param({"system_instruction": "plain"}, {}, {"system": "plain"}, id="system-snake-string"),
    pytest.param(
        {
            "generationConfig": {
                "temperature": 0.7,
                "topP": 0.9,
                "topK": 40,
                "maxOutputTokens": 100,
                "stopSequences": ["END"],
                "candidateCount": 2,
                "seed": 5,
            }
        },
        {},
        {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "max_tokens": 100, "stop": ["END"], "n": 2, "seed": 5},
        id="generation-config",
    ),
    pytest.param(
        {"generation_config": {"max_output_tokens": 7, "stop_sequences": [], "top_p": 1}},
        {},
        {"max_tokens": 7, "stop": None, "top_p": 1},
        id="generation-config-snake",
    ),
    pytest.param(
        {"generationConfig": {"responseMimeType": "application/json"}},
        {},
        {"response_format": {"type": "json_object", "schema": None, "name": None, "strict": None}},
        id="json-object",
    ),
    pytest.param(
        {
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "object", "additionalProperties": False},
            }
        },
        {},
        {
            "response_format": {
                "type": "json_schema",
                "name": None,
                "strict": None,
                "schema": {"type": "object", "additionalProperties": False},
            }
        },
        id="json-schema-passthrough",
    ),
    pytest.param(
        {
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseSchema": {
                    "type": "OBJECT",
                    "properties": {"a": {"type": "STRING", "nullable": True, "format": "enum", "enum": ["x"]}},
                    "propertyOrdering": ["a"],
                },
            }
        },
        {},
        {
            "response_format": {
                "type": "json_schema",
                "name": None,
                "strict": None,
                "schema": {"type": "object", "properties": {"a": {"type": ["string", "null"], "enum": ["x"]}}},
            }
        },
        id="gemini-schema-to-json-schema",
    ),
    pytest.param(
        {"generationConfig": {"responseMimeType": "text/plain", "responseSchema": {"type": "STRING"}}},
        {},
        {"response_format": None},
        id="text-mime-ignored",
    ),
    pytest.param(
        {"generationConfig": {"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}},
        {},
        {"reasoning": {"effort": None, "budget": 1024}},
        id="thinking-budget",
    ),
    pytest.param(
        {"generationConfig": {"thinking_config": {"thinking_level": "HIGH"}}},
        {},
        {"reasoning": {"effort": "high", "budget": None}},
        id="thinking-level-snake",
    ),
    pytest.param(
        {"generationConfig": {"thinkingConfig": {"includeThoughts": False}}},
        {},
        {"reasoning": None},
        id="thinking-without-budget",
    ),
    pytest.param(
        {
            "tools": [
                {
                    "functionDeclarations": [
                        {
                            "name": "f",
                            "description": "d",
                            "parameters": {
                                "type": "OBJECT",
                                "properties": {
                                    "n": {"type": "INTEGER"},
                                    "l": {"type": "ARRAY", "items": {"type": "STRING"}},
                                },
                                "required": ["n"],
                            },
                        },
                        {"name": "g", "parametersJsonSchema": {"type": "object", "$defs": {}}},
                        {"name": "h"},
                    ]
                },
                {"googleSearch": {}},
            ]
        },
        {},
        {
            "tools": [
                {
                    "name": "f",
                    "description": "d",
                    "parameters": {
                        "type": "object",
                        "properties": {"n": {"type": "integer"}, "l": {"type": "array", "items": {"type": "string"}}},
                        "required": ["n"],
                    },
                },
                {"name": "g", "description": None, "parameters": {"type": "object", "$defs": {}}},
                {"name": "h", "description": None, "parameters": None},
            ]
        },
        id="tools",
    ),
    pytest.param({"tools": [{"googleSearch": {}}]}, {}, {"tools": None}, id="builtin-tools-only"),
    pytest.param(
        {"toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}, {}, {"tool_choice": "auto"}, id="mode-auto"
    ),
    pytest.param(
        {"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}, {}, {"tool_choice": "none"}, id="mode-none"
    ),
    pytest.param(
        {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}, {}, {"tool_choice": "required"}, id="mode-any"
    ),
    pytest.param(
        {"toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}},
        {},
        {"tool_choice": {"name": "f"}},
        id="mode-any-named",
    ),
    pytest.param(
        {"tool_config": {"function_calling_config": {"mode": "any", "allowed_function_names": ["f", "g"]}}},
        {},
        {"tool_choice": "required"},
        id="mode-any-several-names-snake",
    ),
    pytest.param(
        {"toolConfig": {"functionCallingConfig": {"mode": "VALIDATED"}}},
        {},
        {"tool_choice": "auto"},
        id="mode-validated",
    ),
    pytest.param({}, {"model": "models/gemini-2.5-pro"}, {"model": "gemini-2.5-pro"}, id="models-prefix-stripped"),
    pytest.param(
        {},
        {"model": "gemini-2.5-pro:streamGenerateContent"},
        {"model": "gemini-2.5-pro", "stream": True},
        id="method-suffix",
    ),
    pytest.param({}, {"stream": True}, {"stream": True}, id="stream-param-true"),
    pytest.param({}, {"stream": "1"}, {"stream": True}, id="stream-param-string"),
    pytest.param({}, {"alt": "sse"}, {"stream": True}, id="alt-sse"),
    pytest.param({}, {"alt": "json"}, {"stream": False}, id="alt-json"),
]


@pytest.mark.parametrize(("extra", "params", "expected"), FIELD_CASES)
def test_decode_fields(extra: dict[str, Any], params: dict[str, Any], expected: dict[str, Any]) -> None:
    body = {"contents": [user({"text": "hi"})], **extra}
    req = decode(body, **params)
    for field, value in expected.items():
        assert getattr(req, field) == value, field
    assert req.raw is body


def test_decode_count_tokens_wrapper() -> None:
    body = {
        "generateContentRequest": {
            "model": "models/gemini-2.5-pro",
            "contents": [user({"text": "x"})],
            "systemInstruction": {"parts": [{"text": "s"}]},
        }
    }
    req = g.decode_request(body, {})
    assert req.model == "gemini-2.5-pro"
    assert req.system == "s"
    assert req.messages == [{"role": "user", "content": [{"type": "text", "text": "x"}]}]


BAD_REQUESTS = [
    pytest.param([], {}, None, id="body-list"),
    pytest.param("x", {}, None, id="body-string"),
    pytest.param(None, {}, None, id="body-null"),
    pytest.param({"contents": []}, {"model": None}, "model", id="no-model"),
    pytest.param({"contents": []}, {"model": "models/"}, "model", id="empty-model"),
    pytest.param({}, {}, "contents", id="no-contents"),
    pytest.param({"contents": 3}, {}, "contents", id="contents-number"),
    pytest.param({"contents": [1]}, {}, "contents[0]", id="content-not-object"),
    pytest.param({"contents": [{"role": "system", "parts": []}]}, {}, "contents[0].role", id="bad-role"),
    pytest.param({"contents": [{"role": 1, "parts": []}]}, {}, "contents[0].role", id="role-not-string"),
    pytest.param({"contents": [{"parts": {}}]}, {}, "contents[0].parts", id="parts-not-list"),
    pytest.param({"contents": [user(7)]}, {}, "contents[0].parts[0]", id="part-not-object"),
    pytest.param({"contents": [user({"text": 5})]}, {}, "contents[0].parts[0].text", id="text-not-string"),
    pytest.param({"contents": [user({"videoMetadata": {}})]}, {}, "contents[0].parts[0]", id="unsupported-part"),
    pytest.param(
        {"contents": [user({"inlineData": "x"})]}, {}, "contents[0].parts[0].inlineData", id="inline-not-object"
    ),
    pytest.param(
        {"contents": [user({"inlineData": {"mimeType": "image/png"}})]},
        {},
        "contents[0].parts[0].inlineData.data",
        id="inline-no-data",
    ),
    pytest.param(
        {"contents": [user({"fileData": {"mimeType": "image/png"}})]},
        {},
        "contents[0].parts[0].fileData.fileUri",
        id="file-no-uri",
    ),
    pytest.param(
        {"contents": [user({"functionCall": {"name": "f"}})]},
        {},
        "contents[0].parts[0]",
        id="function-call-in-user-turn",
    ),
    pytest.param(
        {"contents": [model({"functionResponse": {"name": "f"}})]},
        {},
        "contents[0].parts[0]",
        id="function-response-in-model-turn",
    ),
    pytest.param(
        {"contents": [model({"functionCall": {"args": {}}})]},
        {},
        "contents[0].parts[0].functionCall.name",
        id="call-no-name",
    ),
    pytest.param(
        {"contents": [model({"functionCall": {"name": "f", "args": "{}"}})]},
        {},
        "contents[0].parts[0].functionCall.args",
        id="call-args-string",
    ),
    pytest.param(
        {"contents": [user({"functionResponse": {"response": {}}})]},
        {},
        "contents[0].parts[0].functionResponse.name",
        id="response-no-name",
    ),
    pytest.param(
        {"contents": [user({"functionResponse": {"name": "f", "response": "ok"}})]},
        {},
        "contents[0].parts[0].functionResponse.response",
        id="response-not-object",
    ),
    pytest.param({"contents": [], "systemInstruction": 3}, {}, "systemInstruction", id="system-number"),
    pytest.param(
        {"contents": [], "systemInstruction": {"parts": [{"inlineData": {}}]}},
        {},
        "systemInstruction.parts[0]",
        id="system-non-text",
    ),
    pytest.param({"contents": [], "tools": "x"}, {}, "tools", id="tools-string"),
    pytest.param(
        {"contents": [], "tools": [{"functionDeclarations": {}}]},
        {},
        "tools[0].functionDeclarations",
        id="declarations-not-list",
    ),
    pytest.param(
        {"contents": [], "tools": [{"functionDeclarations": [{"description": "x"}]}]},
        {},
        "tools[0].functionDeclarations[0].name",
        id="declaration-no-name",
    ),
    pytest.param(
        {"contents": [], "tools": [{"functionDeclarations": [{"name": "f", "parameters": []}]}]},
        {},
        "tools[0].functionDeclarations[0].parameters",
        id="parameters-list",
    ),
    pytest.param({"contents": [], "toolConfig": []}, {}, "toolConfig", id="tool-config-list"),
    pytest.param(
        {"contents": [], "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}},
        {},
        "toolConfig.functionCallingConfig.mode",
        id="unknown-mode",
    ),
    pytest.param(
        {"contents": [], "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [1]}}},
        {},
        "toolConfig.functionCallingConfig.allowedFunctionNames[0]",
        id="allowed-name-not-string",
    ),
    pytest.param({"contents": [], "generationConfig": "hot"}, {}, "generationConfig", id="config-string"),
    pytest.param(
        {"contents": [], "generationConfig": {"temperature": "hot"}},
        {},
        "generationConfig.temperature",
        id="temperature-string",
    ),
    pytest.param(
        {"contents": [], "generationConfig": {"temperature": True}},
        {},
        "generationConfig.temperature",
        id="temperature-bool",
    ),
    pytest.param(
        {"contents": [], "generationConfig": {"maxOutputTokens": 1.5}},
        {},
        "generationConfig.maxOutputTokens",
        id="max-tokens-float",
    ),
    pytest.param(
        {"contents": [], "generationConfig": {"maxOutputTokens": 0}},
        {},
        "generationConfig.maxOutputTokens",
        id="max-tokens-zero",
    ),
    pytest.param({"contents": [], "generation_config": {"top_k": "4"}}, {}, "generationConfig.topK", id="top-k-string"),
    pytest.param(
        {"contents": [], "generationConfig": {"stopSequences": "END"}},
        {},
        "generationConfig.stopSequences",
        id="stop-string",
    ),
    pytest.param(
        {"contents": [], "generationConfig": {"stopSequences": [None]}},
        {},
        "generationConfig.stopSequences[0]",
        id="stop-item-null",
    ),
    pytest.param(
        {"contents": [], "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": 1}},
        {},
        "generationConfig.responseJsonSchema",
        id="json-schema-number",
    ),
    pytest.param(
        {"contents": [], "generationConfig": {"thinkingConfig": {"thinkingBudget": "lots"}}},
        {},
        "generationConfig.thinkingConfig.thinkingBudget",
        id="budget-string",
    ),
    pytest.param(
        {"contents": [], "generationConfig": {"thinkingConfig": {"includeThoughts": "yes"}}},
        {},
        "generationConfig.thinkingConfig.includeThoughts",
        id="include-thoughts-string",
    ),
    pytest.param({"generateContentRequest": "x"}, {}, "generateContentRequest", id="count-wrapper-string"),
]


@pytest.mark.parametrize(("body", "params", "param"), BAD_REQUESTS)
def test_decode_bad_requests(body: Any, params: dict[str, Any], param: str | None) -> None:
    with pytest.raises(BadRequest) as exc:
        g.decode_request(body, {"model": MODEL, **params})
    assert exc.value.param == param
    assert exc.value.status == 400


# --- encode_response ---------------------------------------------------------------------------------

SIG, SIG2 = "c2ln", "a+b/"  # valid base64: google-genai parses thoughtSignature as bytes

ENCODE_CASES = [
    pytest.param(
        [TextDelta("Hel"), TextDelta("lo"), Finish("stop"), Usage(5, 2)],
        {
            "parts": [{"text": "Hello"}],
            "finish": "STOP",
            "usage": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7},
        },
        id="text",
    ),
    pytest.param(
        [
            ReasoningDelta("think"),
            ReasoningDelta("", signature=SIG),
            ToolCallStart(0, "call_1", "f"),
            ToolCallDelta(0, '{"a":'),
            ToolCallDelta(0, "1}"),
            ToolCallStart(1, "call_2", "g"),
            Finish("tool_calls"),
            Usage(5, 9, 2, 4),
        ],
        {
            "parts": [
                {"text": "think", "thought": True},
                {"functionCall": {"id": "call_1", "name": "f", "args": {"a": 1}}, "thoughtSignature": SIG},
                {"functionCall": {"id": "call_2", "name": "g", "args": {}}},
            ],
            "finish": "STOP",
            "usage": {
                "promptTokenCount": 5,
                "candidatesTokenCount": 5,
                "thoughtsTokenCount": 4,
                "cachedContentTokenCount": 2,
                "totalTokenCount": 14,
            },
        },
        id="thinking-and-calls",
    ),
    pytest.param(
        [ReasoningDelta("t", signature=SIG2), TextDelta("answer"), Finish("stop")],
        {
            "parts": [{"text": "t", "thought": True, "thoughtSignature": SIG2}, {"text": "answer"}],
            "finish": "STOP",
            "usage": None,
        },
        id="signature-on-thought-without-calls",
    ),
    pytest.param(
        [ReasoningDelta("", signature=SIG2), TextDelta("answer")],
        {"parts": [{"text": "answer", "thoughtSignature": SIG2}], "finish": "STOP", "usage": None},
        id="signature-on-last-text",
    ),
    pytest.param(
        [ToolCallStart(0, "c", "f"), ToolCallDelta(0, "not json")],
        {"parts": [{"functionCall": {"id": "c", "name": "f", "args": {}}}], "finish": "STOP", "usage": None},
        id="unparsable-arguments-and-inferred-finish",
    ),
    pytest.param(
        [Finish("length")], {"parts": [{"text": ""}], "finish": "MAX_TOKENS", "usage": None}, id="length-empty"
    ),
    pytest.param(
        [ReasoningDelta("t", signature="not base64!"), TextDelta("a")],
        {"parts": [{"text": "t", "thought": True}, {"text": "a"}], "finish": "STOP", "usage": None},
        id="non-base64-signature-dropped",
    ),
    pytest.param([Finish("content_filter")], {"parts": [{"text": ""}], "finish": "SAFETY", "usage": None}, id="filter"),
]


@pytest.mark.parametrize(("events", "expected"), ENCODE_CASES)
def test_encode_response(events: list[Event], expected: dict[str, Any]) -> None:
    body = g.encode_response(events, ctx())
    cand = body["candidates"][0]
    assert cand["content"] == {"role": "model", "parts": expected["parts"]}
    assert cand["finishReason"] == expected["finish"]
    assert cand["index"] == 0
    assert body.get("usageMetadata") == expected["usage"]
    assert body["modelVersion"] == MODEL
    assert body["responseId"] == "resp-1"
    parsed = types.GenerateContentResponse.model_validate(body)
    texts = [p["text"] for p in expected["parts"] if "text" in p and not p.get("thought")]
    assert parsed.text == ("".join(texts) if texts else None)
    calls = [p["functionCall"] for p in expected["parts"] if "functionCall" in p]
    assert [(c.id, c.name, c.args) for c in parsed.function_calls or []] == [
        (c["id"], c["name"], c["args"]) for c in calls
    ]


def test_encode_response_several_candidates() -> None:
    events = [TextDelta("a"), TextDelta("b", choice=1), Finish("stop"), Finish("length", choice=1)]
    body = g.encode_response(events, ctx())
    assert [(c["index"], c["content"]["parts"], c["finishReason"]) for c in body["candidates"]] == [
        (0, [{"text": "a"}], "STOP"),
        (1, [{"text": "b"}], "MAX_TOKENS"),
    ]
    assert types.GenerateContentResponse.model_validate(body).candidates[1].finish_reason == "MAX_TOKENS"


# --- StreamEncoder -----------------------------------------------------------------------------------


def run_stream(events: list[Event]) -> bytes:
    enc = g.StreamEncoder(ctx())
    return enc.start() + b"".join(enc.feed(e) for e in events) + enc.finish()


def frames(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"\r\n\r\n")
    chunks = raw.split(b"\r\n\r\n")[:-1]
    assert all(c.startswith(b"data: ") for c in chunks)
    return [orjson.loads(c[len(b"data: ") :]) for c in chunks]


def parts_of(chunk: dict[str, Any]) -> list[tuple[int, list[dict[str, Any]]]]:
    return [(c["index"], c["content"]["parts"]) for c in chunk["candidates"]]


STREAM_CASES = [
    pytest.param(
        [TextDelta("Hel"), TextDelta(""), TextDelta("lo"), Finish("stop"), Usage(3, 2)],
        [[(0, [{"text": "Hel"}])], [(0, [{"text": "lo"}])], [(0, [{"text": ""}])]],
        id="text",
    ),
    pytest.param(
        [
            ReasoningDelta("hm"),
            ReasoningDelta("", signature=SIG2),
            ToolCallStart(0, "c1", "f"),
            ToolCallDelta(0, '{"a"'),
            ToolCallDelta(0, ":1}"),
            ToolCallStart(1, "c2", "g"),
            ToolCallDelta(1, "{}"),
            Finish("tool_calls"),
        ],
        [
            [(0, [{"text": "hm", "thought": True}])],
            [(0, [{"functionCall": {"id": "c1", "name": "f", "args": {"a": 1}}, "thoughtSignature": SIG2}])],
            [(0, [{"functionCall": {"id": "c2", "name": "g", "args": {}}}])],
            [(0, [{"text": ""}])],
        ],
        id="calls-buffered-until-complete",
    ),
    pytest.param(
        [ToolCallStart(0, "c1", "f"), ToolCallDelta(0, '{"x":2}')],
        [[(0, [{"functionCall": {"id": "c1", "name": "f", "args": {"x": 2}}}])], [(0, [{"text": ""}])]],
        id="call-flushed-by-finish",
    ),
    pytest.param(
        [ReasoningDelta("", signature=SIG2), TextDelta("a")],
        [[(0, [{"text": "a", "thoughtSignature": SIG2}])], [(0, [{"text": ""}])]],
        id="held-signature-on-next-text",
    ),
    pytest.param(
        [TextDelta("a"), ReasoningDelta("", signature=SIG2), Finish("stop")],
        [[(0, [{"text": "a"}])], [(0, [{"text": "", "thoughtSignature": SIG2}])]],
        id="trailing-signature-on-last-chunk",
    ),
    pytest.param(
        [TextDelta("a"), TextDelta("b", choice=1), Finish("stop"), Finish("length", choice=1)],
        [[(0, [{"text": "a"}])], [(1, [{"text": "b"}])], [(0, [{"text": ""}]), (1, [{"text": ""}])]],
        id="two-choices",
    ),
    pytest.param([], [[(0, [{"text": ""}])]], id="no-events"),
    pytest.param(
        [TextDelta("b", choice=1)],
        [[(1, [{"text": "b"}])], [(1, [{"text": ""}])]],
        id="choice-without-finish-still-finished",
    ),
    pytest.param(
        [ReasoningDelta("t", signature="SIG"), ReasoningDelta("", signature="x y"), TextDelta("a")],
        [[(0, [{"text": "t", "thought": True}])], [(0, [{"text": "a"}])], [(0, [{"text": ""}])]],
        id="non-base64-signatures-dropped",
    ),
]


@pytest.mark.parametrize(("events", "expected"), STREAM_CASES)
def test_stream_encoder(events: list[Event], expected: list[list[tuple[int, Any]]]) -> None:
    chunks = frames(run_stream(events))
    assert [parts_of(c) for c in chunks] == expected
    for chunk in chunks:
        assert chunk["modelVersion"] == MODEL and chunk["responseId"] == "resp-1"
        parsed = types.GenerateContentResponse.model_validate(chunk)
        assert parsed.candidates and parsed.candidates[0].content.parts
    assert all("finishReason" not in c for chunk in chunks[:-1] for c in chunk["candidates"])
    assert all("finishReason" in c for c in chunks[-1]["candidates"])


def test_stream_final_chunk_finish_and_usage() -> None:
    last = frames(run_stream([ToolCallStart(0, "c", "f"), Finish("tool_calls"), Usage(4, 6, 1, 2)]))[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"] == {
        "promptTokenCount": 4,
        "candidatesTokenCount": 4,
        "thoughtsTokenCount": 2,
        "cachedContentTokenCount": 1,
        "totalTokenCount": 10,
    }
    last = frames(run_stream([TextDelta("x"), Finish("length")]))[-1]
    assert last["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert "usageMetadata" not in last


def test_stream_error_frame() -> None:
    enc = g.StreamEncoder(ctx())
    raw = enc.feed(TextDelta("a")) + enc.error(StreamError(503, "unavailable", "upstream went away"))
    chunks = frames(raw)
    assert chunks[-1] == {"error": {"code": 503, "message": "upstream went away", "status": "UNAVAILABLE"}}
    assert raw.split(b"\r\n\r\n")[-2].startswith(b'data: {"error":')  # python-genai's check
    assert enc.finish() == b""
    assert enc.feed(TextDelta("late")) == b""


def test_stream_error_event_flushes_pending_call_first() -> None:
    enc = g.StreamEncoder(ctx())
    raw = enc.feed(ToolCallStart(0, "c", "f")) + enc.feed(StreamError(500, "server", "boom"))
    chunks = frames(raw)
    assert parts_of(chunks[0]) == [(0, [{"functionCall": {"id": "c", "name": "f", "args": {}}}])]
    assert chunks[1]["error"]["status"] == "INTERNAL"


# --- errors and other endpoints ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "status"),
    [
        pytest.param(BadRequest("bad"), "INVALID_ARGUMENT", id="400"),
        pytest.param(GatewayError("authentication", "who"), "UNAUTHENTICATED", id="401"),
        pytest.param(GatewayError("permission", "no"), "PERMISSION_DENIED", id="403"),
        pytest.param(GatewayError("not_found", "gone"), "NOT_FOUND", id="404"),
        pytest.param(GatewayError("rate_limit", "slow"), "RESOURCE_EXHAUSTED", id="429"),
        pytest.param(GatewayError("server", "oops"), "INTERNAL", id="500"),
        pytest.param(GatewayError("bad_gateway", "up"), "UNAVAILABLE", id="502"),
        pytest.param(GatewayError("unavailable", "down"), "UNAVAILABLE", id="503"),
        pytest.param(GatewayError("timeout", "slow"), "DEADLINE_EXCEEDED", id="504"),
        pytest.param(GatewayError("overloaded", "busy"), "UNAVAILABLE", id="529"),
        pytest.param(GatewayError("invalid_request", "teapot", status=418), "INVALID_ARGUMENT", id="other-4xx"),
        pytest.param(GatewayError("server", "odd", status=507), "INTERNAL", id="other-5xx"),
    ],
)
def test_error_body(err: GatewayError, status: str) -> None:
    assert g.error_body(err) == {"error": {"code": err.status, "message": err.message, "status": status}}


def test_error_body_retry_info() -> None:
    body = g.error_body(GatewayError("rate_limit", "slow down", retry_after=11.2))
    assert body["error"]["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}]


def test_count_tokens_and_models() -> None:
    assert g.count_tokens_response(42) == {"totalTokens": 42}
    listing = g.models_list(["gemini-2.5-flash", "models/gemini-2.5-pro"])
    assert [m["name"] for m in listing["models"]] == ["models/gemini-2.5-flash", "models/gemini-2.5-pro"]
    assert listing["models"][1]["displayName"] == "gemini-2.5-pro"
    assert all(
        m["supportedGenerationMethods"] == ["generateContent", "streamGenerateContent", "countTokens"]
        for m in listing["models"]
    )


# --- end to end: the google-genai client against a local server ---------------------------------------

REPLY: list[Event] = [
    ReasoningDelta("plan"),
    TextDelta("Hello"),
    ReasoningDelta("", signature="c2ln"),
    ToolCallStart(0, "call_1", "f"),
    ToolCallDelta(0, '{"a":'),
    ToolCallDelta(0, "1}"),
    Finish("tool_calls"),
    Usage(5, 7, 1, 3),
]


async def _handler(request: web.Request) -> web.StreamResponse:
    path = request.path
    request.app["seen"].append((path, dict(request.query), await request.read()))
    if path.endswith("/models"):
        return web.json_response(g.models_list(["gemini-2.5-flash"]))
    if path.endswith(":countTokens"):
        return web.json_response(g.count_tokens_response(42))
    if path.endswith(":generateContent"):
        return web.json_response(g.encode_response(REPLY, ctx()))
    if path.endswith(":streamGenerateContent"):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        enc = g.StreamEncoder(ctx())
        if "broken" in path:
            await resp.write(enc.feed(TextDelta("partial")))
            await resp.write(enc.error(StreamError(503, "unavailable", "upstream reset")))
            return resp
        for event in REPLY:
            await resp.write(enc.feed(event))
        await resp.write(enc.finish())
        return resp
    err = GatewayError("rate_limit", "quota exhausted", retry_after=3)
    return web.json_response(g.error_body(err), status=err.status)


@pytest.fixture
async def sdk(aiohttp_server: Any) -> tuple[genai.Client, list[Any]]:
    app = web.Application()
    app["seen"] = []
    app.router.add_route("*", "/{tail:.*}", _handler)
    server = await aiohttp_server(app)
    client = genai.Client(
        api_key="k", http_options=types.HttpOptions(base_url=str(server.make_url("")), retry_options=None)
    )
    return client, app["seen"]


async def test_sdk_generate_content(sdk: tuple[genai.Client, list[Any]]) -> None:
    client, seen = sdk
    config = types.GenerateContentConfig(
        system_instruction="be brief",
        temperature=0.3,
        max_output_tokens=50,
        stop_sequences=["X"],
        thinking_config=types.ThinkingConfig(thinking_budget=128, include_thoughts=True),
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name="f",
                        description="does f",
                        parameters=types.Schema(type="OBJECT", properties={"a": types.Schema(type="INTEGER")}),
                    )
                ]
            )
        ],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode="ANY", allowed_function_names=["f"])
        ),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    r = await client.aio.models.generate_content(model=MODEL, contents="hi", config=config)
    assert r.text == "Hello"
    assert [(c.id, c.name, c.args) for c in r.function_calls] == [("call_1", "f", {"a": 1})]
    assert r.candidates[0].content.parts[2].thought_signature == b"sig"
    assert r.candidates[0].finish_reason == "STOP"
    assert (
        r.usage_metadata.prompt_token_count,
        r.usage_metadata.candidates_token_count,
        r.usage_metadata.thoughts_token_count,
    ) == (5, 4, 3)
    assert r.response_id == "resp-1" and r.model_version == MODEL

    path, query, body = seen[-1]
    assert path.endswith(f"/models/{MODEL}:generateContent")
    req = g.decode_request(orjson.loads(body), {"model": path.rsplit("/", 1)[1]})
    assert (req.model, req.stream, req.system, req.temperature, req.max_tokens, req.stop) == (
        MODEL,
        False,
        "be brief",
        0.3,
        50,
        ["X"],
    )
    assert req.reasoning == {"effort": None, "budget": 128}
    assert req.tools == [
        {
            "name": "f",
            "description": "does f",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
        }
    ]
    assert req.tool_choice == {"name": "f"}
    assert req.messages == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


async def test_sdk_stream(sdk: tuple[genai.Client, list[Any]]) -> None:
    client, seen = sdk
    chunks = [c async for c in await client.aio.models.generate_content_stream(model=MODEL, contents="hi")]
    assert "".join(c.text or "" for c in chunks) == "Hello"
    calls = [fc for c in chunks for fc in c.function_calls or []]
    assert [(c.name, c.args) for c in calls] == [("f", {"a": 1})]
    assert chunks[-1].candidates[0].finish_reason == "STOP"
    assert chunks[-1].usage_metadata.total_token_count == 12
    path, query, body = seen[-1]
    assert path.endswith(":streamGenerateContent") and query == {"alt": "sse"}
    req = g.decode_request(orjson.loads(body), {"model": MODEL, "stream": True, **query})
    assert req.stream is True


async def test_sdk_chat_history_round_trip(sdk: tuple[genai.Client, list[Any]]) -> None:
    client, seen = sdk
    chat = client.aio.chats.create(model=MODEL)
    async for _ in await chat.send_message_stream("first"):
        pass
    await chat.send_message(types.Part.from_function_response(name="f", response={"ok": True}))
    _, _, body = seen[-1]
    req = g.decode_request(orjson.loads(body), {"model": MODEL})
    roles = [m["role"] for m in req.messages]
    assert roles == ["user", "assistant", "tool"]
    assistant = req.messages[1]["content"]
    assert {"type": "thinking", "text": "plan", "signature": None} in assistant
    assert {"type": "text", "text": "Hello"} in assistant
    call = next(p for p in assistant if p["type"] == "tool_call")
    assert (call["id"], call["name"], call["arguments"]) == ("call_1", "f", '{"a":1}')
    result = req.messages[2]["content"][0]
    assert (result["tool_call_id"], result["name"], result["content"]) == ("call_1", "f", '{"ok":true}')


async def test_sdk_count_tokens_models_and_errors(sdk: tuple[genai.Client, list[Any]]) -> None:
    client, _ = sdk
    assert (await client.aio.models.count_tokens(model=MODEL, contents="hi")).total_tokens == 42
    models = [m async for m in await client.aio.models.list()]
    assert [m.name for m in models] == ["models/gemini-2.5-flash"]
    assert models[0].supported_actions == ["generateContent", "streamGenerateContent", "countTokens"]
    with pytest.raises(genai_errors.ClientError) as exc:
        await client.aio.models.get(model="missing")
    assert exc.value.code == 429 and exc.value.status == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize(
    ("sig", "ok"),
    [
        pytest.param("c2ln", True, id="standard"),
        pytest.param("a+b/", True, id="standard-symbols"),
        pytest.param("a-b_", True, id="urlsafe"),
        pytest.param("YQ", True, id="unpadded"),
        pytest.param("YQ==", True, id="padded"),
        pytest.param("SIG", False, id="bad-trailing-bits"),
        pytest.param("SIH=", False, id="bad-trailing-bits-padded"),
        pytest.param("ab cd", False, id="space"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="none"),
    ],
)
def test_client_signature_matches_sdk(sig: str | None, ok: bool) -> None:
    assert g.client_signature(sig) == (sig if ok else None)
    if sig:
        try:
            types.Part.model_validate({"text": "x", "thoughtSignature": sig})
            sdk_ok = True
        except ValueError:
            sdk_ok = False
        assert sdk_ok is ok


async def test_sdk_mid_stream_error_raises(sdk: tuple[genai.Client, list[Any]]) -> None:
    client, _ = sdk
    texts: list[str] = []
    with pytest.raises(genai_errors.APIError) as exc:
        async for chunk in await client.aio.models.generate_content_stream(model="broken", contents="hi"):
            texts.append(chunk.text or "")
    assert texts == ["partial"]
    assert exc.value.code == 503 and exc.value.message == "upstream reset"

"""Canonical request pieces → Gemini request pieces (router.filters.gemini / gemini_schema)."""

from __future__ import annotations

from typing import Any

import pytest

from router.errors import BadRequest
from router.filters import gemini as gf
from router.filters.gemini_schema import MAX_REF_DEPTH, gemini_schema


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def call(cid: str, name: str, args: str = "{}") -> dict[str, Any]:
    return {"type": "tool_call", "id": cid, "name": name, "arguments": args}


def result(cid: str, content: str, name: str | None = None, is_error: bool = False) -> dict[str, Any]:
    return {"type": "tool_result", "tool_call_id": cid, "name": name, "content": content, "is_error": is_error}


def msg(role: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": role, "content": list(parts)}


# --- gemini_contents ---------------------------------------------------------------------------------

CONTENTS_CASES = [
    pytest.param([msg("user", text("hi"))], [{"role": "user", "parts": [{"text": "hi"}]}], id="user-text"),
    pytest.param(
        [msg("user", text("a")), msg("assistant", text("b"))],
        [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}],
        id="assistant-to-model",
    ),
    pytest.param(
        [msg("user", text("a")), msg("user", text("b"))],
        [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}],
        id="merge-consecutive-user",
    ),
    pytest.param(
        [msg("user", text("a")), msg("assistant"), msg("user", text("b"))],
        [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}],
        id="empty-message-dropped-then-merged",
    ),
    pytest.param(
        [{"role": "user", "content": "plain"}], [{"role": "user", "parts": [{"text": "plain"}]}], id="string-content"
    ),
    pytest.param([msg("user", text(""))], [], id="empty-text-dropped"),
    pytest.param(None, [], id="none"),
    pytest.param(
        [
            msg("assistant", call("c1", "get", '{"city":"Paris"}'), call("c2", "put", "")),
            msg("tool", result("c1", '{"temp": 21}')),
            msg("tool", result("c2", "done")),
            msg("user", text("thanks")),
        ],
        [
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "get", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "put", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get", "response": {"temp": 21}}},
                    {"functionResponse": {"name": "put", "response": {"result": "done"}}},
                    {"text": "thanks"},
                ],
            },
        ],
        id="tool-round-trip-name-from-id-map",
    ),
    pytest.param(
        [msg("tool", result("x", "[1, 2]", name="f"))],
        [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": "[1, 2]"}}}]}],
        id="tool-result-json-array-wrapped",
    ),
    pytest.param(
        [msg("tool", result("x", '{"bad": json', name="f"))],
        [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": '{"bad": json'}}}]}],
        id="tool-result-invalid-json-wrapped",
    ),
    pytest.param(
        [msg("tool", result("x", "boom", name="f", is_error=True))],
        [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"error": "boom"}}}]}],
        id="tool-result-error",
    ),
    pytest.param(
        [msg("assistant", call("c1", "f", '{"a": 1}')), msg("tool", result("c1", "ok", name="explicit"))],
        [
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "explicit", "response": {"result": "ok"}}}]},
        ],
        id="tool-result-own-name-wins",
    ),
    pytest.param(
        [msg("user", {"type": "image", "url": None, "media_type": "image/png", "data": "QUJD"})],
        [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "QUJD"}}]}],
        id="image-inline",
    ),
    pytest.param(
        [msg("user", {"type": "image", "data": "QUJD"})],
        [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/jpeg", "data": "QUJD"}}]}],
        id="image-inline-default-mime",
    ),
    pytest.param(
        [msg("user", {"type": "image", "url": "https://x.test/a/cat.png?s=1", "media_type": None, "data": None})],
        [
            {
                "role": "user",
                "parts": [{"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/a/cat.png?s=1"}}],
            }
        ],
        id="image-url-mime-from-extension",
    ),
    pytest.param(
        [msg("user", {"type": "image", "url": "https://x.test/img"})],
        [{"role": "user", "parts": [{"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/img"}}]}],
        id="image-url-default-mime",
    ),
    pytest.param(
        [msg("user", {"type": "image", "url": "https://x.test/img", "media_type": "image/webp"})],
        [{"role": "user", "parts": [{"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/img"}}]}],
        id="image-url-given-mime",
    ),
    pytest.param(
        [msg("user", {"type": "image", "url": "data:image/gif;base64,R0lG"})],
        [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/gif", "data": "R0lG"}}]}],
        id="image-data-url",
    ),
    pytest.param(
        [msg("assistant", {"type": "thinking", "text": "hmm", "signature": "S"}, call("c1", "f"))],
        [
            {
                "role": "model",
                "parts": [
                    {"text": "hmm", "thought": True},
                    {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "S"},
                ],
            }
        ],
        id="thinking-signature-moves-to-function-call",
    ),
    pytest.param(
        [msg("assistant", {"type": "thinking", "text": "", "signature": "S"}, text("pre"), call("c1", "f"))],
        [
            {
                "role": "model",
                "parts": [{"text": "pre"}, {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "S"}],
            }
        ],
        id="signature-skips-text-before-call",
    ),
    pytest.param(
        [msg("assistant", {"type": "thinking", "text": "hmm", "signature": "S"}, text("answer"))],
        [{"role": "model", "parts": [{"text": "hmm", "thought": True, "thoughtSignature": "S"}, {"text": "answer"}]}],
        id="signature-stays-on-thought-without-calls",
    ),
    pytest.param(
        [msg("assistant", {"type": "thinking", "text": "", "signature": "S"}, text("answer"))],
        [{"role": "model", "parts": [{"text": "answer", "thoughtSignature": "S"}]}],
        id="empty-thinking-signature-on-next-text",
    ),
    pytest.param(
        [msg("assistant", {"type": "thinking", "text": "", "signature": None}, text("a"))],
        [{"role": "model", "parts": [{"text": "a"}]}],
        id="empty-thinking-dropped",
    ),
]


@pytest.mark.parametrize(("messages", "expected"), CONTENTS_CASES)
def test_gemini_contents(messages: Any, expected: list[dict[str, Any]]) -> None:
    assert gf.gemini_contents(messages) == expected


CONTENTS_ERRORS = [
    pytest.param([msg("assistant", call("c1", "f", "{not json"))], "messages[0].tool_calls", id="args-invalid-json"),
    pytest.param([msg("assistant", call("c1", "f", "[1]"))], "messages[0].tool_calls", id="args-not-object"),
    pytest.param(
        [msg("user", text("x")), msg("assistant", call("c1", ""))], "messages[1].tool_calls", id="call-no-name"
    ),
    pytest.param([msg("tool", result("unknown", "x"))], "messages[0].tool_call_id", id="result-unknown-name"),
    pytest.param([msg("user", {"type": "image"})], "messages[0].content", id="image-without-source"),
    pytest.param(
        [msg("user", {"type": "image", "url": "data:image/png,raw"})], "messages[0].content", id="data-url-not-base64"
    ),
]


@pytest.mark.parametrize(("messages", "param"), CONTENTS_ERRORS)
def test_gemini_contents_errors(messages: Any, param: str) -> None:
    with pytest.raises(BadRequest) as exc:
        gf.gemini_contents(messages)
    assert exc.value.param == param
    assert exc.value.status == 400


# --- gemini_schema -----------------------------------------------------------------------------------

SCHEMA_CASES = [
    pytest.param(None, None, id="none"),
    pytest.param(
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "$id": "x",
            "title": "T",
            "type": "object",
            "additionalProperties": False,
            "properties": {"a": {"type": "string", "default": "x", "examples": ["y"]}},
        },
        {"type": "object", "properties": {"a": {"type": "string"}}},
        id="drop-unsupported-keys",
    ),
    pytest.param(
        {"type": "object", "properties": {"a": {"type": ["string", "null"]}}},
        {"type": "object", "properties": {"a": {"type": "string", "nullable": True}}},
        id="type-list-nullable",
    ),
    pytest.param(
        {"type": ["string", "integer"]},
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        id="type-list-union",
    ),
    pytest.param({"const": "x"}, {"enum": ["x"], "type": "string"}, id="const-to-enum"),
    pytest.param(
        {"type": "integer", "enum": [1, 2, True, None]},
        {"type": "string", "enum": ["1", "2", "true"], "nullable": True},
        id="enum-values-stringified",
    ),
    pytest.param(
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "ghost", "a"]},
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        id="required-filtered",
    ),
    pytest.param(
        {"type": "object", "properties": {}, "required": ["x"]},
        {"type": "object", "properties": {}},
        id="empty-properties-kept-required-dropped",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {"p": {"$ref": "#/$defs/P"}},
            "$defs": {"P": {"type": "object", "title": "P", "properties": {"n": {"type": "integer"}}}},
        },
        {"type": "object", "properties": {"p": {"type": "object", "properties": {"n": {"type": "integer"}}}}},
        id="ref-defs-inlined",
    ),
    pytest.param(
        {
            "properties": {"p": {"$ref": "#/definitions/P", "description": "mine"}},
            "definitions": {"P": {"type": "string", "description": "theirs"}},
        },
        {"properties": {"p": {"type": "string", "description": "mine"}}},
        id="ref-definitions-sibling-wins",
    ),
    pytest.param({"$ref": "#/$defs/Missing"}, {"type": "object"}, id="ref-unresolvable"),
    pytest.param({"$ref": "https://elsewhere/schema"}, {"type": "object"}, id="ref-remote"),
    pytest.param(
        {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}], "description": "when"},
        {"description": "when", "nullable": True, "type": "string", "format": "date-time"},
        id="optional-anyof-collapsed",
    ),
    pytest.param(
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        id="oneof-to-anyof",
    ),
    pytest.param(
        {
            "allOf": [{"$ref": "#/$defs/E"}],
            "description": "own",
            "$defs": {"E": {"enum": ["a", "b"], "description": "def"}},
        },
        {"description": "own", "enum": ["a", "b"], "type": "string"},
        id="allof-merged-own-description-wins",
    ),
    pytest.param(
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
            ]
        },
        {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
        id="allof-properties-union",
    ),
    pytest.param({"type": "string", "format": "email"}, {"type": "string"}, id="unsupported-format-dropped"),
    pytest.param(
        {"type": "integer", "format": "int64"}, {"type": "integer", "format": "int64"}, id="supported-format-kept"
    ),
    pytest.param({"type": "array"}, {"type": "array", "items": {"type": "string"}}, id="array-items-defaulted"),
    pytest.param(
        {"type": "array", "items": [{"type": "integer"}, {"type": "string"}], "minItems": 1, "maxItems": 3},
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
        id="tuple-items-first",
    ),
    pytest.param(
        {"type": "string", "minLength": 1, "maxLength": 9, "pattern": "^a", "description": "d"},
        {"type": "string", "minLength": 1, "maxLength": 9, "pattern": "^a", "description": "d"},
        id="scalar-constraints-kept",
    ),
    pytest.param(
        {"type": "object", "properties": {"title": {"type": "string"}, "default": {"type": "integer"}}},
        {"type": "object", "properties": {"title": {"type": "string"}, "default": {"type": "integer"}}},
        id="property-names-are-not-keywords",
    ),
    pytest.param({"type": "null"}, {"nullable": True}, id="null-type"),
    pytest.param("not a schema", {}, id="non-object"),
]


@pytest.mark.parametrize(("schema", "expected"), SCHEMA_CASES)
def test_gemini_schema(schema: Any, expected: Any) -> None:
    assert gemini_schema(schema) == expected


def test_gemini_schema_recursive_ref_terminates() -> None:
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {"type": "object", "properties": {"value": {"type": "integer"}, "next": {"$ref": "#/$defs/Node"}}}
        },
    }
    cleaned = gemini_schema(schema)
    depth, node = 0, cleaned
    while node.get("properties"):
        node = node["properties"]["next"]
        depth += 1
    assert depth == MAX_REF_DEPTH
    assert node == {"type": "object"}


def test_gemini_schema_does_not_mutate_input() -> None:
    schema = {"type": ["string", "null"], "enum": [1], "$defs": {}}
    before = repr(schema)
    gemini_schema(schema)
    assert repr(schema) == before


# --- tools and tool choice ---------------------------------------------------------------------------

TOOLS_CASES = [
    pytest.param(None, None, id="none"),
    pytest.param([], None, id="empty"),
    pytest.param(
        [
            {
                "name": "f",
                "description": "does f",
                "parameters": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"a": {"type": "string"}},
                },
            }
        ],
        [
            {
                "functionDeclarations": [
                    {
                        "name": "f",
                        "description": "does f",
                        "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
                    }
                ]
            }
        ],
        id="one-tool-cleaned",
    ),
    pytest.param(
        [
            {"name": "f", "description": None, "parameters": None},
            {"name": "g", "parameters": {"type": "object", "properties": {}}},
        ],
        [{"functionDeclarations": [{"name": "f"}, {"name": "g"}]}],
        id="no-parameters-omitted",
    ),
]


@pytest.mark.parametrize(("tools", "expected"), TOOLS_CASES)
def test_gemini_tools(tools: Any, expected: Any) -> None:
    assert gf.gemini_tools(tools) == expected


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        pytest.param(None, None, id="none-value"),
        pytest.param("auto", {"functionCallingConfig": {"mode": "AUTO"}}, id="auto"),
        pytest.param("none", {"functionCallingConfig": {"mode": "NONE"}}, id="none"),
        pytest.param("required", {"functionCallingConfig": {"mode": "ANY"}}, id="required"),
        pytest.param(
            {"name": "f"}, {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}, id="named"
        ),
        pytest.param("bogus", None, id="unknown"),
    ],
)
def test_gemini_tool_config(choice: Any, expected: Any) -> None:
    assert gf.gemini_tool_config(choice) == expected


# --- response format, thinking, system, stop ---------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}


@pytest.mark.parametrize(
    ("fmt", "mime", "schema"),
    [
        pytest.param(None, None, None, id="none"),
        pytest.param({"type": "text"}, None, None, id="text"),
        pytest.param({"type": "json_object", "schema": None}, "application/json", None, id="json-object"),
        pytest.param(
            {"type": "json_schema", "schema": SCHEMA, "name": "x"},
            "application/json",
            SCHEMA,
            id="json-schema-untouched",
        ),
    ],
)
def test_gemini_response_format(fmt: Any, mime: Any, schema: Any) -> None:
    assert gf.gemini_response_mime_type(fmt) == mime
    assert gf.gemini_response_schema(fmt) == schema


@pytest.mark.parametrize(
    ("reasoning", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param({"effort": None, "budget": None}, None, id="empty"),
        pytest.param({"budget": 2048}, {"thinkingBudget": 2048, "includeThoughts": True}, id="budget"),
        pytest.param(
            {"budget": 0, "effort": "high"}, {"thinkingBudget": 0, "includeThoughts": False}, id="budget-wins"
        ),
        pytest.param({"budget": -1}, {"thinkingBudget": -1, "includeThoughts": True}, id="dynamic"),
        pytest.param({"effort": "none"}, {"thinkingBudget": 0, "includeThoughts": False}, id="effort-none"),
        pytest.param({"effort": "minimal"}, {"thinkingBudget": 0, "includeThoughts": False}, id="effort-minimal"),
        pytest.param({"effort": "low"}, {"thinkingBudget": 1024, "includeThoughts": True}, id="effort-low"),
        pytest.param({"effort": "MEDIUM"}, {"thinkingBudget": 8192, "includeThoughts": True}, id="effort-medium"),
        pytest.param({"effort": "high"}, {"thinkingBudget": 24576, "includeThoughts": True}, id="effort-high"),
        pytest.param({"effort": "galaxy"}, None, id="effort-unknown"),
        pytest.param({"budget": True}, None, id="budget-bool-ignored"),
    ],
)
def test_gemini_thinking_config(reasoning: Any, expected: Any) -> None:
    assert gf.gemini_thinking_config(reasoning) == expected


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        pytest.param("Be brief", {"parts": [{"text": "Be brief"}]}, id="text"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="none"),
    ],
)
def test_gemini_system(system: Any, expected: Any) -> None:
    assert gf.gemini_system(system) == expected


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("END", ["END"], id="string"),
        pytest.param(["a", "", "b"], ["a", "b"], id="list-empties-dropped"),
        pytest.param([], None, id="empty-list"),
        pytest.param("", None, id="empty-string"),
    ],
)
def test_gemini_stop(stop: Any, expected: Any) -> None:
    assert gf.gemini_stop(stop) == expected


def test_filters_registry_names_every_filter() -> None:
    assert set(gf.FILTERS) == {
        "gemini_contents",
        "gemini_system",
        "gemini_tools",
        "gemini_schema",
        "gemini_tool_config",
        "gemini_response_mime_type",
        "gemini_response_schema",
        "gemini_thinking_config",
        "gemini_stop",
    }
    assert all(callable(f) for f in gf.FILTERS.values())


def test_round_trip_through_the_gemini_dialect() -> None:
    """Gemini contents → canonical (inbound dialect) → Gemini contents (filters) loses nothing."""
    from router.client_codecs.gemini_native import decode_request

    contents = [
        {"role": "user", "parts": [{"text": "weather?"}, {"inlineData": {"mimeType": "image/png", "data": "QUJD"}}]},
        {
            "role": "model",
            "parts": [
                {"text": "plan", "thought": True},
                {"functionCall": {"name": "get", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
            ],
        },
        {"role": "user", "parts": [{"functionResponse": {"name": "get", "response": {"temp": 21}}}]},
        {"role": "model", "parts": [{"text": "21C", "thoughtSignature": "YQ=="}]},
        {"role": "user", "parts": [{"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/a"}}]},
    ]
    body = {
        "contents": contents,
        "systemInstruction": {"parts": [{"text": "Be brief"}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"city": {"type": "STRING"}},
                            "required": ["city"],
                        },
                    }
                ]
            }
        ],
    }
    req = decode_request(body, {"model": "gemini-2.5-flash"})
    assert gf.gemini_contents(req.messages) == contents
    assert gf.gemini_system(req.system) == body["systemInstruction"]
    assert gf.gemini_tools(req.tools) == [
        {
            "functionDeclarations": [
                {
                    "name": "get",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                }
            ]
        }
    ]


# --- Gemini 3: the skip value for function calls whose signature is unknown ---------------------------

def signed(sig: str) -> dict[str, Any]:
    return {"type": "thinking", "text": "", "signature": sig}


LOOP = [
    msg("user", text("old question")),
    msg("assistant", call("c0", "f")),  # an earlier turn: Gemini 3 does not validate it
    msg("tool", result("c0", "{}")),
    msg("assistant", text("old answer")),
    msg("user", text("weather?")),  # the current turn starts here
    msg("assistant", call("c1", "get"), call("c2", "get")),  # a step with parallel calls
    msg("tool", result("c1", "{}")), msg("tool", result("c2", "{}")),
    msg("assistant", signed("KNOWN"), call("c3", "put")),  # a step whose signature is known
    msg("tool", result("c3", "{}")),
    msg("assistant", call("c4", "get")),
    msg("tool", result("c4", "{}")),
]


def signatures(contents: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(p["functionCall"]["name"], p.get("thoughtSignature")) for c in contents for p in c["parts"]
            if "functionCall" in p]


def test_gemini3_gets_the_skip_value_on_each_unsigned_step_of_the_current_turn(caplog: Any) -> None:
    with caplog.at_level("INFO", logger="router.filters.gemini"):
        contents = gf.gemini_contents(LOOP, "gemini-3-flash")
    assert signatures(contents) == [("f", None), ("get", gf.SKIP_SIGNATURE), ("get", None), ("put", "KNOWN"),
                                    ("get", gf.SKIP_SIGNATURE)]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and "2 replayed function call(s)" in logged[0] and "gemini-3-flash" in logged[0]


@pytest.mark.parametrize("model", [None, "gemini-2.5-flash", "gemini-2.0-flash", "gpt-4o"])
def test_other_models_get_no_skip_value(model: Any) -> None:
    assert all(sig in (None, "KNOWN") for _, sig in signatures(gf.gemini_contents(LOOP, model)))


def test_a_turn_without_calls_logs_nothing(caplog: Any) -> None:
    with caplog.at_level("INFO", logger="router.filters.gemini"):
        gf.gemini_contents([msg("user", text("hi"))], "models/gemini-3-pro")
    assert not caplog.records


def test_the_skip_log_line_is_bounded(caplog: Any) -> None:
    many = [msg("user", text("go"))]
    for k in range(50):
        many += [msg("assistant", call(f"c{k}", "x" * 5000)), msg("tool", result(f"c{k}", "{}"))]
    with caplog.at_level("INFO", logger="router.filters.gemini"):
        gf.gemini_contents(many, "gemini-3-flash")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "50 replayed function call(s)" in line and len(line) < 400

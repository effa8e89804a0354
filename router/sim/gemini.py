"""Google Gemini (generativelanguage) as the simulator speaks it.

Served under ``/v1beta`` and ``/v1``. Streams use ``data: <json>\\r\\n\\r\\n`` framing like the
real service, each chunk carrying only new parts, with ``finishReason`` and ``usageMetadata`` in
the last chunk. Request fields are read in camelCase with snake_case accepted too.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from aiohttp import web

from router.sim.exchange import Dialect, Endpoint, Frame, Incoming, StreamAnswer, serve, sse
from router.sim.faults import Fault
from router.sim.replies import Ask, Reply, ToolMode, ToolSpec, count_tokens, digest, plan, split_text

SEPARATOR = b"\r\n\r\n"
MODELS = (
    ("gemini-2.5-flash", "Gemini 2.5 Flash", 1_048_576, 65_536),
    ("gemini-2.5-pro", "Gemini 2.5 Pro", 1_048_576, 65_536),
    ("gemini-2.0-flash", "Gemini 2.0 Flash", 1_048_576, 8_192),
    ("gemini-3-flash", "Gemini 3 Flash", 1_048_576, 65_536),
)
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                500: "INTERNAL", 501: "NOT_IMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                504: "DEADLINE_EXCEEDED", 529: "UNAVAILABLE"}
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP", "stop_sequence": "STOP"}
THOUGHT_SIGNATURE = base64.b64encode(b"sim-thought-signature").decode()
# The values Google documents for replaying function calls it did not sign (another model's history).
SKIP_SIGNATURES = ("skip_thought_signature_validator", "context_engineering_is_the_way_to_go")
# Models that reject a replayed function call without its signature (Gemini 3 and later).
SIGNED_MODEL_PREFIXES = ("gemini-3",)
MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required for tools to work "
    "correctly, and missing thought_signature may lead to degraded model performance. Additional data, "
    "function call `default_api:{name}` , position {position}. Please refer to "
    "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)


def key_of(request: web.Request) -> str | None:
    """The API key, or an OAuth access token (``Authorization: Bearer``, as Google accepts too)."""
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def error_body(status: int, message: str, fault: Fault | None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message,
                             "status": STATUS_NAMES.get(status, "UNKNOWN" if status < 500 else "INTERNAL")}
    if fault is not None and fault.retry_delay is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                             "retryDelay": fault.retry_delay}]
    return {"error": error}


DIALECT = Dialect(name="gemini", key_of=key_of, error_body=error_body, missing_key_status=403,
                  request_id_header="x-request-id", sse_separator=SEPARATOR)


def _get(obj: Any, camel: str, snake: str, default: Any = None) -> Any:
    if not isinstance(obj, dict):
        return default
    value = obj.get(camel, obj.get(snake))
    return default if value is None else value


def _split_tail(request: web.Request) -> tuple[str, str]:
    """``gemini-2.5-flash:streamGenerateContent`` -> (model, action)."""
    model, _, action = request.match_info["tail"].partition(":")
    return model.removeprefix("models/"), action


def _describe(request: web.Request, body: Any) -> tuple[str | None, bool]:
    model, action = _split_tail(request)
    return model, action == "streamGenerateContent"


# --- request -> Ask -------------------------------------------------------------------------

def _texts(content: Any) -> list[str]:
    parts = _get(content, "parts", "parts", [])
    return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _function_responses(content: Any) -> list[Any]:
    parts = _get(content, "parts", "parts", [])
    found = [_get(p, "functionResponse", "function_response") for p in parts if isinstance(p, dict)]
    return [f for f in found if isinstance(f, dict)]


def _contents(body: dict[str, Any]) -> list[Any]:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise ValueError("* GenerateContentRequest.contents: contents is not specified")
    return contents


# --- thought signatures (Gemini 3 validates them on the current turn's function calls) --------

def _signature_bytes(value: str) -> bytes | None:
    """A ``thoughtSignature`` as the API reads it: bytes, from standard or URL-safe base64."""
    bare = value.rstrip("=").translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


_VALID_SIGNATURES = frozenset(_signature_bytes(s) for s in (THOUGHT_SIGNATURE, *SKIP_SIGNATURES))


def _is_standard_user_turn(content: Any) -> bool:
    """A user turn with content of its own (not only function responses): where a turn starts."""
    if not isinstance(content, dict) or content.get("role", "user") != "user":
        return False
    parts = _get(content, "parts", "parts", [])
    return any(isinstance(p, dict) and _get(p, "functionResponse", "function_response") is None for p in parts)


def check_signatures(model: str, contents: list[Any]) -> None:
    """Gemini 3's check: in the current turn (everything after the last user turn with standard
    content), the first ``functionCall`` part of each model step carries a signature the model
    issued, or one of the documented skip values; raises ``ValueError`` with the API's message."""
    if not model.startswith(SIGNED_MODEL_PREFIXES):
        return
    start = max((i for i, c in enumerate(contents) if _is_standard_user_turn(c)), default=-1)
    for position in range(start + 1, len(contents)):
        content = contents[position]
        if not isinstance(content, dict) or content.get("role") != "model":
            continue
        parts = _get(content, "parts", "parts", [])
        call = next((p for p in parts if isinstance(p, dict)
                     and _get(p, "functionCall", "function_call") is not None), None)
        if call is None:
            continue
        signature = _get(call, "thoughtSignature", "thought_signature")
        if not signature:
            name = _get(_get(call, "functionCall", "function_call"), "name", "name", "")
            raise ValueError(MISSING_SIGNATURE.format(name=name, position=position + 1))
        if not isinstance(signature, str) or _signature_bytes(signature) not in _VALID_SIGNATURES:
            raise ValueError("Corrupted thought signature.")


def _ask(body: dict[str, Any]) -> Ask:
    contents = _contents(body)
    users = [c for c in contents if isinstance(c, dict) and c.get("role", "user") == "user"]
    user_text = next((" ".join(_texts(c)) for c in reversed(users) if _texts(c)), "")
    results = _function_responses(contents[-1])
    tool_result = orjson.dumps(results[-1].get("response", {})).decode() if results else None
    config = _get(body, "generationConfig", "generation_config", {})
    mode, forced = _tool_choice(body)
    json_mode = _get(config, "responseMimeType", "response_mime_type") == "application/json"
    schema = _get(config, "responseJsonSchema", "response_json_schema") or \
        _get(config, "responseSchema", "response_schema")
    thinking = _get(config, "thinkingConfig", "thinking_config", {})
    max_tokens = _get(config, "maxOutputTokens", "max_output_tokens")
    return Ask(
        user_text=user_text, prompt_text=_prompt_text(body, contents), tools=_tools(body),
        tool_mode=mode, forced_name=forced, tool_result=tool_result, json_mode=json_mode,
        json_schema=schema if isinstance(schema, dict) else None,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        thoughts=bool(_get(thinking, "includeThoughts", "include_thoughts", False)),
        stop=tuple(s for s in _get(config, "stopSequences", "stop_sequences", []) if isinstance(s, str)),
    )


def _prompt_text(body: dict[str, Any], contents: list[Any]) -> str:
    pieces = _texts(_get(body, "systemInstruction", "system_instruction", {}))
    for content in contents:
        pieces += _texts(content)
        pieces += [orjson.dumps(r.get("response", {})).decode() for r in _function_responses(content)]
    return " ".join(pieces)


def _tools(body: dict[str, Any]) -> tuple[ToolSpec, ...]:
    specs: list[ToolSpec] = []
    for tool in body.get("tools") or []:
        for decl in _get(tool, "functionDeclarations", "function_declarations", []):
            if isinstance(decl, dict) and isinstance(decl.get("name"), str):
                schema = _get(decl, "parametersJsonSchema", "parameters_json_schema") or \
                    decl.get("parameters") or {}
                specs.append(ToolSpec(decl["name"], schema if isinstance(schema, dict) else {}))
    return tuple(specs)


def _tool_choice(body: dict[str, Any]) -> tuple[ToolMode, str | None]:
    config = _get(_get(body, "toolConfig", "tool_config", {}),
                  "functionCallingConfig", "function_calling_config", {})
    mode = str(_get(config, "mode", "mode", "AUTO")).upper()
    allowed = _get(config, "allowedFunctionNames", "allowed_function_names", [])
    forced = allowed[0] if isinstance(allowed, list) and allowed else None
    if mode == "NONE":
        return "none", None
    return ("force" if mode == "ANY" else "auto"), forced


# --- Reply -> wire --------------------------------------------------------------------------

def _usage(reply: Reply) -> dict[str, Any]:
    usage = {"promptTokenCount": reply.prompt_tokens, "candidatesTokenCount": reply.output_tokens,
             "totalTokenCount": reply.total_tokens}
    if reply.thought is not None:
        usage["thoughtsTokenCount"] = reply.thought_tokens
    return usage


def _call_part(reply: Reply) -> dict[str, Any]:
    assert reply.tool is not None
    return {"functionCall": {"name": reply.tool.name, "args": reply.tool.args},
            "thoughtSignature": THOUGHT_SIGNATURE}


def _envelope(model: str, response_id: str, parts: list[dict[str, Any]],
              final: Reply | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    out: dict[str, Any] = {"candidates": [candidate]}
    if final is not None:
        candidate["finishReason"] = FINISH[final.finish]
        out["usageMetadata"] = _usage(final)
    out["modelVersion"] = model
    out["responseId"] = response_id
    return out


def _response(model: str, response_id: str, reply: Reply) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if reply.thought is not None:
        parts.append({"text": reply.thought, "thought": True})
    parts.append(_call_part(reply) if reply.tool else {"text": reply.text})
    return _envelope(model, response_id, parts, reply)


def _frames(model: str, response_id: str, reply: Reply, chunks: int) -> list[Frame]:
    frames: list[Frame] = []
    if reply.thought is not None:
        thought = _envelope(model, response_id, [{"text": reply.thought, "thought": True}])
        frames.append(Frame(sse(thought, SEPARATOR), content=True))
    if reply.tool is not None:
        last = _envelope(model, response_id, [_call_part(reply)], reply)
        return frames + [Frame(sse(last, SEPARATOR), content=True)]
    pieces = split_text(reply.text, chunks) or [""]
    for i, piece in enumerate(pieces):
        final = reply if i == len(pieces) - 1 else None
        frame = _envelope(model, response_id, [{"text": piece}], final)
        frames.append(Frame(sse(frame, SEPARATOR), content=bool(piece)))
    return frames


def _generate(incoming: Incoming) -> dict[str, Any] | StreamAnswer:
    body = incoming.body
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    model, action = _split_tail(incoming.request)
    check_signatures(model, _contents(body))
    reply = plan(_ask(body))
    response_id = digest(model, orjson.dumps(body).decode())
    if action == "generateContent":
        return _response(model, response_id, reply)
    if incoming.request.query.get("alt") != "sse":
        raise ValueError("the simulator streams only with ?alt=sse")
    return StreamAnswer(_frames(model, response_id, reply, incoming.options.chunks))


def _count(incoming: Incoming) -> dict[str, Any]:
    body = incoming.body if isinstance(incoming.body, dict) else {}
    inner = _get(body, "generateContentRequest", "generate_content_request", body)
    contents = inner.get("contents") if isinstance(inner, dict) else None
    if not isinstance(contents, list):
        raise ValueError("* CountTokensRequest.contents: contents is not specified")
    return {"totalTokens": count_tokens(_prompt_text(inner, contents))}


def _model_json(model: str) -> dict[str, Any]:
    known = {m[0]: m for m in MODELS}
    _, display, input_limit, output_limit = known.get(model, (model, model, 1_048_576, 65_536))
    return {"name": f"models/{model}", "version": "001", "displayName": display,
            "description": f"{display} (simulated)", "inputTokenLimit": input_limit,
            "outputTokenLimit": output_limit, "temperature": 1.0, "topP": 0.95, "topK": 64,
            "thinking": model.startswith(("gemini-2.5", *SIGNED_MODEL_PREFIXES)),
            "supportedGenerationMethods": ["generateContent", "countTokens"]}


def _list(incoming: Incoming) -> dict[str, Any]:
    return {"models": [_model_json(m[0]) for m in MODELS]}


def _get_model(incoming: Incoming) -> dict[str, Any]:
    return _model_json(_split_tail(incoming.request)[0])


def _no_model(request: web.Request, body: Any) -> tuple[str | None, bool]:
    return None, False


GENERATE = Endpoint(DIALECT, _describe, _generate)
COUNT = Endpoint(DIALECT, _describe, _count, faults=False)
LIST = Endpoint(DIALECT, _no_model, _list, faults=False)
GET_MODEL = Endpoint(DIALECT, _describe, _get_model, faults=False)
ACTIONS = {"generateContent": GENERATE, "streamGenerateContent": GENERATE, "countTokens": COUNT}


async def handle_post(request: web.Request) -> web.StreamResponse:
    endpoint = ACTIONS.get(_split_tail(request)[1])
    if endpoint is None:
        raise web.HTTPNotFound(text=orjson.dumps(error_body(404, "Unknown method.", None)).decode(),
                               content_type="application/json")
    return await serve(request, endpoint)


async def handle_list(request: web.Request) -> web.StreamResponse:
    return await serve(request, LIST)


async def handle_get(request: web.Request) -> web.StreamResponse:
    return await serve(request, GET_MODEL)


def add_routes(app: web.Application) -> None:
    """Both API versions: google-genai >= 3 defaults to ``v1``, older clients use ``v1beta``.

    ``GET /v1/models[/…]`` is shared with the other dialects and dispatched in app.py.
    """
    for version in ("v1beta", "v1"):
        app.router.add_post(f"/{version}/models/{{tail:.+}}", handle_post)
    app.router.add_get("/v1beta/models", handle_list)
    app.router.add_get("/v1beta/models/{tail:.+}", handle_get)

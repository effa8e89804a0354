"""Gemini native API (``/v1beta/models/{model}:generateContent`` and friends), for google-genai.

Request side: contents/systemInstruction/tools/toolConfig/generationConfig (camelCase or
snake_case) → :class:`CanonicalRequest`; see ``_gemini_contents`` and ``_gemini_config``.
Response side: a ``GenerateContentResponse`` (non-stream) or ``alt=sse`` frames
(``data: <GenerateContentResponse>\\r\\n\\r\\n``, no ``[DONE]``). Gemini sends whole
``functionCall`` parts, so the stream encoder buffers argument deltas until a call is complete.
Finish reasons: stop/tool_calls → STOP, length → MAX_TOKENS, content_filter → SAFETY.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from router.canonical import (
    CanonicalRequest,
    Choice,
    Event,
    Finish,
    ReasoningDelta,
    ResponseContext,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    aggregate,
)
from router.client_codecs._fields import GEMINI as fields
from router.client_codecs._gemini_config import (
    decode_generation_config,
    decode_tool_choice,
    decode_tools,
    unwrap_count_tokens,
)
from router.client_codecs._gemini_contents import decode_contents, decode_system
from router.codecs import ClientCodec, Family
from router.errors import BadRequest, GatewayError, client_retry_after
from router.token_estimate import estimate_tokens

NAME = "gemini"

GENERATION_METHODS = ("generateContent", "streamGenerateContent", "countTokens")

_FINISH: Mapping[str, str] = MappingProxyType(
    {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
)
_STATUS: Mapping[int, str] = MappingProxyType(
    {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        405: "UNIMPLEMENTED",
        408: "DEADLINE_EXCEEDED",
        409: "ABORTED",
        413: "INVALID_ARGUMENT",
        429: "RESOURCE_EXHAUSTED",
        499: "CANCELLED",
        500: "INTERNAL",
        501: "UNIMPLEMENTED",
        502: "UNAVAILABLE",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
        529: "UNAVAILABLE",
    }
)
_TRUE = (True, "1", "true", "True")
_URLSAFE_TO_STD = str.maketrans("-_", "+/")


# --- request -------------------------------------------------------------------------------------


def decode_request(body: Any, params: Mapping[str, Any] | None = None) -> CanonicalRequest:
    """A generateContent / streamGenerateContent / countTokens body → CanonicalRequest."""
    params = params or {}
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", param=None)
    model, method = _model(params, body)
    req = unwrap_count_tokens(body)
    contents = fields.get(req, "contents")
    if contents is None:
        raise BadRequest("contents: field required", param="contents")
    stream = params.get("stream") in _TRUE or params.get("alt") == "sse"
    return CanonicalRequest(
        model=model,
        messages=decode_contents(contents),
        system=decode_system(fields.get(req, "systemInstruction")),
        tools=decode_tools(fields.get(req, "tools")),
        tool_choice=decode_tool_choice(fields.get(req, "toolConfig")),
        stream=stream or method == "streamGenerateContent",
        include_usage=True,
        raw=body,
        inbound=NAME,
        **decode_generation_config(fields.get(req, "generationConfig")),
    )


def _model(params: Mapping[str, Any], body: dict[str, Any]) -> tuple[str, str]:
    """The model from the path (``models/`` prefix and a ``:method`` suffix stripped)."""
    model = params.get("model")
    if model is None:
        inner = fields.get(body, "generateContentRequest")
        model = inner.get("model") if isinstance(inner, dict) else body.get("model")
    if not isinstance(model, str):
        raise BadRequest("the model name is missing from the path", param="model")
    model, _, method = model.removeprefix("models/").partition(":")
    if not model:
        raise BadRequest("the model name is missing from the path", param="model")
    return model, method


# --- non-stream response --------------------------------------------------------------------------


def client_signature(sig: str | None) -> str | None:
    """``sig`` if google-genai can parse it, else ``None``.

    The SDK types ``thoughtSignature`` as bytes and rejects the whole response when it is not
    canonical base64 (standard or URL-safe, padding optional); a signature from another upstream
    that is not base64 is dropped rather than breaking the client.
    """
    if not sig:
        return None
    bare = sig.rstrip("=").translate(_URLSAFE_TO_STD)
    try:
        raw = base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
    except binascii.Error:
        return None
    return sig if base64.b64encode(raw).decode().rstrip("=") == bare else None


def _args(arguments: str) -> dict[str, Any]:
    """Tool-call arguments as the object Gemini sends; unparsable or non-object JSON → ``{}``."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _call_part(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"functionCall": {"id": call_id, "name": name, "args": _args(arguments)}}


def _choice_parts(c: Choice) -> list[dict[str, Any]]:
    """Parts of one aggregated choice; the thinking signature goes where Gemini puts it: the first
    functionCall, else the thought part, else the last text part."""
    parts: list[dict[str, Any]] = []
    if c.reasoning:
        parts.append({"text": c.reasoning, "thought": True})
    if c.text:
        parts.append({"text": c.text})
    calls = [_call_part(t.id, t.name, t.arguments) for t in c.tool_calls]
    parts.extend(calls)
    sig = client_signature(c.reasoning_signature)
    if sig:
        target = calls[0] if calls else (parts[0] if c.reasoning else (parts[-1] if parts else None))
        if target is None:
            parts.append({"text": "", "thoughtSignature": sig})
        else:
            target["thoughtSignature"] = sig
    return parts or [{"text": ""}]


def usage_metadata(usage: Usage) -> dict[str, Any]:
    """Canonical usage → ``usageMetadata`` (candidates exclude thoughts, as Gemini counts them)."""
    meta: dict[str, Any] = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": max(usage.output_tokens - usage.reasoning_tokens, 0),
        "totalTokenCount": usage.total_tokens,
    }
    if usage.reasoning_tokens:
        meta["thoughtsTokenCount"] = usage.reasoning_tokens
    if usage.cached_tokens:
        meta["cachedContentTokenCount"] = usage.cached_tokens
    return meta


def encode_response(events: list[Event], ctx: ResponseContext) -> dict[str, Any]:
    """The complete GenerateContentResponse."""
    agg = aggregate(events)
    candidates = [
        {
            "content": {"role": "model", "parts": _choice_parts(c)},
            "finishReason": _FINISH.get(c.finish_reason or "stop", "STOP"),
            "index": c.index,
        }
        for c in agg.choices
    ]
    body: dict[str, Any] = {"candidates": candidates}
    if agg.usage is not None:
        body["usageMetadata"] = usage_metadata(agg.usage)
    body["modelVersion"] = ctx.model
    body["responseId"] = ctx.id
    return body


# --- stream ----------------------------------------------------------------------------------------


def frame(obj: dict[str, Any]) -> bytes:
    """One ``alt=sse`` frame, with the CRLF line ends the Google front end uses."""
    return b"data: " + orjson.dumps(obj) + b"\r\n\r\n"


class _PendingCall:
    __slots__ = ("id", "name", "arguments")

    def __init__(self, call_id: str, name: str) -> None:
        self.id = call_id
        self.name = name
        self.arguments: list[str] = []


class StreamEncoder:
    """Canonical events → ``alt=sse`` frames of GenerateContentResponse chunks.

    Each text or thought delta becomes one chunk; a tool call becomes one chunk with a whole
    ``functionCall`` part when its arguments are complete (the next non-delta event). A
    signature-only reasoning delta is held and attached to the choice's next part. ``finish()``
    sends the last chunk, with every choice's ``finishReason`` and the ``usageMetadata``.
    """

    def __init__(self, ctx: ResponseContext) -> None:
        self._tail = {"modelVersion": ctx.model, "responseId": ctx.id}
        self._calls: dict[int, _PendingCall] = {}  # choice -> call being buffered
        self._signatures: dict[int, str] = {}  # choice -> signature waiting for a part
        self._finish: dict[int, str] = {}
        self._choices: set[int] = set()
        self._usage: Usage | None = None
        self._done = False

    def start(self) -> bytes:
        return b""

    def feed(self, event: Event) -> bytes:
        if self._done:
            return b""
        if isinstance(event, ToolCallDelta):
            call = self._calls.get(event.choice)
            if call is not None:
                call.arguments.append(event.arguments)
            return b""
        out = self._flush_calls()
        if isinstance(event, TextDelta):
            if event.text:
                out += self._chunk(event.choice, {"text": event.text})
        elif isinstance(event, ReasoningDelta):
            out += self._reasoning(event)
        elif isinstance(event, ToolCallStart):
            self._calls[event.choice] = _PendingCall(event.id, event.name)
        elif isinstance(event, Finish):
            self._choices.add(event.choice)
            self._finish[event.choice] = _FINISH.get(event.reason, "STOP")
        elif isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, StreamError):
            out += self.error(event)
        return out

    def finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        out = self._flush_calls()
        choices = sorted(self._choices | set(self._signatures)) or [0]
        candidates = []
        for c in choices:
            part: dict[str, Any] = {"text": ""}
            sig = client_signature(self._signatures.pop(c, None))
            if sig:
                part["thoughtSignature"] = sig
            candidates.append(
                {
                    "content": {"role": "model", "parts": [part]},
                    "finishReason": self._finish.get(c, "STOP"),
                    "index": c,
                }
            )
        last: dict[str, Any] = {"candidates": candidates}
        if self._usage is not None:
            last["usageMetadata"] = usage_metadata(self._usage)
        return out + frame({**last, **self._tail})

    def error(self, err: StreamError) -> bytes:
        self._done = True
        return frame({"error": _error_object(err.status, err.message)})

    def _reasoning(self, event: ReasoningDelta) -> bytes:
        if not event.text:
            if event.signature:
                self._signatures[event.choice] = self._signatures.get(event.choice, "") + event.signature
            return b""
        part: dict[str, Any] = {"text": event.text, "thought": True}
        if client_signature(event.signature):
            part["thoughtSignature"] = event.signature
        return self._chunk(event.choice, part)

    def _chunk(self, choice: int, part: dict[str, Any]) -> bytes:
        self._choices.add(choice)
        sig = client_signature(self._signatures.pop(choice, None))
        if sig and "thoughtSignature" not in part:
            part["thoughtSignature"] = sig
        candidate = {"content": {"role": "model", "parts": [part]}, "index": choice}
        return frame({"candidates": [candidate], **self._tail})

    def _flush_calls(self) -> bytes:
        if not self._calls:
            return b""
        out = b""
        for choice, call in sorted(self._calls.items()):
            out += self._chunk(choice, _call_part(call.id, call.name, "".join(call.arguments)))
        self._calls.clear()
        return out


# --- errors and the other endpoints ----------------------------------------------------------------


def _error_object(status: int, message: str) -> dict[str, Any]:
    name = _STATUS.get(status) or ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return {"code": status, "message": message, "status": name}


def error_body(err: GatewayError) -> dict[str, Any]:
    """``{"error": {"code", "message", "status"}}``; a retry delay rides in a RetryInfo detail."""
    error = _error_object(err.status, err.message)
    if err.retry_after is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{client_retry_after(err.retry_after)}s",
            }
        ]
    return {"error": error}


def count_tokens_response(n: int) -> dict[str, Any]:
    """The ``countTokens`` answer."""
    return {"totalTokens": n}


def models_list(models: list[str]) -> dict[str, Any]:
    """``GET /v1beta/models``: each id as ``models/<id>``."""
    return {"models": [model_info(m) for m in models]}


def model_info(model: str) -> dict[str, Any]:
    """One model object (``GET /v1beta/models/{id}`` answers with it alone)."""
    model_id = model.removeprefix("models/")
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": model_id,
        "description": f"{model_id} via the gateway",
        "supportedGenerationMethods": list(GENERATION_METHODS),
    }


# --- the family and the codec (router.registry lists them) ----------------------------------------


def _count_tokens(body: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    return count_tokens_response(estimate_tokens(decode_request(body, params)))


FAMILY = Family("gemini", error_body, lambda models: models_list([m.id for m in models]),
                lambda m: model_info(m.id), path_prefixes=("/v1beta", "/v1alpha"),
                marker_headers=("x-goog-api-key", "x-goog-api-client"), marker_query=("key",),
                key_header="x-goog-api-key")
CODEC = ClientCodec(NAME, FAMILY, decode_request, encode_response, StreamEncoder, count_tokens=_count_tokens)

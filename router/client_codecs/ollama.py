"""Ollama's native API: the client codecs ``ollama.chat`` (``POST /api/chat``) and ``ollama.generate``
(``POST /api/generate``), and the family's ``/api/tags``, ``/api/show``, ``/api/version`` and ``/``.

Requests: ``stream`` defaults to true; images are bare base64. Ollama's clients replay tool calls
without ids and answer them by ``tool_name``: a call without an id gets ``call_<message>_<call>``,
a tool message claims the first open call of its name. ``suffix``, ``raw``, ``template``,
``context`` and ``keep_alive`` mean nothing upstream and are ignored.
Answers: one object, or NDJSON lines with ``done: false`` and a last one with ``done: true``, counts
and durations (ns, from when the request arrived). A request with nothing to ask (no messages, an
empty prompt: Ollama's "load the model") is answered at once (``load_answer``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from router import endpoints as ep
from router.bodies import read_json
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
    aggregate,
)
from router.client_codecs._fields import ANTHROPIC as fields  # its wording: 'path: expected X, got Y'
from router.client_codecs._openai_common import require_object
from router.codecs import ClientCodec, Family, ModelEntry
from router.errors import BadRequest, GatewayError

if TYPE_CHECKING:
    from router.exchange import Exchange

# The Ollama release whose API this follows: clients gate features (tools, think) on /api/version.
API_VERSION = "0.32.15"
MEDIA_TYPE = "application/x-ndjson"
# "max" is Ollama's; "high" is the highest effort every upstream codec maps
_THINK_LEVELS: Mapping[str, str] = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
# base64 openings of the image formats vision models take (Ollama sends no media type)
_MAGIC = (("iVBORw0KGgo", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"), ("UklGR", "image/webp"))
_CAPABILITIES = ("completion", "tools", "thinking", "vision")

Part = dict[str, Any]


# --- request ---------------------------------------------------------------------------------------


def decode_chat(body: Any, params: Mapping[str, Any]) -> CanonicalRequest:
    """An ``/api/chat`` body → CanonicalRequest."""
    body = require_object(body)
    model = _model(body)
    system, messages = _messages(fields.opt_list(body, "messages") or [])  # none: load the model
    return CanonicalRequest(model=model, messages=messages, system=system, tools=_tools(body),
                            raw=body, inbound=CHAT_NAME, **_common(body))


def decode_generate(body: Any, params: Mapping[str, Any]) -> CanonicalRequest:
    """An ``/api/generate`` body → CanonicalRequest (the prompt is one user message)."""
    body = require_object(body)
    model = _model(body)
    prompt = fields.opt_str(body, "prompt")
    content = [*_images(body), {"type": "text", "text": prompt}] if prompt else []  # none: load the model
    return CanonicalRequest(model=model, messages=[{"role": "user", "content": content}] if content else [],
                            system=fields.opt_str(body, "system") or None, raw=body, inbound=GENERATE_NAME,
                            **_common(body))


def _model(body: dict[str, Any]) -> str:
    model = fields.opt_str(body, "model")
    if not model:
        raise BadRequest("model: field required", param="model")
    return model.removesuffix(":latest")  # Ollama's default tag: "llama3" and "llama3:latest" are one model


def _common(body: dict[str, Any]) -> dict[str, Any]:
    """The fields chat and generate share, as CanonicalRequest keywords."""
    return {"stream": fields.opt_bool(body, "stream") is not False,  # Ollama streams unless told not to
            "include_usage": True,  # Ollama always reports the counts
            "response_format": _format(body.get("format")), "reasoning": _think(body.get("think")),
            **_options(fields.opt_obj(body, "options"))}


def _options(o: dict[str, Any] | None) -> dict[str, Any]:
    o = o or {}
    predict = fields.opt_int(o, "num_predict", "options")
    return {"temperature": fields.opt_number(o, "temperature", "options"),
            "top_p": fields.opt_number(o, "top_p", "options"),
            "top_k": fields.opt_int(o, "top_k", "options", minimum=1) if o.get("top_k") != 0 else None,  # 0: off
            "max_tokens": predict if predict is not None and predict > 0 else None,  # -1, -2: no limit
            "stop": fields.str_list(o, "stop", "options") or None, "seed": fields.opt_int(o, "seed", "options")}


def _format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json" or isinstance(fmt, dict):
        schema = fmt if isinstance(fmt, dict) else None
        return {"type": "json_schema" if schema else "json_object", "schema": schema, "name": None, "strict": None}
    raise BadRequest('format: expected "json" or a JSON schema object', param="format")


def _think(think: Any) -> dict[str, Any] | None:
    if think is None or think is False:  # off: no reasoning field, as for a model that cannot think
        return None
    effort = "medium" if think is True else _THINK_LEVELS.get(think) if isinstance(think, str) else None
    if effort is None:
        raise BadRequest('think: expected a boolean or "low", "medium", "high", "max"', param="think")
    return {"effort": effort, "budget": None}


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = fields.opt_list(body, "tools")  # the Python client always sends one, often empty
    return [_tool(t, f"tools[{j}]") for j, t in enumerate(tools)] if tools else None


def _tool(tool: Any, path: str) -> dict[str, Any]:
    tool = fields.obj(tool, path)
    if tool.get("type", "function") != "function":
        raise BadRequest(f"{path}.type: only tools of type 'function' are supported", param=f"{path}.type")
    fn = fields.req_obj(tool, "function", path)
    return {"name": fields.req_str(fn, "name", f"{path}.function"),
            "description": fields.opt_str(fn, "description", f"{path}.function"),
            "parameters": fields.opt_obj(fn, "parameters", f"{path}.function")}


def _claim(calls: list[tuple[str, str]], call_id: str | None, name: str | None, fallback: str
           ) -> tuple[str, str | None]:
    """The (id, name) a tool message answers, taken off the open ``calls``: the call with its id, else
    the first open call of its name, else the first open call."""
    for k, (cid, cname) in enumerate(calls):
        if cid == call_id or (call_id is None and name in (None, cname)):
            del calls[k]
            return cid, name or cname
    return call_id or fallback, name


def _messages(messages: list[Any]) -> tuple[str | None, list[dict[str, Any]]]:
    """System messages (joined by a blank line) and the others, decoded."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    calls: list[tuple[str, str]] = []  # (id, name) of the tool calls no tool message answered yet
    for i, msg in enumerate(messages):
        p = f"messages[{i}]"
        msg = fields.obj(msg, p)
        role = msg.get("role")
        role = role.lower() if isinstance(role, str) else role  # Ollama lower-cases roles
        content = fields.opt_str(msg, "content", p) or ""
        if role == "system":
            system.append(content)
        elif role == "user":
            text = [{"type": "text", "text": content}] if content or "images" not in msg else []
            out.append({"role": "user", "content": [*_images(msg, p), *text]})
        elif role == "assistant":
            out.append({"role": "assistant", "content": _assistant(msg, content, p, i, calls)})
        elif role == "tool":
            call_id, name = _claim(calls, fields.opt_str(msg, "tool_call_id", p),
                                   fields.opt_str(msg, "tool_name", p), f"call_{i}")
            out.append({"role": "tool", "content": [{"type": "tool_result", "tool_call_id": call_id, "name": name,
                                                     "content": content, "is_error": False}]})
        else:
            raise BadRequest(f"{p}.role: expected system, user, assistant or tool", param=f"{p}.role")
    return ("\n\n".join(system) if system else None), out


def _assistant(msg: dict[str, Any], content: str, p: str, i: int, calls: list[tuple[str, str]]) -> list[Part]:
    parts: list[Part] = []
    thinking = fields.opt_str(msg, "thinking", p)
    if thinking:
        parts.append({"type": "thinking", "text": thinking, "signature": None})
    if content:
        parts.append({"type": "text", "text": content})
    for k, call in enumerate(fields.opt_list(msg, "tool_calls", p) or ()):
        path = f"{p}.tool_calls[{k}]"
        fn = fields.req_obj(fields.obj(call, path), "function", path)
        name = fields.req_str(fn, "name", f"{path}.function")
        args = fields.opt_obj(fn, "arguments", f"{path}.function") or {}  # an object, not a JSON string
        call_id = fields.opt_str(call, "id", path) or f"call_{i}_{k}"
        calls.append((call_id, name))
        parts.append({"type": "tool_call", "id": call_id, "name": name, "arguments": orjson.dumps(args).decode()})
    return parts


def _images(o: dict[str, Any], at: str = "") -> list[Part]:
    out = []
    path = f"{at}.images" if at else "images"
    for k, data in enumerate(fields.opt_list(o, "images", at) or ()):
        if not isinstance(data, str) or not data:
            raise fields.wrong(f"{path}[{k}]", "a base64 string", data)
        media_type = next((mt for magic, mt in _MAGIC if data.startswith(magic)), "image/png")
        out.append({"type": "image", "url": None, "media_type": media_type, "data": data})
    return out


# --- response --------------------------------------------------------------------------------------


def _created_at() -> str:
    """Now, as Ollama writes it (RFC 3339, UTC, microseconds)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def load_answer(req: CanonicalRequest) -> dict[str, Any] | None:
    """Nothing to ask (no messages, an empty prompt): Ollama's "load the model", or "unload" with
    ``keep_alive: 0``. An upstream model is always loaded, so the answer is immediate."""
    if req.messages:
        return None
    reason = "unload" if req.raw.get("keep_alive") in (0, "0", "0s") else "load"
    body = {"message": {"role": "assistant", "content": ""}} if req.inbound == CHAT_NAME else {"response": ""}
    return {"model": req.model, "created_at": _created_at(), **body, "done": True, "done_reason": reason}


def _done(reason: str | None, usage: Usage | None, since: float) -> dict[str, Any]:
    """The final object's fields: why it ended, the counts, the durations (ns since monotonic ``since``)."""
    u = usage or Usage()
    ns = max(0, int((time.monotonic() - since) * 1e9))
    return {"done": True, "done_reason": "length" if reason == "length" else "stop", "total_duration": ns,
            "load_duration": 0, "prompt_eval_count": u.input_tokens, "prompt_eval_duration": 0,
            "eval_count": u.output_tokens, "eval_duration": ns}


def _args(arguments: str) -> Any:
    """Canonical arguments (a JSON string) as the object Ollama sends; unparsable → ``{}``."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _tool_call(call_id: str, name: str, arguments: str, index: int) -> dict[str, Any]:
    return {"id": call_id, "function": {"index": index, "name": name, "arguments": _args(arguments)}}


def encode_response(events: list[Event], ctx: ResponseContext, chat: bool) -> dict[str, Any]:
    """The whole answer: a ``message`` (chat) or a ``response`` (generate), with the final fields."""
    agg = aggregate(events)
    c = agg.choices[0]
    answer: dict[str, Any] = {"role": "assistant", "content": c.text} if chat else {"response": c.text}
    if c.reasoning:
        answer["thinking"] = c.reasoning
    if c.tool_calls and chat:
        answer["tool_calls"] = [_tool_call(t.id, t.name, t.arguments, k) for k, t in enumerate(c.tool_calls)]
    body = {"message": answer} if chat else answer
    done = _done(c.finish_reason, agg.usage, ctx.started or time.monotonic())
    return {"model": ctx.model, "created_at": _created_at(), **body, **done}


class StreamEncoder:
    """Canonical events → NDJSON lines (``chat``: ``message`` objects, else ``response``): a line per text
    or thinking delta; a tool call's line once its arguments are complete. Ollama has no ``n``: choice 0
    only."""

    __slots__ = ("_model", "_head", "_text", "_think", "_calls", "_tail", "_chat", "_since", "_call", "_index",
                 "_reason", "_usage", "_done")

    def __init__(self, ctx: ResponseContext, chat: bool) -> None:
        self._model = ctx.model
        self._head = b'{"model":' + orjson.dumps(ctx.model) + b',"created_at":"'
        if chat:
            self._text, self._tail = b'","message":{"role":"assistant","content":', b'},"done":false}\n'
            self._think = b'","message":{"role":"assistant","content":"","thinking":'
        else:
            self._text, self._tail = b'","response":', b',"done":false}\n'
            self._think = b'","response":"","thinking":'
        self._calls = b'","message":{"role":"assistant","content":"","tool_calls":'
        self._chat = chat
        self._since = ctx.started or time.monotonic()
        self._call: tuple[str, str, list[str]] | None = None  # (id, name, argument deltas) being buffered
        self._index = 0
        self._reason: str | None = None
        self._usage: Usage | None = None
        self._done = False

    def _line(self, middle: bytes, value: Any) -> bytes:
        return self._head + _created_at().encode() + middle + orjson.dumps(value) + self._tail

    def start(self) -> bytes:
        return b""

    def feed(self, event: Event) -> bytes:
        if self._done:
            return b""
        if isinstance(event, Usage):
            self._usage = event
            return b""
        if isinstance(event, StreamError):
            return self._flush_call() + self.error(event)
        if event.choice:
            return b""
        if isinstance(event, ToolCallDelta):
            if self._call is not None:
                self._call[2].append(event.arguments)
            return b""
        out = self._flush_call()
        if isinstance(event, TextDelta):
            return out + self._line(self._text, event.text) if event.text else out
        if isinstance(event, ReasoningDelta):
            return out + self._line(self._think, event.text) if event.text else out
        if isinstance(event, ToolCallStart):
            self._call = (event.id, event.name, [])
        elif isinstance(event, Finish):
            self._reason = event.reason
        return out

    def _flush_call(self) -> bytes:
        call, self._call = self._call, None
        if call is None or not self._chat:  # /api/generate has no tools
            return b""
        self._index += 1
        return self._line(self._calls, [_tool_call(call[0], call[1], "".join(call[2]), self._index - 1)])

    def finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        out = self._flush_call()
        body = {"message": {"role": "assistant", "content": ""}} if self._chat else {"response": ""}
        last = {"model": self._model, "created_at": _created_at(), **body,
                **_done(self._reason, self._usage, self._since)}
        return out + orjson.dumps(last) + b"\n"

    def error(self, err: StreamError) -> bytes:
        self._done = True
        return orjson.dumps({"error": err.message}) + b"\n"


# --- the family: errors, models, and its endpoints the generic ones cannot serve --------------------


def error_body(err: GatewayError) -> dict[str, Any]:
    """Ollama's error body: the message alone."""
    return {"error": err.message}


def _modified_at(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _details() -> dict[str, Any]:  # a gateway model has no local file: no format, family or size to tell
    return dict.fromkeys(("parent_model", "format", "family", "parameter_size", "quantization_level"), "")


def _tag(m: ModelEntry) -> dict[str, Any]:
    return {"name": m.id, "model": m.id, "modified_at": _modified_at(m.created), "size": 0,
            "digest": hashlib.sha256(m.id.encode()).hexdigest(), "details": _details()}


def models_list(models: Sequence[ModelEntry]) -> dict[str, Any]:
    """``GET /api/tags``."""
    return {"models": [_tag(m) for m in models]}


def model_info(m: ModelEntry) -> dict[str, Any]:
    """``POST /api/show``: what the gateway can tell of a model (the upstream's abilities are unknown,
    so it claims every one the codec carries)."""
    return {"modelfile": "", "parameters": "", "template": "", "details": _details(),
            "model_info": {"general.architecture": "", "general.basename": m.id},
            "capabilities": list(_CAPABILITIES), "modified_at": _modified_at(m.created)}


FAMILY = Family("ollama", error_body, models_list, model_info, path_prefixes=("/api/",))
_SHOW = ep.get_model((FAMILY,))


async def show(svc: ep.Services, x: Exchange, request: web.BaseRequest, params: ep.Params) -> web.StreamResponse:
    """``POST /api/show``: the model is named in the body, not the path."""
    server = x.snapshot.server
    body = require_object(await read_json(request, server.max_body_bytes, server.body_timeout))
    return await _SHOW(svc, x, request, {**params, "model": _model(body)})


async def version(svc: ep.Services, x: Exchange, request: web.BaseRequest, params: ep.Params) -> web.Response:
    return ep.json_response({"version": API_VERSION})


async def running(svc: ep.Services, x: Exchange, request: web.BaseRequest, params: ep.Params) -> web.Response:
    """``GET /`` and ``HEAD /``: the liveness answer Ollama's CLI and tools probe for."""
    return web.Response(text="Ollama is running")


CHAT_NAME, GENERATE_NAME = "ollama.chat", "ollama.generate"
CHAT = ClientCodec(CHAT_NAME, FAMILY, decode_chat, lambda events, ctx: encode_response(events, ctx, True),
                   lambda ctx: StreamEncoder(ctx, True), stream_media_type=MEDIA_TYPE, answer_locally=load_answer)
GENERATE = ClientCodec(GENERATE_NAME, FAMILY, decode_generate, lambda events, ctx: encode_response(events, ctx, False),
                       lambda ctx: StreamEncoder(ctx, False), stream_media_type=MEDIA_TYPE,
                       answer_locally=load_answer)

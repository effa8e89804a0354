"""OpenAI Chat Completions as the simulator speaks it (``/v1/chat/completions``, ``/v1/models``)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from router.sim.exchange import Dialect, Endpoint, Frame, Incoming, StreamAnswer, serve, sse
from router.sim.faults import Fault
from router.sim.replies import Ask, Reply, ToolMode, ToolSpec, digest, plan, split_text

MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini")
MODELS_CREATED = 1715367049
FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls", "stop_sequence": "stop"}
ERROR_KINDS = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
               403: ("permission_error", None), 404: ("invalid_request_error", "model_not_found"),
               429: ("requests", "rate_limit_exceeded")}
DONE = b"data: [DONE]\n\n"


def key_of(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def error_body(status: int, message: str, fault: Fault | None) -> dict[str, Any]:
    kind, code = ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error",
                                          "server_error" if status >= 500 else None))
    if fault is not None and fault.code is not None:
        code = fault.code
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


DIALECT = Dialect(name="openai", key_of=key_of, error_body=error_body, missing_key_status=401,
                  request_id_header="x-request-id")


def _describe(request: web.Request, body: Any) -> tuple[str | None, bool]:
    if not isinstance(body, dict):
        return None, False
    model = body.get("model")
    return (model if isinstance(model, str) else None), bool(body.get("stream"))


# --- request -> Ask -------------------------------------------------------------------------

def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content
                        if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty array")
    if not all(isinstance(m, dict) for m in messages):
        raise ValueError("each message must be an object")
    return messages


def _ask(body: dict[str, Any]) -> Ask:
    if not isinstance(body.get("model"), str):
        raise ValueError("you must provide a model parameter")
    messages = _messages(body)
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    last = messages[-1]
    mode, forced = _tool_choice(body.get("tool_choice"))
    response_format = body.get("response_format")
    fmt: dict[str, Any] = response_format if isinstance(response_format, dict) else {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    stop = body.get("stop")
    effort = body.get("reasoning_effort")
    return Ask(
        user_text=next((t for t in reversed(users) if t), ""),
        prompt_text=" ".join(_text(m.get("content")) for m in messages),
        tools=_tools(body), tool_mode=mode, forced_name=forced,
        tool_result=_text(last.get("content")) if last.get("role") == "tool" else None,
        json_mode=fmt.get("type") in ("json_object", "json_schema"),
        json_schema=schema if isinstance(schema, dict) else None,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        thoughts=isinstance(effort, str) and effort != "none",
        stop=(stop,) if isinstance(stop, str) else tuple(s for s in stop or [] if isinstance(s, str)),
    )


def _tools(body: dict[str, Any]) -> tuple[ToolSpec, ...]:
    specs = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            params = function.get("parameters")
            specs.append(ToolSpec(function["name"], params if isinstance(params, dict) else {}))
    return tuple(specs)


def _tool_choice(choice: Any) -> tuple[ToolMode, str | None]:
    if choice == "none":
        return "none", None
    if choice == "required":
        return "force", None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return "force", name if isinstance(name, str) else None
    return "auto", None


# --- Reply -> wire --------------------------------------------------------------------------

def _usage(reply: Reply) -> dict[str, Any]:
    completion = reply.output_tokens + reply.thought_tokens
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": completion,
            "total_tokens": reply.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reply.thought_tokens}}


def _tool_json(reply: Reply) -> dict[str, Any]:
    assert reply.tool is not None
    return {"id": f"call_{reply.tool.id_suffix}", "type": "function",
            "function": {"name": reply.tool.name, "arguments": reply.tool.arguments}}


def _message(reply: Reply) -> dict[str, Any]:
    if reply.tool is not None:
        return {"role": "assistant", "content": None, "refusal": None,
                "tool_calls": [_tool_json(reply)]}
    return {"role": "assistant", "content": reply.text, "refusal": None}


class _Shape:
    """The fixed envelope of one completion: id, created and model stay constant per stream."""

    def __init__(self, body: dict[str, Any], reply: Reply) -> None:
        self.reply = reply
        self.model = body["model"]
        n = body.get("n")
        self.n = n if isinstance(n, int) and n > 0 else 1
        self.id = f"chatcmpl-{digest(orjson.dumps(body).decode())}"
        self.created = int(time.time())
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    def response(self) -> dict[str, Any]:
        choices = [{"index": i, "message": _message(self.reply), "logprobs": None,
                    "finish_reason": FINISH[self.reply.finish]} for i in range(self.n)]
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model, "choices": choices, "usage": _usage(self.reply),
                "system_fingerprint": "fp_sim"}

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choices = [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
                   for i in range(self.n)]
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model, "system_fingerprint": "fp_sim", "choices": choices}
        if self.include_usage:
            out["usage"] = None  # as upstream: null on every chunk but the usage one
        return sse(out)

    def frames(self, chunks: int) -> list[Frame]:
        reply = self.reply
        if reply.tool is not None:
            head = {"index": 0, "id": f"call_{reply.tool.id_suffix}", "type": "function",
                    "function": {"name": reply.tool.name, "arguments": ""}}
            frames = [Frame(self.chunk({"role": "assistant", "content": None, "tool_calls": [head]}))]
            frames += [Frame(self.chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}), True)
                       for p in split_text(reply.tool.arguments, chunks)]
        else:
            frames = [Frame(self.chunk({"role": "assistant", "content": "", "refusal": None}))]
            frames += [Frame(self.chunk({"content": p}), True) for p in split_text(reply.text, chunks)]
        frames.append(Frame(self.chunk({}, FINISH[reply.finish])))
        if self.include_usage:
            frames.append(Frame(sse({"id": self.id, "object": "chat.completion.chunk",
                                     "created": self.created, "model": self.model,
                                     "system_fingerprint": "fp_sim", "choices": [],
                                     "usage": _usage(reply)})))
        return frames + [Frame(DONE)]


def _chat(incoming: Incoming) -> dict[str, Any] | StreamAnswer:
    body = incoming.body
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    shape = _Shape(body, plan(_ask(body)))
    if body.get("stream"):
        return StreamAnswer(shape.frames(incoming.options.chunks))
    return shape.response()


def _model_json(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": MODELS_CREATED, "owned_by": "system"}


def list_models(incoming: Incoming) -> dict[str, Any]:
    return {"object": "list", "data": [_model_json(m) for m in MODELS]}


def get_model(incoming: Incoming) -> dict[str, Any]:
    return _model_json(incoming.request.match_info["tail"])


def _no_model(request: web.Request, body: Any) -> tuple[str | None, bool]:
    return request.match_info.get("tail"), False


CHAT = Endpoint(DIALECT, _describe, _chat)
LIST = Endpoint(DIALECT, _no_model, list_models, faults=False)
GET_MODEL = Endpoint(DIALECT, _no_model, get_model, faults=False)


async def handle_chat(request: web.Request) -> web.StreamResponse:
    return await serve(request, CHAT)


def add_routes(app: web.Application) -> None:
    """The chat route; ``GET /v1/models[/{id}]`` is shared with the others (see app.py)."""
    app.router.add_post("/v1/chat/completions", handle_chat)

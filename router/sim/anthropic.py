"""Anthropic Messages as the simulator speaks it (``/v1/messages``, count_tokens, models)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from router.sim.exchange import Dialect, Endpoint, Frame, Incoming, StreamAnswer, serve, sse
from router.sim.faults import Fault
from router.sim.replies import Ask, Reply, ToolMode, ToolSpec, count_tokens, digest, plan, split_text

MODELS = (("claude-sonnet-4-5", "Claude Sonnet 4.5"), ("claude-opus-4-1", "Claude Opus 4.1"),
          ("claude-3-5-haiku-latest", "Claude Haiku 3.5"))
MODELS_CREATED = "2025-05-22T00:00:00Z"
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use",
                "stop_sequence": "stop_sequence"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 504: "timeout_error", 529: "overloaded_error"}
SIGNATURE = "c2ltLXNpZ25hdHVyZQ=="


def key_of(request: web.Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def error_body(status: int, message: str, fault: Fault | None) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_sim"}


DIALECT = Dialect(name="anthropic", key_of=key_of, error_body=error_body, missing_key_status=401,
                  request_id_header="request-id")


def _describe(request: web.Request, body: Any) -> tuple[str | None, bool]:
    if not isinstance(body, dict):
        return None, False
    model = body.get("model")
    return (model if isinstance(model, str) else None), bool(body.get("stream"))


# --- request -> Ask -------------------------------------------------------------------------

def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _text(content: Any, kind: str = "text") -> str:
    return " ".join(b["text"] for b in _blocks(content)
                    if b.get("type") == kind and isinstance(b.get("text"), str))


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    return content if isinstance(content, str) else _text(content)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ValueError("messages: must be a non-empty array of message objects")
    return messages


def _ask(body: dict[str, Any], need_max_tokens: bool = True) -> Ask:
    if not isinstance(body.get("model"), str):
        raise ValueError("model: Field required")
    max_tokens = body.get("max_tokens")
    if need_max_tokens and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
        raise ValueError("max_tokens: Field required")
    messages = _messages(body)
    users = [m for m in messages if m.get("role") == "user"]
    results = [b for b in _blocks(messages[-1].get("content")) if b.get("type") == "tool_result"]
    mode, forced = _tool_choice(body.get("tool_choice"))
    output_config = body.get("output_config")
    fmt = output_config.get("format") if isinstance(output_config, dict) else None
    thinking = body.get("thinking")
    stop = body.get("stop_sequences") or []
    return Ask(
        user_text=next((t for t in (_text(m.get("content")) for m in reversed(users)) if t), ""),
        prompt_text=_prompt_text(body, messages), tools=_tools(body), tool_mode=mode,
        forced_name=forced, tool_result=_result_text(results[-1]) if results else None,
        json_mode=isinstance(fmt, dict) and fmt.get("type") == "json_schema",
        json_schema=fmt.get("schema") if isinstance(fmt, dict) else None,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        thoughts=isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"),
        stop=tuple(s for s in stop if isinstance(s, str)),
    )


def _prompt_text(body: dict[str, Any], messages: list[dict[str, Any]]) -> str:
    pieces = [_text(body.get("system"))]
    for message in messages:
        pieces.append(_text(message.get("content")))
        pieces += [_result_text(b) for b in _blocks(message.get("content"))
                   if b.get("type") == "tool_result"]
    return " ".join(p for p in pieces if p)


def _tools(body: dict[str, Any]) -> tuple[ToolSpec, ...]:
    specs = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            schema = tool.get("input_schema")
            specs.append(ToolSpec(tool["name"], schema if isinstance(schema, dict) else {}))
    return tuple(specs)


def _tool_choice(choice: Any) -> tuple[ToolMode, str | None]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "none":
        return "none", None
    if kind == "any":
        return "force", None
    if kind == "tool":
        name = choice.get("name")
        return "force", name if isinstance(name, str) else None
    return "auto", None


# --- Reply -> wire --------------------------------------------------------------------------

def _usage(reply: Reply, output_tokens: int) -> dict[str, Any]:
    return {"input_tokens": reply.prompt_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def _blocks_out(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.thought is not None:
        blocks.append({"type": "thinking", "thinking": reply.thought, "signature": SIGNATURE})
    if reply.tool is not None:
        blocks.append({"type": "tool_use", "id": f"toolu_{reply.tool.id_suffix}",
                       "name": reply.tool.name, "input": reply.tool.args})
    else:
        blocks.append({"type": "text", "text": reply.text})
    return blocks


def _message(msg_id: str, model: str, reply: Reply, final: bool) -> dict[str, Any]:
    output = reply.output_tokens + reply.thought_tokens
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": _blocks_out(reply) if final else [],
            "stop_reason": STOP_REASONS[reply.finish] if final else None,
            "stop_sequence": reply.stop_sequence if final else None,
            "usage": _usage(reply, output if final else 1)}


def _event(name: str, data: dict[str, Any], content: bool = False) -> Frame:
    return Frame(sse({"type": name} | data, event=name), content)


def _block_frames(index: int, block: dict[str, Any], chunks: int) -> list[Frame]:
    kind = block["type"]
    start: dict[str, Any]
    if kind == "thinking":
        start, deltas = {"type": "thinking", "thinking": "", "signature": ""}, [
            {"type": "thinking_delta", "thinking": p} for p in split_text(block["thinking"], chunks)]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p}
                  for p in split_text(orjson.dumps(block["input"]).decode(), chunks)]
    else:
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in split_text(block["text"], chunks)]
    frames = [_event("content_block_start", {"index": index, "content_block": start})]
    frames += [_event("content_block_delta", {"index": index, "delta": d},
                      content=d["type"] != "signature_delta") for d in deltas]
    return frames + [_event("content_block_stop", {"index": index})]


def _frames(msg_id: str, model: str, reply: Reply, chunks: int) -> list[Frame]:
    frames = [_event("message_start", {"message": _message(msg_id, model, reply, final=False)}),
              _event("ping", {})]
    for index, block in enumerate(_blocks_out(reply)):
        frames += _block_frames(index, block, chunks)
    delta = {"stop_reason": STOP_REASONS[reply.finish], "stop_sequence": reply.stop_sequence}
    usage = _usage(reply, reply.output_tokens + reply.thought_tokens)
    frames.append(_event("message_delta", {"delta": delta, "usage": usage}))
    return frames + [_event("message_stop", {})]


def _messages_handler(incoming: Incoming) -> dict[str, Any] | StreamAnswer:
    body = incoming.body
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    reply = plan(_ask(body))
    msg_id = f"msg_{digest(orjson.dumps(body).decode())}"
    if body.get("stream"):
        return StreamAnswer(_frames(msg_id, body["model"], reply, incoming.options.chunks))
    return _message(msg_id, body["model"], reply, final=True)


def _count(incoming: Incoming) -> dict[str, Any]:
    body = incoming.body
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    _ask(body, need_max_tokens=False)  # validates the same way messages.create does
    return {"input_tokens": max(1, count_tokens(_prompt_text(body, _messages(body))))}


def list_models(incoming: Incoming) -> dict[str, Any]:
    data = [{"type": "model", "id": mid, "display_name": name, "created_at": MODELS_CREATED}
            for mid, name in MODELS]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}


def _no_model(request: web.Request, body: Any) -> tuple[str | None, bool]:
    return None, False


MESSAGES = Endpoint(DIALECT, _describe, _messages_handler)
COUNT = Endpoint(DIALECT, _describe, _count, faults=False)
LIST = Endpoint(DIALECT, _no_model, list_models, faults=False)


async def handle_messages(request: web.Request) -> web.StreamResponse:
    return await serve(request, MESSAGES)


async def handle_count(request: web.Request) -> web.StreamResponse:
    return await serve(request, COUNT)


def add_routes(app: web.Application) -> None:
    """Messages routes; ``GET /v1/models`` is shared with OpenAI (see app.py)."""
    app.router.add_post("/v1/messages", handle_messages)
    app.router.add_post("/v1/messages/count_tokens", handle_count)

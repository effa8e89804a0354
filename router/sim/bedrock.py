"""AWS Bedrock's Converse API as the simulator speaks it: ``POST /model/{modelId}/converse`` (JSON) and
``/converse-stream`` (the binary event stream), each request's SigV4 signature checked first
(:mod:`router.sim.sigv4_check`: a bad or unknown signature is AWS's 403).

Faults are keyed by the access key id. ``exception`` faults end a stream with an exception message
(429 → throttlingException, 400 → validationException, 503 → serviceUnavailableException, other
5xx → internalServerException); ``malformed`` ones with a frame whose CRC does not match.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from router import eventstream
from router.sim.exchange import Dialect, Endpoint, Frame, Incoming, StreamAnswer, json_response, serve
from router.sim.faults import Fault
from router.sim.replies import Ask, Reply, ToolMode, ToolSpec, plan, split_text
from router.sim.sigv4_check import access_key_of, check

SIGNATURE = "c2ltLWJlZHJvY2stc2lnbmF0dXJl"  # the reasoning signature the fake hands out
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use", "stop_sequence": "stop_sequence"}
# HTTP status -> the exception type AWS answers with (a stream names it in lower camel case)
EXCEPTIONS = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
              408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
              500: "InternalServerException", 503: "ServiceUnavailableException"}


def exception_type(status: int) -> str:
    return EXCEPTIONS.get(status, "InternalServerException" if status >= 500 else "ValidationException")


def error_body(status: int, message: str, fault: Fault | None) -> dict[str, Any]:
    return {"message": message}


def _stream_error(fault: Fault) -> bytes:
    name = exception_type(fault.status)
    return eventstream.exception(name[0].lower() + name[1:], fault.message or f"Simulated {name}.")


def _malformed() -> bytes:
    frame = bytearray(eventstream.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}))
    frame[-1] ^= 0xFF  # the message CRC no longer matches
    return bytes(frame)


DIALECT = Dialect(name="bedrock", key_of=access_key_of, error_body=error_body, missing_key_status=403,
                  request_id_header="x-amzn-RequestId", stream_type=eventstream.MEDIA_TYPE,
                  malformed_frame=_malformed(), stream_error=_stream_error)


def _describe(request: web.Request, body: Any) -> tuple[str | None, bool]:
    return request.match_info.get("model"), request.path.endswith("/converse-stream")


# --- request -> Ask -------------------------------------------------------------------------

def _texts(content: Any, key: str = "text") -> list[str]:
    blocks = content if isinstance(content, list) else []
    return [b[key] for b in blocks if isinstance(b, dict) and isinstance(b.get(key), str)]


def _result_text(message: dict[str, Any]) -> str | None:
    results = [b["toolResult"] for b in message.get("content") or [] if isinstance(b, dict)
               and isinstance(b.get("toolResult"), dict)]
    return " ".join(_texts(results[-1].get("content"))) if results else None


def _ask(body: dict[str, Any]) -> Ask:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ValueError("1 validation error detected: Value at 'messages' failed to satisfy constraint")
    users = [m for m in messages if m.get("role") == "user"]
    config = _object(body.get("inferenceConfig"))
    tool_config = _object(body.get("toolConfig"))
    mode, forced = _tool_choice(tool_config.get("toolChoice"))
    prompt = _texts(body.get("system")) + [t for m in messages for t in _texts(m.get("content"))]
    max_tokens = config.get("maxTokens")
    thinking = _object(_object(body.get("additionalModelRequestFields")).get("thinking"))
    return Ask(user_text=next((" ".join(t) for t in (_texts(m.get("content")) for m in reversed(users)) if t), ""),
               prompt_text=" ".join(prompt), tools=_tools(tool_config), tool_mode=mode, forced_name=forced,
               tool_result=_result_text(messages[-1]),
               max_tokens=max_tokens if isinstance(max_tokens, int) else None,
               thoughts=thinking.get("type") in ("enabled", "adaptive"),
               stop=tuple(s for s in config.get("stopSequences") or [] if isinstance(s, str)))


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tools(tool_config: dict[str, Any]) -> tuple[ToolSpec, ...]:
    specs = []
    for tool in tool_config.get("tools") or []:
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            schema = spec.get("inputSchema")
            json_schema = schema.get("json") if isinstance(schema, dict) else None
            specs.append(ToolSpec(spec["name"], json_schema if isinstance(json_schema, dict) else {}))
    return tuple(specs)


def _tool_choice(choice: Any) -> tuple[ToolMode, str | None]:
    if isinstance(choice, dict) and "any" in choice:
        return "force", None
    tool = choice.get("tool") if isinstance(choice, dict) else None
    if isinstance(tool, dict):
        return "force", tool.get("name") if isinstance(tool.get("name"), str) else None
    return "auto", None


# --- Reply -> wire --------------------------------------------------------------------------

def _usage(reply: Reply) -> dict[str, int]:
    output = reply.output_tokens + reply.thought_tokens
    return {"inputTokens": reply.prompt_tokens, "outputTokens": output, "totalTokens": reply.prompt_tokens + output,
            "cacheReadInputTokens": 0, "cacheWriteInputTokens": 0}


def _content(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.thought is not None:
        blocks.append({"reasoningContent": {"reasoningText": {"text": reply.thought, "signature": SIGNATURE}}})
    if reply.tool is not None:
        return blocks + [{"toolUse": {"toolUseId": f"tooluse_{reply.tool.id_suffix}", "name": reply.tool.name,
                                      "input": reply.tool.args}}]
    return blocks + [{"text": reply.text}]


def _answer(reply: Reply) -> dict[str, Any]:
    return {"output": {"message": {"role": "assistant", "content": _content(reply)}},
            "stopReason": STOP_REASONS[reply.finish], "usage": _usage(reply), "metrics": {"latencyMs": 1}}


def _frames(reply: Reply, chunks: int) -> list[Frame]:
    frames = [Frame(eventstream.event("messageStart", {"role": "assistant"}))]
    deltas: list[dict[str, Any]]
    for index, block in enumerate(_content(reply)):
        use, reasoning = block.get("toolUse"), block.get("reasoningContent")
        if reasoning is not None:
            text = reasoning["reasoningText"]
            deltas = [{"reasoningContent": {"text": p}} for p in split_text(text["text"], chunks)]
            deltas.append({"reasoningContent": {"signature": text["signature"]}})
        elif use is not None:
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            frames.append(Frame(eventstream.event("contentBlockStart", {"contentBlockIndex": index, "start": start})))
            arguments = orjson.dumps(use["input"]).decode()
            deltas = [{"toolUse": {"input": p}} for p in split_text(arguments, chunks)]
        else:
            deltas = [{"text": p} for p in split_text(block["text"], chunks)]
        frames += [Frame(eventstream.event("contentBlockDelta", {"contentBlockIndex": index, "delta": d}),
                         "signature" not in d.get("reasoningContent", {})) for d in deltas]
        frames.append(Frame(eventstream.event("contentBlockStop", {"contentBlockIndex": index})))
    frames.append(Frame(eventstream.event("messageStop", {"stopReason": STOP_REASONS[reply.finish]})))
    return frames + [Frame(eventstream.event("metadata", {"usage": _usage(reply), "metrics": {"latencyMs": 1}}))]


def _converse(incoming: Incoming) -> dict[str, Any] | StreamAnswer:
    body = incoming.body
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    reply = plan(_ask(body))
    if incoming.request.path.endswith("/converse-stream"):
        return StreamAnswer(_frames(reply, incoming.options.chunks))
    return _answer(reply)


CONVERSE = Endpoint(DIALECT, _describe, _converse)


async def handle_converse(request: web.Request) -> web.StreamResponse:
    """Checks the signature, then serves the exchange like every simulated endpoint."""
    refusal = check(request, await request.read())
    if refusal is not None:
        return json_response({"message": refusal.message}, DIALECT, 403,
                             {"x-amzn-ErrorType": f"{refusal.exception}:http://internal.amazon.com/coral/"})
    return await serve(request, CONVERSE)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/model/{model}/converse", handle_converse)
    app.router.add_post("/model/{model}/converse-stream", handle_converse)

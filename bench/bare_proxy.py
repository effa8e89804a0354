"""The bare reference proxy: the least code that does the gateway's job for one route.

OpenAI chat (text messages only) → Gemini ``generateContent``/``streamGenerateContent?alt=sse`` →
OpenAI ``chat.completion`` / ``chat.completion.chunk`` SSE, with the same response shape and the
same ``X-*`` headers as the gateway, so a benchmark compares like with like. It uses the fastest
primitives available: uvloop, orjson, one pooled ``ClientSession`` with an unlimited connector. No
config, routing, auth, retries or templates: whatever the gateway costs above this is its overhead.

    python bench/bare_proxy.py --port 8050 --upstream http://127.0.0.1:8046
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import orjson
from aiohttp import ClientSession, ClientTimeout, StreamReader, TCPConnector, web

UPSTREAM_MODEL = "gemini-2.5-flash"
ACCOUNT = "bench@local"
API_KEY = "bench-key"
FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter"}
DONE = b"data: [DONE]\n\n"
UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)
SESSION: web.AppKey[ClientSession] = web.AppKey("session", ClientSession)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI chat request → Gemini request body (text messages, temperature, max tokens)."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    for msg in body.get("messages") or ():
        role = msg.get("role")
        text = _text(msg.get("content"))
        if role in ("system", "developer"):
            system.append(text)
        else:
            contents.append({"role": "model" if role == "assistant" else "user", "parts": [{"text": text}]})
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n".join(system)}]}
    config: dict[str, Any] = {}
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    if config:
        out["generationConfig"] = config
    return out


def _usage(meta: dict[str, Any] | None) -> dict[str, Any]:
    meta = meta or {}
    prompt = meta.get("promptTokenCount", 0)
    thoughts = meta.get("thoughtsTokenCount", 0)
    completion = meta.get("candidatesTokenCount", 0) + thoughts
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": meta.get("cachedContentTokenCount", 0)},
            "completion_tokens_details": {"reasoning_tokens": thoughts}}


def _candidate_text(candidate: dict[str, Any]) -> str:
    parts = (candidate.get("content") or {}).get("parts") or ()
    return "".join(p.get("text", "") for p in parts if not p.get("thought"))


def to_completion(reply: dict[str, Any], model: str) -> dict[str, Any]:
    """Gemini ``generateContent`` answer → OpenAI ``chat.completion``."""
    choices = []
    for i, cand in enumerate(reply.get("candidates") or ()):
        message = {"role": "assistant", "content": _candidate_text(cand), "refusal": None}
        choices.append({"index": cand.get("index", i), "message": message, "logprobs": None,
                        "finish_reason": FINISH.get(cand.get("finishReason", "STOP"), "stop")})
    return {"id": _new_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": _usage(reply.get("usageMetadata"))}


def _new_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


def _headers() -> dict[str, str]:
    return {"X-Request-Id": os.urandom(8).hex(), "X-Mapped-Model": UPSTREAM_MODEL, "X-Account-Email": ACCOUNT}


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def chat(request: web.Request) -> web.StreamResponse:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _error(400, f"invalid JSON: {exc}")
    model = str(body.get("model", ""))
    stream = bool(body.get("stream"))
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    url = f"{request.app[UPSTREAM]}/v1beta/models/{UPSTREAM_MODEL}:{action}"
    session = request.app[SESSION]
    upstream_headers = {"x-goog-api-key": API_KEY, "Content-Type": "application/json"}
    async with session.post(url, data=orjson.dumps(to_gemini(body)), headers=upstream_headers) as up:
        if up.status != 200:
            return _error(up.status, (await up.read()).decode(errors="replace"))
        if not stream:
            reply = orjson.loads(await up.read())
            return web.Response(body=orjson.dumps(to_completion(reply, model)), headers=_headers(),
                                content_type="application/json")
        return await _relay_stream(request, up.content, model)


async def _relay_stream(request: web.Request, content: StreamReader, model: str) -> web.StreamResponse:
    out = web.StreamResponse(headers=_headers())
    out.content_type = "text/event-stream"
    out.headers["Cache-Control"] = "no-cache"
    await out.prepare(request)
    head = (b'data: {"id":"' + _new_id().encode() + b'","object":"chat.completion.chunk","created":'
            + str(int(time.time())).encode() + b',"model":' + orjson.dumps(model) + b',"choices":')

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        entry = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return head + orjson.dumps([entry]) + b"}\n\n"

    await out.write(chunk({"role": "assistant", "content": ""}))
    finish = "stop"
    pending = b""
    async for data in content.iter_any():  # whatever arrived: one write per read, not per event
        *complete, pending = (pending + data).split(b"\n")
        frames = []
        for line in complete:
            if not line.startswith(b"data:"):
                continue
            for cand in orjson.loads(line[5:]).get("candidates") or ():
                text = _candidate_text(cand)
                if text:
                    frames.append(chunk({"content": text}))
                if cand.get("finishReason"):
                    finish = FINISH.get(cand["finishReason"], "stop")
        if frames:
            await out.write(b"".join(frames))
    await out.write(chunk({}, finish) + DONE)
    await out.write_eof()
    return out


async def _session_ctx(app: web.Application) -> Any:
    timeout = ClientTimeout(total=600, sock_connect=20)
    async with ClientSession(connector=TCPConnector(limit=0), timeout=timeout) as session:
        app[SESSION] = session
        yield


def create_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session_ctx)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/healthz", healthz)
    return app


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--upstream", required=True, help="the simulator's base URL")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    loop = uvloop.new_event_loop() if uvloop is not None else None
    web.run_app(create_app(args.upstream), host=args.host, port=args.port, access_log=None, print=None,
                loop=loop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

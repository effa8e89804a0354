"""The request pipeline every simulated endpoint shares: auth, log, faults, latency, writing.

A dialect describes itself with a ``Dialect`` (how keys arrive, how errors look) and each of its
endpoints with an ``Endpoint`` whose ``handle`` turns the parsed body into either a JSON dict or
a ``StreamAnswer`` (a list of pre-rendered SSE frames). ``serve`` does the rest, so fault
injection behaves identically across dialects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from router.sim.faults import Fault
from router.sim.oauth import refused
from router.sim.state import STATE, LogEntry, SimOptions

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE frame, already encoded; ``content`` marks frames carrying model output."""

    data: bytes
    content: bool = False


@dataclass(frozen=True, slots=True)
class StreamAnswer:
    frames: list[Frame]


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a handler sees: the request, its parsed JSON body and the effective options."""

    request: web.Request
    body: Any
    options: SimOptions


Answer = dict[str, Any] | StreamAnswer


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one API family authenticates and shapes its errors."""

    name: str
    key_of: Callable[[web.Request], str | None]
    error_body: Callable[[int, str, Fault | None], dict[str, Any]]
    missing_key_status: int
    request_id_header: str
    sse_separator: bytes = b"\n\n"
    stream_type: str = SSE_TYPE  # a stream answer's Content-Type
    malformed_frame: bytes | None = None  # what a "malformed" fault writes mid-stream (default: bad SSE JSON)
    stream_error: Callable[[Fault], bytes] | None = None  # the mid-stream error frame of an "exception" fault
    # a gate before the answer, as a cloud's front end checks credentials and the API version: its
    # refusal (auth, version) in the cloud's own error shape, or None to go on
    refuse: Callable[[web.Request], web.Response | None] | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route: ``describe`` gives (model, stream) for the log, ``handle`` the answer.

    ``handle`` raises ``ValueError`` for a malformed request (answered 400). ``faults`` says
    whether scripted faults apply; only generation endpoints take them, so background model-list
    calls never swallow a fault meant for a completion.
    """

    dialect: Dialect
    describe: Callable[[web.Request, Any], tuple[str | None, bool]]
    handle: Callable[[Incoming], Answer]
    faults: bool = True


def json_response(body: Any, dialect: Dialect, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    merged = {dialect.request_id_header: "req_sim"} | (headers or {})
    return web.Response(status=status, body=orjson.dumps(body), content_type=JSON_TYPE,
                        headers=merged)


def error_response(dialect: Dialect, status: int, message: str,
                   fault: Fault | None = None) -> web.Response:
    headers: dict[str, str] = {}
    if fault is not None and fault.retry_after is not None:
        headers["Retry-After"] = _seconds(fault.retry_after)
    return json_response(dialect.error_body(status, message, fault), dialect, status, headers)


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def sse(data: Any, separator: bytes = b"\n\n", event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + separator


async def read_body(request: web.Request) -> Any:
    """The parsed JSON body (None for GET / empty); raises ``ValueError`` on bad JSON."""
    if request.method != "POST":
        return None
    raw = await request.read()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("request body is not valid JSON") from None


async def serve(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    """Run one simulated exchange end to end and record it in the app's request log."""
    state = request.app[STATE]
    dialect = endpoint.dialect
    key = dialect.key_of(request)
    try:
        body = await read_body(request)
        error: str | None = None
    except ValueError as exc:
        body, error = None, str(exc)
    model, stream = endpoint.describe(request, body)
    entry = state.record(LogEntry(key=key, path=request.path, model=model, stream=stream,
                                  body=body, dialect=dialect.name))
    refusal = dialect.refuse(request) if dialect.refuse is not None else None
    fault = state.faults.take(key) if key and endpoint.faults and refusal is None else None
    entry.fault = fault.kind if fault else None
    response = refusal if refusal is not None else await _answer(request, endpoint, key, body, error, fault,
                                                                 state.options)
    # A dropped connection before any header was sent means the client never saw a status.
    dropped = request.transport is None or request.transport.is_closing()
    entry.status = response.status if response.prepared or not dropped else None
    return response


async def _answer(request: web.Request, endpoint: Endpoint, key: str | None, body: Any,
                  error: str | None, fault: Fault | None,
                  defaults: SimOptions) -> web.StreamResponse:
    dialect = endpoint.dialect
    try:
        options = defaults.with_headers(request.headers)
    except ValueError as exc:
        options, error = defaults, error or str(exc)
    await asyncio.sleep(options.latency)
    if fault is not None and fault.kind == "slow_first_byte":
        await asyncio.sleep(fault.delay)
    if not key:
        return error_response(dialect, dialect.missing_key_status, "API key missing (simulated).")
    if refused(request.app, key):  # an access token the fake token server issued, expired or unknown
        return error_response(dialect, 401, "Request had invalid authentication credentials (simulated).")
    if fault is not None and fault.kind == "status":
        message = fault.message or f"Simulated upstream error {fault.status}."
        return error_response(dialect, fault.status, message, fault)
    if error is not None:
        return error_response(dialect, 400, error)
    try:
        answer = endpoint.handle(Incoming(request, body, options))
    except ValueError as exc:
        return error_response(dialect, 400, str(exc))
    if isinstance(answer, StreamAnswer):
        return await _write_stream(request, dialect, answer.frames, fault, options)
    return await _write_json(request, dialect, answer, fault)


async def _write_json(request: web.Request, dialect: Dialect, body: dict[str, Any],
                      fault: Fault | None) -> web.StreamResponse:
    if fault is None:
        return json_response(body, dialect)
    if fault.kind == "reset":
        _drop(request)
        return web.Response()  # never written: the connection is already gone
    if fault.kind == "malformed":
        return web.Response(body=b"{not json", content_type=JSON_TYPE)
    if fault.kind == "exception":  # no stream to break: the error as a status answer
        return error_response(dialect, fault.status, fault.message or f"Simulated upstream error {fault.status}.",
                              fault)
    if fault.kind == "stall":
        await asyncio.sleep(fault.delay)
    return json_response(body, dialect)


def _drop(request: web.Request) -> None:
    # close() (not abort()) so frames already written still reach the client before the cut.
    if request.transport is not None:
        request.transport.close()


def cut_index(frames: list[Frame], after_chunks: int) -> int:
    """Where a mid-stream fault strikes: just before content chunk ``after_chunks + 1``.

    When the stream has no more content chunks than that, right after the last one, so the
    terminal frames are still withheld.
    """
    positions = [i for i, frame in enumerate(frames) if frame.content]
    if after_chunks < len(positions):
        return positions[after_chunks]
    return positions[-1] + 1 if positions else max(0, len(frames) - 1)


async def _write_stream(request: web.Request, dialect: Dialect, frames: list[Frame],
                        fault: Fault | None, options: SimOptions) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": dialect.stream_type, "Cache-Control": "no-cache",
                                           dialect.request_id_header: "req_sim"})
    await response.prepare(request)
    mid = fault if fault is not None and fault.kind in ("reset", "malformed", "stall", "exception") else None
    cut = cut_index(frames, mid.after_chunks) if mid else -1
    sent_content = False
    try:
        for index in range(len(frames) + 1):
            if index == cut and mid is not None and not await _strike(request, response, mid, dialect):
                return response
            if index == len(frames):
                break
            frame = frames[index]
            if frame.content and sent_content and options.chunk_delay:
                await asyncio.sleep(options.chunk_delay)
            sent_content = sent_content or frame.content
            await response.write(frame.data)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away; nothing left to tell it
    return response


async def _strike(request: web.Request, response: web.StreamResponse, fault: Fault,
                  dialect: Dialect) -> bool:
    """Apply a mid-stream fault; False when the stream must end here."""
    if fault.kind == "stall":
        await asyncio.sleep(fault.delay)
        return True
    frame = _mid_stream_frame(fault, dialect)
    if frame is not None:
        await response.write(frame)
        await response.write_eof()
        return False
    _drop(request)
    return False


def _mid_stream_frame(fault: Fault, dialect: Dialect) -> bytes | None:
    """What a malformed or exception fault writes before the stream ends (None: the connection is cut)."""
    if fault.kind == "malformed":
        return dialect.malformed_frame or b"data: {not json" + dialect.sse_separator
    if fault.kind == "exception" and dialect.stream_error is not None:
        return dialect.stream_error(fault)
    return None

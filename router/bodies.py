"""Reading HTTP bodies with a size limit: a client's JSON request (answering ``Expect:
100-continue`` first, within a time limit) and an upstream's error body."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import HttpVersion11, web

from router.errors import BadRequest, GatewayError


async def read_limited(stream: Any, limit: int, expected: int | None = None) -> bytes | None:
    """The whole body of an aiohttp stream, or None once it passes ``limit`` bytes.

    Reads with ``readany()``, not ``read(n)``: ``read(n)`` raises the stream's buffer limits to n, and
    aiohttp inflates a compressed body (``Content-Encoding: gzip``) up to that buffer limit per network
    chunk, so a large ``n`` would let a few KiB of gzip bomb become ``limit`` bytes at once. With the
    default limits each step holds at most ~128 KiB and the running total stops the read at ``limit``.
    ``expected`` (the Content-Length of an uncompressed body) ends the read without waiting for EOF.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.readany()
        if not chunk:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
        if size == expected:
            return chunk if len(parts) == 1 else b"".join(parts)


async def expect_continue(request: web.BaseRequest) -> None:
    """Answer ``Expect: 100-continue`` before reading a body (curl sends it with large uploads and
    waits a second for the interim response); any other expectation is a 417."""
    expect = request.headers.get("Expect")
    if expect is None or request.version != HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise GatewayError("invalid_request", f"unsupported Expect header: {expect[:100]!r}", status=417)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim response is not part of the response body


async def read_json(request: web.BaseRequest, limit: int, timeout: float | None = None) -> Any:
    """The request body as JSON: 413 over ``limit`` bytes, 408 when it did not arrive within
    ``timeout`` seconds, 400 when empty or not JSON."""
    length = request.content_length  # parsed from the header on every access: read once
    if length is not None and length > limit:
        raise GatewayError("request_too_large", f"request body exceeds {limit} bytes")
    if "Expect" in request.headers:  # only once the size is acceptable: a 413 instead of a 100
        await expect_continue(request)
    content = request.content
    if timeout is None or content.is_eof():  # the usual case: the body came with the headers
        body = await read_limited(content, limit, length)
    else:
        body = await _read_within(content, limit, length, timeout)
    if body is None:
        raise GatewayError("request_too_large", f"request body exceeds {limit} bytes")
    if not body:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None


async def _read_within(content: Any, limit: int, length: int | None, timeout: float) -> bytes | None:
    """``read_limited`` bounded in time: a client trickling its body must not hold a handler forever."""
    try:
        async with asyncio.timeout(timeout):
            return await read_limited(content, limit, length)
    except TimeoutError:
        # the rest of the body is not read: the connection closes after the answer
        raise GatewayError("request_timeout", f"the request body did not arrive within {timeout:g} s",
                           headers={"Connection": "close"}) from None

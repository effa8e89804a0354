"""Requests that do not parse as HTTP: one short log line each, never a header value (a key), and a
short JSON 400, never the offending line or a traceback."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.conftest import Harness

SECRET = "sk-SECRET-0123456789abcdef"
HEAD = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"

BAD_REQUESTS = {
    "header over the size limit": (HEAD + f"Authorization: Bearer {SECRET}".encode() + b"A" * 9000
                                   + b"\r\n\r\n", "request line or header too long"),
    "invalid character in a header": (HEAD + f"Authorization: Bearer {SECRET}\x01x".encode() + b"\r\n\r\n",
                                      "malformed header"),
    "invalid header name": (HEAD + f"Auth{{orization: Bearer {SECRET}".encode() + b"\r\n\r\n",
                            "malformed header"),
    "garbage request line": (f"HELLO {SECRET} there\r\n\r\n".encode(), "not an HTTP request (bad method)"),
    "bad HTTP version": (f"GET /{SECRET} HTTP/9.x\r\nHost: x\r\n\r\n".encode(), "malformed request line"),
    "TLS on the plain port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + SECRET.encode(),
                              "not an HTTP request (bad method)"),
}


async def _send(h: Harness, data: bytes) -> bytes:
    port = int(h.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)  # the server closes after the 400
    finally:
        writer.close()


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
async def test_a_bad_request_logs_one_short_line_without_values(gw: Harness, caplog: pytest.LogCaptureFixture,
                                                                name: str) -> None:
    data, phrase = BAD_REQUESTS[name]
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    answer = await _send(gw, data)
    await asyncio.sleep(0.05)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400 "), answer[:200]
    assert json.loads(body) == {"error": {"message": f"bad HTTP request: {phrase}", "type": "invalid_request_error",
                                          "param": None, "code": None}}
    assert SECRET.encode() not in answer and b"Traceback" not in answer
    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "router"))]
    assert [r.getMessage() for r in records] == [f"bad HTTP request from 127.0.0.1: {phrase} (values not shown)"]
    assert records[0].exc_info is None and records[0].levelno >= logging.INFO
    assert SECRET not in caplog.text and "Traceback" not in caplog.text


async def test_the_connection_still_serves_good_requests_afterwards(gw: Harness) -> None:
    await _send(gw, BAD_REQUESTS["garbage request line"][0])
    assert (await gw.request("GET", "/healthz")).status == 200


def test_the_phrase_never_quotes_the_parsers_message() -> None:
    from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine

    from router.protocol import describe

    for exc in (BadHttpMessage(f"{SECRET}: header"), BadHttpMessage(f"Invalid header value char:\n\n  b'{SECRET}'"),
                BadStatusLine(error=f"Bad status line:\n  {SECRET}"), BadHttpMessage(SECRET)):
        assert SECRET not in describe(exc)

"""The HTTP server the gateway listens with: aiohttp's low-level one, except for requests that do
not parse.

aiohttp answers a request it cannot parse (an oversized or malformed header, a garbage request line)
with a 400 whose body quotes the offending line, and logs that line with a traceback: an
``Authorization: Bearer`` header over the size limit put the client's key in the log. Here such a
request gets one short log line naming the client and what was wrong (a fixed phrase, never a header
value), and a short JSON 400 in the OpenAI shape (the path, hence the API family, is unknown).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("router.http")

# what a parse error's reason (its first words) mentions -> the phrase logged and answered
_REASONS = (("too many headers", "too many headers"), ("content-length", "bad Content-Length"),
            ("transfer-encoding", "bad Transfer-Encoding"), ("chunk", "bad chunked encoding"),
            ("header", "malformed header"), ("method", "bad method"), ("url", "malformed URL"),
            ("version", "bad HTTP version"))


def describe(exc: BaseException) -> str:
    """A fixed phrase for a parse error. The parser's own message quotes the raw line (a header's
    value, a key with it): it only chooses the phrase and is never shown."""
    if isinstance(exc, LineTooLong):
        return "request line or header too long"
    if isinstance(exc, BadHttpMethod):
        return "not an HTTP request (bad method)"
    if isinstance(exc, InvalidURLError):
        return "malformed URL"
    if isinstance(exc, InvalidHeader):
        return "malformed header"
    reason = str(getattr(exc, "message", "")).split(":", 1)[0].split("\n", 1)[0].lower()
    for word, phrase in _REASONS:
        if word in reason:
            return phrase
    return "malformed request line" if isinstance(exc, BadStatusLine) else "malformed request"


class _Protocol(RequestHandler):
    __slots__ = ()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        what = describe(exc)
        # non-HTTP traffic (TLS, scanners) on the port is routine: quieter than a broken client
        level = logging.INFO if isinstance(exc, BadHttpMethod) else logging.WARNING
        log.log(level, "bad HTTP request from %s: %s (values not shown)", request.remote, what)
        if request.writer.output_size > 0:  # as aiohttp: a response is already on its way
            raise ConnectionError("a response was already sent; cannot send the 400")
        body = {"error": {"message": f"bad HTTP request: {what}", "type": "invalid_request_error",
                          "param": None, "code": None}}
        resp = web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
        resp.force_close()
        return resp


class GatewayServer(web.Server):
    """``web.Server`` whose connections answer unparseable requests as described above."""

    def __init__(self, handler: Any, **kwargs: Any):
        super().__init__(handler, **kwargs)
        # what web.Server passes on to each connection's RequestHandler
        self._protocol_options = {k: v for k, v in kwargs.items()
                                  if k not in ("request_factory", "handler_cancellation", "loop")}

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=asyncio.get_running_loop(), **self._protocol_options)

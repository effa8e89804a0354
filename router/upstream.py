"""Talking to upstreams: rendering a template into a request, SSE framing, reading upstream errors."""

from __future__ import annotations

import email.utils
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import unquote

import orjson
from jinja2 import TemplateError

from router import __version__
from router.auth import presented_key
from router.errors import BadRequest, GatewayError
from router.snapshot import Template
from router.template_budget import within_budget
from router.templates import PRUNE

log = logging.getLogger("router.upstream")
_CRLF = re.compile(r"[\r\n\x00]")
_DELAY = re.compile(r"\A(\d+(?:\.\d+)?)s\Z")
USER_AGENT = f"router/{__version__}"  # sent upstream unless a template sets its own
_DEFAULT_HEADERS = {"content-type": "Content-Type", "user-agent": "User-Agent"}


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    params: dict[str, str] | None
    headers: dict[str, str]
    body: bytes


def render_request(template: Template, ctx: dict[str, Any], base_url: str,
                   client_headers: Mapping[str, str] | None = None) -> UpstreamRequest:
    """Render a provider template; refuses header injection and URLs that leave ``base_url``.

    A template with Jinja leaves renders under one budget (``server.template_limits``); the engine
    runs it off the event loop. A template that fails at run time (over budget, sandbox refusal, a
    filter choking on odd input) becomes a 500 naming the template, with the account's and the
    client's keys (``client_headers``) redacted from the message and the log line; a body that
    cannot be encoded as JSON (integers beyond 64 bits) a 400.
    """
    try:
        if template.jinja:
            return within_budget(template.limits, _render, template, ctx, base_url)
        return _render(template, ctx, base_url)
    except TemplateError as e:
        detail = _redacted(str(e), ctx, client_headers)
        log.error("template %r failed: %s", template.name, detail)
        raise GatewayError("server", f"upstream request template '{template.name}' failed: {detail}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as e:
        log.error("template %r failed: %s: %s", template.name, type(e).__name__,
                  _redacted(str(e), ctx, client_headers))
        raise GatewayError("server", f"upstream request template '{template.name}' failed on this "
                                     f"request: {type(e).__name__}") from None


def _redacted(text: str, ctx: dict[str, Any], client_headers: Mapping[str, str] | None) -> str:
    """``text`` without the account's key or the key the client presented (templates can read the
    one and index with either: their error messages may quote them)."""
    account = ctx.get("account")
    secrets = [account.get("api_key") if isinstance(account, dict) else None]
    if client_headers is not None:
        secrets.append(presented_key(client_headers))
    return redact(text, tuple(s for s in secrets if isinstance(s, str)))


def _render(template: Template, ctx: dict[str, Any], base_url: str) -> UpstreamRequest:
    url = template.url.render(ctx)  # (render_tree(node, ctx) is node.render(ctx), one call fewer)
    if not isinstance(url, str) or not _inside(url, base_url):
        # templates put client input (the model) in the path: refused as the client's error
        raise BadRequest("the request would make the upstream URL leave the provider's base_url "
                         "(check the model name)", param="model")
    params = None
    if template.query is not None:
        q = template.query.render(ctx)
        params = {str(k): _scalar(v) for k, v in q.items()} if isinstance(q, dict) and q else None
    headers: dict[str, str] = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if template.headers is not None:
        for k, v in template.headers.render(ctx).items():
            value = _scalar(v)
            if _CRLF.search(value) or _CRLF.search(k):
                raise GatewayError("server", f"rendered header '{k}' contains CR/LF; refused", status=500)
            if value:
                default = _DEFAULT_HEADERS.get(k.lower())
                if default is not None:  # the template's own spelling replaces the default
                    headers.pop(default, None)
                headers[k] = value
    body = template.body.render(ctx)
    try:
        data = b"" if body is PRUNE else orjson.dumps(body)
    except orjson.JSONEncodeError as e:
        raise BadRequest(f"the request cannot be encoded for the upstream: {e}") from None
    return UpstreamRequest(template.method, url, params, headers, data)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def _inside(url: str, base_url: str) -> bool:
    """Whether ``url`` stays under ``base_url``: no dot segments (also percent-encoded), fragments or
    backslashes, and no host change (``http://h/v1`` does not cover ``http://h/v1evil`` or ``http://h@x``)."""
    if not url.startswith(base_url):
        return False
    rest = url[len(base_url):]
    if rest and rest[0] not in "/?":
        return False
    if "#" in rest or "\\" in rest:
        return False
    path = rest.split("?", 1)[0]
    if "%" not in path and "/." not in path:
        return True  # every segment follows a "/": none starts with a dot, and nothing is encoded
    # Decode twice: an upstream (or a proxy in front of it) may decode %2F and %252F before resolving.
    for text in (path, unquote(path), unquote(unquote(path))):
        if "\\" in text or any(seg in (".", "..") for seg in text.split("/")):
            return False
    return True


class SSEParser:
    """Incremental Server-Sent Events framing (``\\n``, ``\\r\\n`` and mixed line ends)."""

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        buf = self._buf + chunk if self._buf else chunk
        out: list[tuple[str | None, bytes]] = []
        start = 0
        find = buf.find
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            end = nl - 1 if nl > start and buf[nl - 1] == 13 else nl
            line = buf[start:end]
            start = nl + 1
            if not line:
                if self._data:
                    out.append((self._event, self._data[0] if len(self._data) == 1 else b"\n".join(self._data)))
                self._event = None
                self._data = []
            elif line.startswith(b"data:"):
                self._data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line == b"data":  # a field name alone means an empty value
                self._data.append(b"")
            elif line.startswith(b"event:"):
                self._event = line[6:].strip().decode("utf-8", "replace")
        self._buf = buf[start:]
        return out

    def close(self) -> list[tuple[str | None, bytes]]:
        """Events left when the stream ended without a final blank line."""
        out = self.feed(b"\n\n") if (self._buf or self._data) else []
        self._buf = b""
        return out


@dataclass(slots=True)
class UpstreamFailure:
    """One failed attempt: an HTTP status or a transport outcome name, plus what it told us."""

    outcome: int | str  # status code, or connect_error | timeout | reset | malformed
    message: str
    retry_after: float | None = None
    model_scoped: bool = False

    @property
    def status(self) -> int:
        if isinstance(self.outcome, int):
            return self.outcome
        return {"timeout": 504, "connect_error": 502, "reset": 502, "malformed": 502}.get(self.outcome, 502)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name) or headers.get(name.lower())


def _finite(value: str, scale: float = 1.0) -> float | None:
    try:
        seconds = float(value) * scale
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``retry-after-ms``, then ``Retry-After`` (seconds or an HTTP date)."""
    ms = _header(headers, "retry-after-ms")
    if ms:
        seconds = _finite(ms, 0.001)
        if seconds is not None:
            return seconds
    ra = _header(headers, "Retry-After")
    if not ra:
        return None
    seconds = _finite(ra)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no stated offset
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def parse_failure(status: int, headers: Mapping[str, str], body: bytes, secrets: tuple[str, ...] = ()
                  ) -> UpstreamFailure:
    """Read an upstream error response of any dialect: message, retry delay, quota scope."""
    message = f"upstream returned HTTP {status}"
    retry_after = retry_after_seconds(headers)
    model_scoped = False
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, list) and doc:  # Gemini's non-SSE stream endpoint wraps errors in an array
        doc = doc[0]
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        if isinstance(err.get("message"), str) and err["message"]:
            message = err["message"]
        details = err.get("details")
        for d in details if isinstance(details, list) else ():
            if not isinstance(d, dict):
                continue
            kind = str(d.get("@type", ""))
            if kind.endswith("RetryInfo") and retry_after is None:
                m = _DELAY.match(str(d.get("retryDelay", "")))
                if m:
                    retry_after = float(m.group(1))
            elif kind.endswith("QuotaFailure"):
                model_scoped = True
    elif isinstance(err, str) and err:
        message = err
    elif isinstance(doc, dict) and isinstance(doc.get("message"), str) and doc["message"]:
        message = doc["message"]
    # Redact before truncating so a secret cut in half cannot leak its first part.
    return UpstreamFailure(status, redact(message, secrets)[:1000], retry_after, model_scoped)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for s in secrets:
        if s and s in text:
            text = text.replace(s, "***")
    return text

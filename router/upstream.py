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
from urllib.parse import unquote, urlsplit

import orjson
from jinja2 import TemplateError

from router import __version__
from router.auth import presented_key
from router.errors import BadRequest, GatewayError
from router.snapshot import DEFAULT_MAX_EVENT_BYTES, Template
from router.template_budget import within_budget
from router.templates import PRUNE, client_error, logged_error

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
    filter choking on odd input) becomes a 500 naming the template and the error's type (or our
    budget message); the log line gets the message without the values the render computed, and
    with the account's and the client's keys (``client_headers``) redacted; a body that cannot be
    encoded as JSON (integers beyond 64 bits) a 400.
    """
    try:
        if template.jinja:
            return within_budget(template.limits, _render, template, ctx, base_url)
        return _render(template, ctx, base_url)
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as e:
        # their messages quote keys and values the render computed (a key upper-cased or sliced is
        # no longer the key ``redact`` knows): the client gets the error's type, the log the message
        # without quoted values
        words = frozenset().union(*(n.words for n in (template.url, template.query, template.headers, template.body)
                                    if n is not None))
        log.error("template %r failed: %s", template.name, _redacted(logged_error(e, words), ctx, client_headers))
        raise GatewayError("server", f"upstream request template '{template.name}' failed on this request: "
                                     f"{_redacted(client_error(e), ctx, client_headers)}") from None


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


LINE_COST = 64  # what a held line or piece costs beyond its bytes (list slot, bytes object header)
LONG_LINE = 1024  # an unfinished line this long is kept in pieces, never copied again per read


class EventTooLarge(ValueError):
    """An SSE event over the parser's limit (a ValueError: the engine's ``malformed`` outcome)."""


class SSEParser:
    """Incremental Server-Sent Events framing (``\\n``, ``\\r\\n`` and mixed line ends), bounded.

    ``limit`` bounds one event: every byte since the last blank line, the line still arriving included,
    plus ``LINE_COST`` per data line and per piece held. An unfinished line of ``LONG_LINE`` bytes or
    more is kept as a list of its pieces and each later chunk is only searched for the line's end: a
    long line costs linear time, not a copy and a rescan of the whole line per chunk, and no buffer
    ever doubles in place.
    """

    __slots__ = ("_buf", "_data", "_event", "_more", "_size", "limit")

    def __init__(self, limit: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.limit = limit
        self._buf = b""  # the unfinished last line (its first piece)
        self._more: list[bytes] = []  # the unfinished line's later pieces, when it spans chunks
        self._size = 0  # cost of the current event so far, the unfinished line included
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        buf = self._buf
        if buf:
            if self._more or len(buf) >= LONG_LINE:  # look for the line's end before copying the line
                nl = chunk.find(b"\n")
                if nl < 0:  # the line goes on
                    return self._collect(chunk)
                if self._size + nl > self.limit:
                    raise self._too_large()
                buf = b"".join([buf, *self._more, chunk])
                self._more = []
            else:  # a short unfinished line (the usual event split by a read) is cheaper to copy
                buf += chunk
        else:
            buf = chunk
        out: list[tuple[str | None, bytes]] = []
        start = 0
        mark = -1  # where the event after the last blank line starts
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
                mark = start
            elif line.startswith(b"data:"):
                self._data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line == b"data":  # a field name alone means an empty value
                self._data.append(b"")
            elif line.startswith(b"event:"):
                self._event = line[6:].strip().decode("utf-8", "replace")
        if mark == start:
            # The last line ended an event: only the unfinished line (at most this read) is held, and
            # it is counted once it goes on, which is cheaper than measuring it on every read.
            self._size = 0
        else:
            size = self._size + len(chunk) if mark < 0 else len(buf) - mark
            if size + LINE_COST * len(self._data) > self.limit:  # tiny "data:" lines cost more than their bytes
                raise self._too_large()
            self._size = size
        self._buf = buf[start:]
        return out

    def _collect(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        """Keep a chunk without a line end as one more piece of the unfinished line."""
        size = self._size + len(chunk) + LINE_COST
        if size + LINE_COST * len(self._data) > self.limit:
            raise self._too_large()
        self._more.append(chunk)
        self._size = size
        return []

    def _too_large(self) -> EventTooLarge:
        return EventTooLarge(f"an SSE event is larger than {self.limit} bytes "
                             "(server.upstream_limits.max_event_bytes)")

    def close(self) -> list[tuple[str | None, bytes]]:
        """Events left when the stream ended without a final blank line."""
        out = self.feed(b"\n\n") if (self._buf or self._data) else []
        self._buf = b""
        self._more = []
        self._size = 0
        return out


@dataclass(slots=True)
class UpstreamFailure:
    """One failed attempt: an HTTP status or a transport outcome name, plus what it told us."""

    outcome: int | str  # status code, or connect_error | timeout | reset | malformed
    message: str
    retry_after: float | None = None
    model_scoped: bool = False
    note: str | None = None  # an unusable retry hint the upstream sent (for a log line), redacted

    @property
    def status(self) -> int:
        if isinstance(self.outcome, int):
            return self.outcome
        return {"timeout": 504, "connect_error": 502, "reset": 502, "malformed": 502}.get(self.outcome, 502)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name) or headers.get(name.lower())


def _delay(name: str, value: str, seconds: float, problems: list[str] | None) -> float | None:
    """``seconds`` when it is a usable delay; a negative or non-finite one is noted and ignored."""
    if seconds >= 0 and math.isfinite(seconds):
        return seconds
    if seconds == math.inf and _DECIMAL.match(value):
        return HUGE_DELAY  # a plain number with too many digits for a float: huge, capped by max_cooldown
    _note(problems, name, value, "is negative" if seconds < 0 else "is not finite")
    return None


_DECIMAL = re.compile(r"\A\s*\+?\d+(?:\.\d*)?\s*\Z")
HUGE_DELAY = 1e18  # seconds; what an over-long number of seconds counts as before the policy caps it


def _note(problems: list[str] | None, name: str, value: str, why: str) -> None:
    if problems is not None:
        problems.append(f"{name} {value[:40]!r} {why}")


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None,
                        problems: list[str] | None = None) -> float | None:
    """``retry-after-ms``, then ``Retry-After`` (seconds or an HTTP date); None when neither is usable.

    A negative, non-finite or unparseable value counts as absent (the policy's default applies), and
    is described in ``problems`` when given. A date in the past means 0.
    """
    ms = _header(headers, "retry-after-ms")
    if ms:
        try:
            seconds = _delay("retry-after-ms", ms, float(ms) * 0.001, problems)
        except ValueError:
            _note(problems, "retry-after-ms", ms, "is not a number")
        else:
            if seconds is not None:
                return seconds
    ra = _header(headers, "Retry-After")
    if not ra:
        return None
    try:
        return _delay("Retry-After", ra, float(ra), problems)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError, OverflowError):
        _note(problems, "Retry-After", ra, "is neither a number nor an HTTP date")
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no stated offset
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def _retry_delay(details: list[Any], problems: list[str]) -> float | None:
    """Gemini's ``RetryInfo.retryDelay`` (``"12s"``, ``"1.5s"``) from an error's details."""
    for d in details:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("RetryInfo"):
            text = str(d.get("retryDelay", ""))
            m = _DELAY.match(text)
            if m:
                return _delay("retryDelay", m.group(1), float(m.group(1)), problems)
            _note(problems, "retryDelay", text, "is not a duration like '12s'")
    return None


def parse_failure(status: int, headers: Mapping[str, str], body: bytes, secrets: tuple[str, ...] = ()
                  ) -> UpstreamFailure:
    """Read an upstream error response of any dialect: message, retry delay, quota scope."""
    message = f"upstream returned HTTP {status}"
    problems: list[str] = []
    retry_after = retry_after_seconds(headers, problems=problems)
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
        if isinstance(details, list):
            if retry_after is None:
                retry_after = _retry_delay(details, problems)
            model_scoped = any(isinstance(d, dict) and str(d.get("@type", "")).endswith("QuotaFailure")
                               for d in details)
    elif isinstance(err, str) and err:
        message = err
    elif isinstance(doc, dict) and isinstance(doc.get("message"), str) and doc["message"]:
        message = doc["message"]
    # Redact before truncating so a secret cut in half cannot leak its first part.
    note = redact("; ".join(problems), secrets)[:300] if problems else None
    return UpstreamFailure(status, redact(message, secrets)[:1000], retry_after, model_scoped, note)


def loggable_url(url: str, secrets: tuple[str, ...]) -> str:
    """``scheme://host[:port]/path`` of an upstream URL, for logs: no user info and no query (either
    may carry a key, e.g. Gemini's ``?key=``), and the account's key blanked should a path hold it."""
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if u.port:
        host += f":{u.port}"
    return redact(f"{u.scheme}://{host}{u.path}", secrets)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for s in secrets:
        if s and s in text:
            text = text.replace(s, "***")
    return text

"""The upstream request: a provider template rendered for one attempt, kept inside its base URL."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from jinja2 import TemplateError

from router import __version__
from router.auth import presented_key
from router.errors import BadRequest, GatewayError
from router.redact import redact
from router.registry import KEY_HEADERS
from router.snapshot import Template
from router.template_budget import within_budget
from router.templates import PRUNE, client_error, logged_error

log = logging.getLogger("router.upstream")  # the name operators filter on since before this module
_CRLF = re.compile(r"[\r\n\x00]")
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
    secrets = [account.get("api_key"), account.get("access_token")] if isinstance(account, dict) else []
    if client_headers is not None:
        secrets.append(presented_key(client_headers, KEY_HEADERS))
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


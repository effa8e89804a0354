"""The per-request record (:class:`Exchange`) and what is derived from it alone: the templated
response headers (X-Mapped-Model, X-Account-Email...) and the client headers templates may read."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from jinja2 import TemplateError

from router.accounts import Account
from router.auth import ApiKey
from router.canonical import CanonicalRequest
from router.codecs import ClientCodec, StreamEncoder
from router.endpoints import Endpoint
from router.redact import loggable_url
from router.registry import KEY_HEADERS
from router.snapshot import Provider, Snapshot
from router.templates import PRUNE, logged_error
from router.upstream_request import UpstreamRequest

if TYPE_CHECKING:
    from router.telemetry import Trace

log = logging.getLogger("router.engine")  # the pipeline's log: a header template failing is a request event


@dataclass(slots=True)
class Attempt:
    account: str
    outcome: int | str
    latency: float


@dataclass(slots=True)
class Exchange:
    """Everything one request accumulates on its way through the pipeline."""

    request_id: str
    snapshot: Snapshot
    endpoint: Endpoint | None  # None: no route matched
    started: float
    codec: ClientCodec | None = None  # a proxy request's client codec
    canonical: CanonicalRequest | None = None
    client_model: str | None = None
    provider: Provider | None = None
    upstream_model: str | None = None
    account: Account | None = None
    attempts: list[Attempt] = field(default_factory=list)  # finished attempts
    attempt: int = 0  # the number of the attempt in progress (1-based)
    status: int = 0
    ttfb: float | None = None
    usage: Any = None
    cost_nano: int | None = None  # what ``usage`` cost at the serving provider's prices, once computed (``cost``)
    error: str | None = None
    response: web.StreamResponse | None = None  # set once a stream's headers are going out
    # the stream's encoder while its events flow; None once its last frames are going out
    encoder: StreamEncoder | None = None
    client_key: str | None = None  # the name of the API key that authenticated the request
    key: ApiKey | None = None  # that key (its team, the models it may use)
    upstream: UpstreamRequest | None = None  # the attempt in progress (named in its log lines)
    limit_headers: dict[str, str] | None = None  # a key with limits: its rate-limit headers
    chain: list[str] | None = None  # a fallback list or split: the targets tried, "provider/model:outcome"
    trace: Trace | None = None  # with telemetry on: the request's trace context (router.telemetry)

    def cost(self) -> int:
        """What the upstream's usage report cost in nano-dollars (``prices`` of the provider that
        answered and the model it was sent; 0 without usage or price), computed once: budgets and
        usage both count it."""
        cost = self.cost_nano
        if cost is None:
            usage, provider = self.usage, self.provider
            cost = self.cost_nano = (0 if usage is None or provider is None else
                                     self.snapshot.prices.cost(provider.name, self.upstream_model or "", usage))
        return cost

    @property
    def handler(self) -> str:
        """The endpoint's name ("" when no route matched), as logs and metrics show it."""
        return self.endpoint.name if self.endpoint is not None else ""

    def upstream_target(self) -> tuple[str, str]:
        """(method, ``scheme://host/path``) of the attempt in progress, for log lines: no query and no
        user info (either may carry a key), the account's key blanked should the path hold it."""
        up = self.upstream
        if up is None:
            return "-", "-"
        return up.method, loggable_url(up.url, (self.account.api_key,) if self.account else ())

    def header_context(self) -> dict[str, Any]:
        return {
            "upstream_model": self.upstream_model, "client_model": self.client_model,
            "provider": self.provider.public() if self.provider else None,
            "account": self.account.public() if self.account else None,
            "request_id": self.request_id, "attempts": max(len(self.attempts), self.attempt),
            "chain": self.chain or [], "fallbacks": max(0, len(self.chain) - 1) if self.chain else 0,
        }


HEADER_CACHE_NAMES = frozenset({"upstream_model", "client_model", "provider", "account"})
HEADER_CACHE_MAX = 4096


def response_headers(x: Exchange) -> dict[str, str]:
    """The snapshot's templated response headers (X-Mapped-Model, X-Account-Email...).

    A template that reads only the models, the provider and the account (the shipped one) renders
    once per combination of them: the result is kept in the snapshot's ``header_cache``. Measured
    (``bench/template_render.py`` under callgrind): 5.0k instructions per response cached, 14.5k
    rendered, of the ~930k a request costs (``bench/instructions.py``): the cache saves 1.0%.
    """
    headers = _response_headers(x)  # a new dict: the limit headers go into it, not into a third
    if x.limit_headers is not None:
        headers.update(x.limit_headers)
    return headers


def _response_headers(x: Exchange) -> dict[str, str]:
    template = x.snapshot.response_headers
    if not (template.pure and template.names <= HEADER_CACHE_NAMES):
        return {"X-Request-Id": x.request_id, **_render_headers(x)}
    cache = x.snapshot.header_cache
    key = (x.upstream_model, x.client_model, id(x.provider), id(x.account))  # both live in the snapshot
    fixed = cache.get(key)
    if fixed is None:
        if len(cache) >= HEADER_CACHE_MAX:  # client model names are client input: bound the cache
            cache.clear()
        fixed = cache[key] = _render_headers(x)
    return {"X-Request-Id": x.request_id, **fixed}


def _render_headers(x: Exchange) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        rendered = x.snapshot.response_headers.render(x.header_context())
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as e:
        # decoration, not the answer (and error responses carry them too): the response goes without
        log.error("response_headers template failed: %s", logged_error(e, x.snapshot.response_headers.words),
                  extra={"request_id": x.request_id})
        return out
    if rendered is PRUNE:
        return out
    for name, value in rendered.items():
        if value != "":
            text = value if isinstance(value, str) else str(value)
            if "\r" not in text and "\n" not in text:
                out[name] = text
    return out


class ClientHeaders:
    """The client's request headers as templates see them: credentials and cookies hidden."""

    HIDDEN = frozenset({"authorization", "cookie", "proxy-authorization", *KEY_HEADERS})
    __slots__ = ("_headers",)

    def __init__(self, headers: Mapping[str, str]):
        self._headers = headers

    def get(self, name: str, default: str | None = None) -> str | None:
        if name.lower() in self.HIDDEN:
            return default
        return self._headers.get(name, default)

    def __getitem__(self, name: str) -> str | None:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() not in self.HIDDEN and name in self._headers

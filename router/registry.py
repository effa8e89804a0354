"""The one table of what the gateway speaks: API families, client codecs, upstream codecs, endpoints.

Everything else is derived from here, at load time: the handler names a route may name, the
upstream codec behind each provider's ``dialect:``, the family each endpoint's errors are written
in, the template filters. A test holds the JSON Schemas' enums equal to this table. A new client API
is one codec module (its family, codecs and own endpoints) plus its lines here and its routes; a new
upstream format is one upstream codec module plus its line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router import endpoints as ep
from router.client_codecs import (
    anthropic_messages,
    gemini_native,
    ollama,
    openai_chat,
    openai_completions,
    openai_responses,
)
from router.codecs import ClientCodec, Family, UpstreamCodec
from router.endpoints import Endpoint, Params, Services
from router.key_usage import key_usage
from router.status.page import admin_status, status_asset, status_page
from router.upstream_codecs import anthropic as anthropic_upstream
from router.upstream_codecs import bedrock as bedrock_upstream
from router.upstream_codecs import gemini as gemini_upstream
from router.upstream_codecs import openai as openai_upstream
from router.usage_report import admin_usage

if TYPE_CHECKING:
    from router.exchange import Exchange

FAMILIES: tuple[Family, ...] = (openai_chat.FAMILY, anthropic_messages.FAMILY, gemini_native.FAMILY,  # first: default
                                ollama.FAMILY)

# the headers a client API key may come in besides ``Authorization: Bearer``, in the families' order
KEY_HEADERS: tuple[str, ...] = tuple(dict.fromkeys(f.key_header for f in FAMILIES if f.key_header))

UPSTREAM_CODECS: Mapping[str, UpstreamCodec] = {
    c.name: c for c in (openai_upstream.CODEC, anthropic_upstream.CODEC, gemini_upstream.CODEC,
                        bedrock_upstream.CODEC)}


async def _admin_explain(svc: Services, x: Exchange, request: web.BaseRequest, params: Params
                         ) -> web.StreamResponse:
    from router.explain import admin_explain  # it reads this table (through the exchange): imported when run

    return await admin_explain(svc, x, request, params)


def _proxy(name: str, codec: ClientCodec) -> Endpoint:
    return Endpoint(name, ep.proxy, codec.family, codec)


def _endpoints() -> tuple[Endpoint, ...]:
    anthropic, gemini = anthropic_messages.FAMILY, gemini_native.FAMILY
    return (
        Endpoint("health", ep.health, public=True),
        Endpoint("models.list", ep.list_models(FAMILIES)),
        Endpoint("models.get", ep.get_model(FAMILIES)),
        _proxy("openai.chat", openai_chat.CODEC),
        _proxy("openai.completions", openai_completions.CODEC),
        _proxy("openai.responses", openai_responses.CODEC),
        _proxy("anthropic.messages", anthropic_messages.CODEC),
        Endpoint("anthropic.count_tokens", ep.count_tokens, anthropic, anthropic_messages.CODEC),
        Endpoint("anthropic.models", ep.list_models((anthropic,)), anthropic),
        _proxy("gemini.generate", gemini_native.CODEC),
        _proxy("gemini.stream", gemini_native.CODEC),
        Endpoint("gemini.count_tokens", ep.count_tokens, gemini, gemini_native.CODEC),
        Endpoint("gemini.models", ep.list_models((gemini,)), gemini),
        _proxy("ollama.chat", ollama.CHAT),
        _proxy("ollama.generate", ollama.GENERATE),
        Endpoint("ollama.tags", ep.list_models((ollama.FAMILY,)), ollama.FAMILY),
        Endpoint("ollama.show", ollama.show, ollama.FAMILY),
        Endpoint("ollama.version", ollama.version, ollama.FAMILY),
        Endpoint("ollama.running", ollama.running, ollama.FAMILY),
        Endpoint("admin.config", ep.admin_config, admin=True),
        Endpoint("admin.reload", ep.admin_reload, admin=True),
        Endpoint("admin.accounts", ep.admin_accounts, admin=True),
        Endpoint("admin.account_reset", ep.admin_account_reset, admin=True),
        Endpoint("admin.usage", admin_usage, admin=True),
        Endpoint("admin.explain", _admin_explain, admin=True),
        Endpoint("admin.status", admin_status, admin=True),
        Endpoint("status.page", status_page, public=True),  # no data: the form asking for the admin key
        Endpoint("status.asset", status_asset, public=True),
        Endpoint("key.usage", key_usage),
        Endpoint("metrics", ep.metrics),
    )


ENDPOINTS: Mapping[str, Endpoint] = {e.name: e for e in _endpoints()}


def template_filters() -> dict[str, Callable[..., Any]]:
    """Every upstream codec's conversion filters, by name, for the template environment."""
    out: dict[str, Callable[..., Any]] = {}
    for codec in UPSTREAM_CODECS.values():
        out.update(codec.filters)
    return out

"""What each endpoint does: the proxy hands the request to the engine; the others (health, models,
token counts, admin, metrics) answer from the snapshot and the gateway.

Every endpoint is ``run(services, exchange, request, params)``; the registry names them. They read
the family and codec the registry gave their endpoint, so no endpoint branches on a family's name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web

from router import __version__
from router.bodies import read_json
from router.codecs import ClientCodec, Family, ModelEntry, family_asking
from router.errors import GatewayError
from router.worker_reload import answer_status, reload_every_worker, workers_view

if TYPE_CHECKING:
    from router.auth import ApiKey
    from router.engine import Engine
    from router.exchange import Exchange
    from router.gateway import Gateway
    from router.metrics import Metrics
    from router.snapshot import Snapshot

Params = dict[str, Any]
Run = Callable[["Services", "Exchange", web.BaseRequest, Params], Awaitable[web.StreamResponse]]


class Services(Protocol):
    """What endpoints use of the running gateway (the app's dispatcher provides it)."""

    gateway: Gateway
    engine: Engine
    metrics: Metrics


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A handler name a route may name, and what runs for it.

    ``family``: the API family its errors are written in (None: the request path's family);
    ``codec``: the client codec of a proxy or token-count endpoint; ``admin``: needs an admin key
    when admin keys are configured; ``public``: open in the ``all_except_health`` auth mode.
    """

    name: str
    run: Run
    family: Family | None = None
    codec: ClientCodec | None = None
    admin: bool = False
    public: bool = False


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


def _codec(x: Exchange) -> ClientCodec:
    codec = x.endpoint.codec if x.endpoint is not None else None
    if codec is None:  # the registry gives every proxy and token-count endpoint a codec
        raise GatewayError("server", f"endpoint '{x.handler}' has no codec")
    return codec


# --- the proxy and token counts --------------------------------------------------------------------


def proxy(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> Awaitable[web.StreamResponse]:
    """Not a coroutine itself: hands back the engine's, one await level fewer per suspension."""
    x.codec = _codec(x)
    return svc.engine.proxy(x, request, params)


async def count_tokens(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
    counter = _codec(x).count_tokens
    if counter is None:
        raise GatewayError("not_found", f"'{x.handler}' cannot count tokens")
    server = x.snapshot.server
    body = await read_json(request, server.max_body_bytes, server.body_timeout)
    return json_response(counter(body, params))


# --- health and models -----------------------------------------------------------------------------


async def health(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
    return json_response({"status": "ok", "version": __version__, "config_generation": x.snapshot.generation})


def model_entries(snap: Snapshot, key: ApiKey | None = None) -> list[ModelEntry]:
    """Every client model name the mapping knows, then every model a provider lists; first owner wins.
    With a ``key``: only the models it may use."""
    seen: dict[str, str] = {}
    for name in snap.mapper.client_models():
        target = snap.mapper.resolve(name)
        seen.setdefault(name, target.primary.provider if target else "gateway")
    for p in snap.providers.values():
        for model in p.models:
            seen.setdefault(model, p.name)
    created = int(snap.loaded_at)
    allows = key.allows if key is not None else None
    return [ModelEntry(mid, owner, created) for mid, owner in seen.items() if allows is None or allows(mid)]


def list_models(families: Sequence[Family]) -> Run:
    """The model list in the family that asks (one path, ``/v1/models``, serves several)."""

    async def run(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
        family = family_asking(request.path, request.headers, request.query, families)
        return json_response(family.models_list(model_entries(x.snapshot, x.key)))

    return run


def get_model(families: Sequence[Family]) -> Run:
    """One model, in the family that asks; a name the mapping resolves counts as a model. A model the
    caller's key may not use is unknown to it: 404, as it is missing from the key's model list."""

    async def run(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
        mid = str(params.get("model") or params.get("id") or "").removeprefix("models/")
        if x.key is not None and not x.key.allows(mid):
            raise _unknown_model(mid)
        entry = next((m for m in model_entries(x.snapshot) if m.id == mid), None)
        if entry is None:
            target = x.snapshot.mapper.resolve(mid)
            if target is None:
                raise _unknown_model(mid)
            entry = ModelEntry(mid, target.primary.provider, int(x.snapshot.loaded_at))
        family = family_asking(request.path, request.headers, request.query, families)
        return json_response(family.model_info(entry))

    return run


def _unknown_model(mid: str) -> GatewayError:
    return GatewayError("not_found", f"The model '{mid}' does not exist", code="model_not_found", param="model")


# --- admin and metrics -----------------------------------------------------------------------------


async def admin_config(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
    return json_response({**svc.gateway.config_status(), **workers_view(svc.gateway)})


async def admin_accounts(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
    gateway = svc.gateway
    return json_response({**gateway.answered_by(), "accounts": gateway.accounts_status(),
                          "providers": gateway.provider_circuits()})


async def admin_account_reset(svc: Services, x: Exchange, request: web.BaseRequest, params: Params
                              ) -> web.Response:
    wanted = str(params.get("id", ""))
    done = svc.gateway.reset_accounts(wanted)
    if not done:
        raise GatewayError("not_found", f"no account '{wanted}' (use an id, an email or provider/id)")
    return json_response({"reset": done})


async def admin_reload(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
    """Under --workers: every worker reloads, and the answer lists each one (see worker_reload)."""
    ok, workers = await reload_every_worker(svc.gateway, "admin")
    listed = {} if workers is None else {"workers": workers}
    return json_response({"reloaded": ok, **svc.gateway.config_status(), **listed},
                         status=answer_status(ok, workers))


async def metrics(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
    return web.Response(body=svc.metrics.render(), headers={"Content-Type": svc.metrics.content_type})

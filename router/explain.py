"""A dry run of one request against a compiled snapshot: what the gateway would do, sent nowhere.

``explain(snapshot, ExplainRequest(...))`` walks the request path's decisions in order (route, auth,
decode, mapping, provider and its pool, the rendered upstream request, the response headers decided
before any upstream answers) and returns them as one JSON-able dict, ending at the first step that
would answer the client with an error (its ``status``). ``router explain``, ``router test`` and
``POST /admin/explain`` are built on it. Nothing it returns holds a key or a key's hash: the accounts'
keys and the presented key are blanked wherever they appear, credential headers always.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from router.accounts import StateStore
from router.auth import ApiKey, instant, presented_key
from router.bodies import read_json
from router.canonical import CanonicalRequest
from router.circuit import account_view, provider_views
from router.endpoints import Endpoint, json_response, proxy
from router.errors import BadRequest, GatewayError
from router.exchange import ClientHeaders
from router.mapping import ModelMapper
from router.plan import Fallback, Plan, Target
from router.redact import redact
from router.registry import KEY_HEADERS
from router.snapshot import Provider, Snapshot
from router.templates import PRUNE
from router.upstream_request import UpstreamRequest, render_request

if TYPE_CHECKING:
    from router.endpoints import Services
    from router.exchange import Exchange

DEFAULT_PATH = "/v1/chat/completions"
MASK = "***"
# header values masked whatever they hold (also when no known key is in them)
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key",
                            "cookie"})
MIN_SECRET = 4  # shorter "keys" (test values) are not blanked in free text: they would garble it
SECRET_PARAMS = frozenset({"key", "api_key", "apikey", "access_token", "token"})
# stand-ins for what a credential adds at run time: a token account's token, a signer's signature
RUN_TIME_TOKEN, SIGNED = "run-time-token", "sigv4-signature"


_HELLO = [{"role": "user", "content": "Hello"}]
# what a request given only by its model is made of, by client codec (besides model and stream)
SYNTHETIC: dict[str, dict[str, Any]] = {
    "openai.chat": {"messages": _HELLO}, "openai.completions": {"prompt": "Hello"},
    "openai.responses": {"input": "Hello"}, "anthropic.messages": {"max_tokens": 256, "messages": _HELLO},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]},
    "ollama.chat": {"messages": _HELLO}, "ollama.generate": {"prompt": "Hello"},
}


@dataclass(frozen=True, slots=True)
class ExplainRequest:
    """A request to explain: a path, method, headers and JSON body; or just a model (an OpenAI chat
    body is made up) and a key given by its name (``key``) instead of its value."""

    path: str = DEFAULT_PATH
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    model: str | None = None
    key: str | None = None  # a client key by name, as if the client had presented it
    stream: bool = False

    def json_body(self, codec: str = "openai.chat") -> Any:
        """The body, or one made up for ``model`` in the client codec's shape (an OpenAI chat body
        for a codec this table does not know)."""
        if self.body is not None:
            return self.body
        body: dict[str, Any] = {"model": self.model or "", **SYNTHETIC.get(codec, SYNTHETIC["openai.chat"])}
        if codec == "gemini":  # the model and streaming are in its path
            return {k: v for k, v in body.items() if k != "model"}
        return {**body, "stream": self.stream} if self.stream or codec.startswith("ollama.") else body


class Stop(Exception):
    """The step that answers the client: its status and message end the explanation."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def describe_target(target: Plan) -> dict[str, Any]:
    """The one description of a mapping target (the only place that knows a target's shape): a node
    with ``kind`` ``target`` (provider, model), or ``fallback`` / ``split`` (its triggers ``on``, a
    split's arm ``weights``) whose ``targets`` are its children. :func:`target_leaves` walks it."""
    if isinstance(target, Target):
        return {"kind": "target", "provider": target.provider, "model": target.model}
    on = sorted(map(str, target.on))
    if isinstance(target, Fallback):
        return {"kind": "fallback", "on": on, "targets": [describe_target(e) for e in target.entries]}
    return {"kind": "split", "on": on, "weights": [a.weight for a in target.arms],
            "targets": [describe_target(a.plan) for a in target.arms]}


def target_leaves(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The ``kind: target`` nodes of a :func:`describe_target` tree, in order."""
    if node.get("kind") == "target":
        yield node
    for child in node.get("targets", ()):
        yield from target_leaves(child)


def target_text(node: Mapping[str, Any]) -> str:
    """A :func:`describe_target` tree in one line: ``provider/model``, or ``kind[child, ...] on [...]``
    with a split's weights after its arms (``split[a/x: 90, b/y: 10]``): every difference shows."""
    if node.get("kind") == "target":
        return f"{node['provider']}/{node['model']}"
    children = [target_text(c) for c in node.get("targets", ())]
    if "weights" in node:
        children = [f"{child}: {weight}" for child, weight in zip(children, node["weights"], strict=True)]
    return f"{node.get('kind')}[{', '.join(children)}] on [{', '.join(node.get('on', ()))}]"


def explain(snap: Snapshot, req: ExplainRequest, store: StateStore | None = None) -> dict[str, Any]:
    """What ``snap`` would do with ``req`` (``store``: the live pool state, when running)."""
    out: dict[str, Any] = {"request": {"method": req.method.upper(), "path": req.path}, "status": 200}
    secrets = _secrets(snap, req)
    try:
        endpoint, params = _route(snap, req, out)
        key = _auth(snap, req, endpoint, out)
        if endpoint.run is not proxy or endpoint.codec is None:
            out["note"] = f"the endpoint {endpoint.name} answers from the gateway itself: nothing is sent upstream"
            return out
        canonical = _decode(endpoint, req, params, out)
        _check_model(key, canonical.model, out)
        target = _mapping(snap.mapper, canonical.model, out)
        _upstream(snap, target, canonical, req, store, out)
    except Stop as e:
        out["status"], out["error"] = e.status, e.message
    return _masked(out, secrets)


def _route(snap: Snapshot, req: ExplainRequest, out: dict[str, Any]) -> tuple[Endpoint, dict[str, Any]]:
    m = snap.routes.match(req.method.upper(), req.path)
    if m.route is None:
        if m.allowed:
            out["route"] = {"matched": False, "why": f"the path exists for {', '.join(sorted(m.allowed))} only"}
            raise Stop(405, f"method {req.method.upper()} not allowed on {req.path}")
        out["route"] = {"matched": False, "why": "no route has this path", "routes": snap.routes.describe()}
        raise Stop(404, f"no route for {req.path}")
    r = m.route
    out["route"] = {"matched": True, "path": r.path, "methods": sorted(r.methods), "handler": r.handler,
                    "auth": r.auth, "params": {**r.params, **m.params}}
    return r.endpoint, {**r.params, **m.params}


def _auth(snap: Snapshot, req: ExplainRequest, endpoint: Endpoint, out: dict[str, Any]) -> ApiKey | None:
    """As the app decides (app._authenticate), with a key also given by its name."""
    auth, route_auth = snap.auth, out["route"]["auth"]
    admin = endpoint.admin and bool(auth.admin_keys)
    required = admin or auth.required(endpoint.public, route_auth)
    shown: dict[str, Any] = out.setdefault("auth", {"mode": auth.mode, "required": required,
                                                      "admin": admin})
    if not required:
        shown["decision"] = f"no key needed (auth mode {auth.mode}, route auth {route_auth})"
        if req.key or presented_key(req.headers, KEY_HEADERS):
            shown["decision"] += ": the key given is not checked"
        return None
    key, found_by = _find_key(snap, req, admin)
    if key is None:
        shown["decision"] = found_by
        raise Stop(401, found_by)
    shown["key"] = {"found_by": found_by, **key.public()}
    if key.expires is not None and time.time() >= key.expires:
        shown["decision"] = f"key '{key.name}' expired at {instant(key.expires)}"
        raise Stop(401, shown["decision"])
    shown["decision"] = f"key '{key.name}' accepted" + (" (admin)" if admin else "")
    return key


def _find_key(snap: Snapshot, req: ExplainRequest, admin: bool) -> tuple[ApiKey | None, str]:
    """The key and how it was found ("name" or "presented"), or None and why not."""
    keys = snap.auth.admin_keys if admin else snap.auth.keys
    kind = "admin key" if admin else "key"
    if req.key is not None:
        named = next((k for k in keys if k.name == req.key), None)
        if named is None:
            return None, (f"no {kind} named '{req.key}' (known: {', '.join(k.name for k in keys) or 'none'}; "
                          "a key whose value is unset is left out)")
        return named, "name"
    presented = presented_key(req.headers, KEY_HEADERS)
    if presented is None:
        return None, f"{'an' if admin else 'a'} {kind} is required and none was presented"
    found = snap.auth.identify(presented, admin=admin)
    return (found, "presented") if found is not None else (None, f"the presented {kind} is not known")


def _decode(endpoint: Endpoint, req: ExplainRequest, params: dict[str, Any], out: dict[str, Any]
            ) -> CanonicalRequest:
    assert endpoint.codec is not None  # a proxy endpoint
    try:
        canonical = endpoint.codec.decode_request(req.json_body(endpoint.codec.name), params)
    except GatewayError as e:
        out["decode"] = {"codec": endpoint.codec.name, "error": e.message}
        raise Stop(e.status, e.message) from None
    canonical.inbound = endpoint.codec.name
    out["decode"] = {"codec": endpoint.codec.name, "model": canonical.model, "stream": canonical.stream}
    return canonical


def _check_model(key: ApiKey | None, model: str, out: dict[str, Any]) -> None:
    if key is None or key.models is None:
        return
    allowed = key.allows(model)
    out["auth"]["model_allowed"] = allowed
    if not allowed:
        raise Stop(403, f"The API key '{key.name}' may not use the model '{model}' "
                        f"(its models: {', '.join(key.models.patterns)})")


def _mapping(mapper: ModelMapper, model: str, out: dict[str, Any]) -> Plan:
    target = mapper.resolve(model)
    rule = target.rule if target is not None else None
    out["mapping"] = {"model": model, "rule": rule, "tried": mapping_steps(mapper, model, rule)}
    if target is None:
        raise Stop(404, f"The model '{model}' does not exist or is not mapped")
    out["mapping"]["target"] = describe_target(target)
    return target


def mapping_steps(mapper: ModelMapper, model: str, rule: str | None) -> list[dict[str, Any]]:
    """Each rule in the order the mapper tries them, and why it did or did not decide; the rules after
    the one that decided are listed too, saying whether they would have matched (shadowed) or not."""
    exact = rule is not None and rule.startswith("exact:")
    steps: list[dict[str, Any]] = [
        {"rule": "exact", "matched": True, "why": f"'{model}' is in the exact table"} if exact else
        {"rule": "exact", "matched": False, "why": f"the exact table ({len(mapper.exact)} names) has no '{model}'"}]
    decided = exact
    for w in mapper.wildcards:  # in precedence order: most literal characters, then declaration order
        matches = w.match(model) is not None
        if decided:
            steps.append({"rule": "wildcard", "pattern": w.pattern, "matched": False, "shadowed": matches,
                          "why": "not tried: a rule before it decided" + (" (it would match)" if matches else "")})
            continue
        decided = rule == f"wildcard:{w.pattern}"
        steps.append({"rule": "wildcard", "pattern": w.pattern, "matched": decided,
                      "why": "matches" if decided else "does not match"})
    if rule == "default":
        steps.append({"rule": "default", "matched": True, "why": "used"})
    elif mapper.default is None:
        steps.append({"rule": "default", "matched": False, "why": "no default is set"})
    else:
        steps.append({"rule": "default", "matched": False, "why": "not used: a rule before it decided"})
    return steps


def _upstream(snap: Snapshot, target: Plan, canonical: CanonicalRequest, req: ExplainRequest,
              store: StateStore | None, out: dict[str, Any]) -> None:
    """Each leaf target's provider and pool; the request rendered for the first leaf's first account."""
    out["pools"] = [_pool(snap, leaf["provider"], leaf["model"], store)
                    for leaf in target_leaves(out["mapping"]["target"])]
    first = next(iter(target_leaves(out["mapping"]["target"])))
    provider = snap.provider(first["provider"])
    if provider is None:
        raise Stop(500, f"provider '{first['provider']}' is not available")
    if not provider.pool.accounts:
        raise Stop(503, f"provider '{provider.name}' has no account with a key")
    up = _render(provider, first["model"], canonical, req, out)
    out["upstream"] = {"provider": provider.name, "account": provider.pool.accounts[0].id, **up}
    out["response_headers"] = _response_headers(snap, provider, first["model"], canonical.model)


def _pool(snap: Snapshot, name: str, model: str, store: StateStore | None) -> dict[str, Any]:
    configured = snap.providers.get(name)
    serving = snap.provider(name)
    shown: dict[str, Any] = {"provider": name, "model": model}
    if serving is None:
        return {**shown, "why": "no such provider"}
    if configured is not None and serving is not configured:
        shown["served_by"] = serving.name
        shown["why"] = f"'{name}' has no account with a key (none is set): its fallback '{serving.name}' serves"
    shown.update({"dialect": serving.dialect, "base_url": serving.public()["base_url"],
                  "scheduling": serving.pool.scheduling, "accounts": _accounts(serving, model, store)})
    if store is not None and serving.pool.circuit is not None:  # live: the provider's circuit too
        shown["circuit"] = provider_views(store, (serving.name,), time.time(), store.clock())[serving.name]
    return shown


def _accounts(provider: Provider, model: str, store: StateStore | None) -> list[dict[str, Any]]:
    out = []
    for acc in provider.pool.accounts:
        shown: dict[str, Any] = {"id": acc.id, "label": acc.email, "weight": acc.weight}
        if store is not None:
            st = store.state(acc.state_key)
            cooling = st.cooling_for(model, store.clock())
            shown.update({"state": "disabled" if st.disabled else "cooling" if cooling else "ok",
                          "cooling_for": None if st.disabled else round(cooling, 3),  # disabled: for ever
                          "in_flight": st.in_flight, "error_rate": round(st.error_rate(store.clock()), 3)})
            if provider.pool.circuit is not None:
                shown["circuit"] = account_view(store, acc.state_key, time.time(), store.clock())
        out.append(shown)
    return out


def _render(provider: Provider, model: str, canonical: CanonicalRequest, req: ExplainRequest,
            out: dict[str, Any]) -> dict[str, Any]:
    account = provider.pool.accounts[0]
    view = account.template_view  # a token fetched at run time: a stand-in, so its header shows
    view = {**view, "access_token": RUN_TIME_TOKEN} if account.source is not None else view
    ctx = {"request": canonical, "model": model, "stream": canonical.stream,
           "client_headers": ClientHeaders(req.headers), "provider": provider.template_view,
           "account": view}
    template = provider.inbound_templates.get(canonical.inbound, provider.template)
    out["template"] = template.name
    try:
        up = render_request(template, ctx, provider.base_url, req.headers)
    except GatewayError as e:
        raise Stop(e.status, e.message) from None
    if account.signer is not None:  # signed just before it is sent: the header it adds, never its value
        up.headers.setdefault("Authorization", SIGNED)
    return _shown_request(up)


def _shown_request(up: UpstreamRequest) -> dict[str, Any]:
    params = {k: MASK if k.lower() in SECRET_PARAMS else v for k, v in (up.params or {}).items()}
    query = "&".join(f"{k}={v}" for k, v in params.items())
    headers = {k: _masked_header(k, v) for k, v in up.headers.items()}
    body: Any = orjson.loads(up.body) if up.body else None
    return {"method": up.method, "url": up.url + (f"?{query}" if query else ""), "headers": headers, "body": body}


def _masked_header(name: str, value: str) -> str:
    if value == SIGNED:
        return f"{MASK} (SigV4 signature)"
    if RUN_TIME_TOKEN in value:
        return f"{_masked_header(name, value.replace(RUN_TIME_TOKEN, MASK))} (token fetched at run time)"
    if name.lower() not in SECRET_HEADERS:
        return value
    scheme, space, _ = value.partition(" ")
    return f"{scheme} {MASK}" if space and scheme.lower() in ("bearer", "basic") else MASK


def _response_headers(snap: Snapshot, provider: Provider, upstream_model: str, client_model: str) -> dict[str, str]:
    """The response headers known before an upstream answers (as served by the first account)."""
    ctx = {"upstream_model": upstream_model, "client_model": client_model, "provider": provider.public(),
           "account": provider.pool.accounts[0].public(), "request_id": "(per request)", "attempts": 1}
    rendered = snap.response_headers.render(ctx)
    if rendered is PRUNE or not isinstance(rendered, dict):
        return {}
    return {k: v if isinstance(v, str) else str(v) for k, v in rendered.items() if v != "" and v is not None}


def _secrets(snap: Snapshot, req: ExplainRequest) -> tuple[str, ...]:
    """Every account key of the snapshot and the key the request presents, longest first."""
    found = {a.api_key for p in snap.providers.values() for a in p.pool.accounts if len(a.api_key) >= MIN_SECRET}
    presented = presented_key(req.headers, KEY_HEADERS)
    if presented and len(presented) >= MIN_SECRET:
        found.add(presented)
    return tuple(sorted(found, key=len, reverse=True))


def _masked(out: dict[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    """The whole explanation with every secret blanked (in keys and values alike)."""
    text = orjson.dumps(out, default=str).decode()
    for s in secrets:
        encoded = orjson.dumps(s).decode()[1:-1]  # as it appears inside a JSON string
        text = redact(text, (encoded,))
    masked: dict[str, Any] = orjson.loads(text)
    return masked


def request_from_json(doc: Any) -> ExplainRequest:
    """``POST /admin/explain``'s body (and a ``router test`` case's request): {path, method, headers,
    body} or {model, key, stream}; raises BadRequest naming the field that is wrong."""
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object: {path, method, headers, body} or {model, key}")
    for name, kind in (("path", str), ("method", str), ("model", str), ("key", str), ("headers", dict),
                       ("stream", bool)):
        if name in doc and not isinstance(doc[name], kind):
            raise BadRequest(f"'{name}' must be a {'string' if kind is str else kind.__name__}", param=name)
    headers = {str(k): str(v) for k, v in (doc.get("headers") or {}).items()}
    return ExplainRequest(path=doc.get("path", DEFAULT_PATH), method=doc.get("method", "POST"), headers=headers,
                          body=doc.get("body"), model=doc.get("model"), key=doc.get("key"),
                          stream=bool(doc.get("stream", False)))


async def admin_explain(svc: Services, x: Exchange, request: web.BaseRequest, params: dict[str, Any]
                        ) -> web.Response:
    """``POST /admin/explain``: the running snapshot's explanation, with the live pool state."""
    server = x.snapshot.server
    doc = await read_json(request, server.max_body_bytes, server.body_timeout)
    return json_response(explain(x.snapshot, request_from_json(doc), svc.gateway.store))

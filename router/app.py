"""aiohttp wiring: the low-level server hands every request to one dispatcher and its route table.

This is the single error boundary: a GatewayError becomes an error body in the caller's dialect,
anything unexpected is logged with its traceback and answered as a dialect-shaped 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import ModuleType
from typing import Any, Awaitable, Callable, Coroutine

import orjson
from aiohttp import web

from router import __version__
from router.auth import presented_key
from router.bodies import read_json
from router.canonical import StreamError
from router.drain import SHUTTING_DOWN, InFlight
from router.engine import Engine
from router.exchange import Exchange, response_headers
from router.ids import IdGenerator
from router.errors import GatewayError, client_retry_after
from router.gateway import Gateway
from router.metrics import CONTENT_TYPE, Metrics
from router.routes import Route
from router.snapshot import Snapshot

log = logging.getLogger("router.app")

Handler = Callable[[Exchange, web.BaseRequest, dict[str, Any]], Awaitable[web.StreamResponse]]


def _dialects() -> dict[str, ModuleType]:
    from router.dialects import (anthropic_messages, gemini_native, openai_chat, openai_completions,
                                 openai_responses)

    return {"openai.chat": openai_chat, "openai.completions": openai_completions,
            "openai.responses": openai_responses, "anthropic.messages": anthropic_messages,
            "anthropic.count_tokens": anthropic_messages, "gemini.generate": gemini_native,
            "gemini.stream": gemini_native, "gemini.count_tokens": gemini_native}


class Dispatcher:
    """Route → auth → handler, with the error boundary around it."""

    def __init__(self, gateway: Gateway, metrics: Metrics):
        self.gateway = gateway
        self.engine: Engine = None  # type: ignore[assignment]  # set at start-up with the HTTP session
        self.metrics = metrics
        self.inflight = InFlight()  # what a shutdown waits for, then cuts
        self.ids = IdGenerator()
        self.dialects = _dialects()
        d = self.dialects
        self.error_styles = {"openai": d["openai.chat"], "anthropic": d["anthropic.messages"],
                             "gemini": d["gemini.generate"]}
        self.handlers: dict[str, Handler] = {
            "health": self.health, "models.list": self.models_list, "models.get": self.models_get,
            "anthropic.models": self.anthropic_models, "gemini.models": self.gemini_models,
            "anthropic.count_tokens": self.count_tokens, "gemini.count_tokens": self.count_tokens,
            "admin.config": self.admin_config, "admin.reload": self.admin_reload,
            "admin.accounts": self.admin_accounts, "admin.account_reset": self.admin_account_reset,
            "metrics": self.metrics_handler,
        }
        for name in ("openai.chat", "openai.completions", "openai.responses", "anthropic.messages",
                     "gemini.generate", "gemini.stream"):
            self.handlers[name] = self.proxy

    # --- dispatch -------------------------------------------------------------------------------

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route, authenticate, run the handler; the single error boundary (kept flat on purpose:
        every coroutine level is paid again at each suspension of the request)."""
        snap = self.gateway.current
        started = time.monotonic()
        m = snap.routes.match(request.method, request.path)
        rid = request.headers.get("X-Request-Id") or self.ids.new("", 8)
        route = m.route
        x = Exchange(rid, snap, route.handler if route else "", started)  # positional: keywords cost more
        task: asyncio.Task[Any] = asyncio.current_task()  # type: ignore[assignment]  # aiohttp's, per request
        inflight = self.inflight.requests
        inflight[task] = x
        status = 500
        try:
            if route is None:
                resp: web.StreamResponse = self._no_route(x, request, m.allowed)
            else:
                try:
                    x.client_key = self._authenticate(snap, route.handler, route.auth, request)
                    handler = self.handlers.get(route.handler)
                    if handler is None:
                        raise GatewayError("not_found", f"handler '{route.handler}' is not available")
                    # the query is parsed only when there is one (most API calls have none)
                    params: dict[str, Any] = {**request.query, **route.params, **m.params} \
                        if request.query_string else {**route.params, **m.params}
                    resp = await handler(x, request, params)
                except GatewayError as e:
                    resp = self.error_response(self._error_style(route.handler, request), e, rid, x)
                except asyncio.CancelledError:
                    if task not in self.inflight.cut_off:
                        raise  # the client went away
                    resp = await self._cut(task, x, self._error_style(route.handler, request))
                except ConnectionResetError:
                    raise
                except Exception:  # noqa: BLE001 - the one boundary that turns surprises into a 500
                    log.exception("unhandled error", extra={"request_id": rid, "handler": route.handler})
                    if x.response is not None and x.response.prepared:
                        status = x.response.status  # what the client got (its error went in-band)
                        return x.response  # a stream already started: no second status line
                    resp = self.error_response(self._error_style(route.handler, request),
                                               GatewayError("server", "internal gateway error"), rid, x)
            status = resp.status
            if not resp.prepared:
                resp.headers.setdefault("X-Request-Id", rid)
            return resp
        except (ConnectionResetError, asyncio.CancelledError):
            status = 499  # the client went away
            raise
        finally:
            del inflight[task]
            x.status = status
            # metrics and the access line once the response is on its way, not before it
            route_path = route.path if route else "unmatched"
            try:
                asyncio.get_running_loop().call_soon(self._finish, x, request, route_path, status, started)
            except RuntimeError:  # no running loop (a coroutine closed at shutdown): record it now
                self._finish(x, request, route_path, status, started)

    async def _cut(self, task: asyncio.Task[Any], x: Exchange, style: str) -> web.StreamResponse:
        """A shutdown's grace ended with this request still running: a 503 in its dialect when nothing
        was sent yet, else a stream still flowing ends with its dialect's error event."""
        self.inflight.cut_off.discard(task)
        if task.uncancel():  # cancelled for another reason as well (its client went away)
            raise asyncio.CancelledError
        err = GatewayError("unavailable", SHUTTING_DOWN, retry_after=1.0)
        out, encoder = x.response, x.encoder
        if out is None or not out.prepared:
            return self.error_response(style, err, x.request_id, x)
        x.error = err.message
        if encoder is not None:
            await out.write(encoder.error(StreamError(err.status, err.kind, err.message)))
        return out  # aiohttp ends it (write_eof)

    def _no_route(self, x: Exchange, request: web.BaseRequest, allowed: frozenset[str]) -> web.Response:
        path, snap = request.path, x.snapshot
        if allowed:  # a 405 names the route's methods: only to a caller who could use that route
            route = snap.routes.match(min(allowed), path).route
            if route is not None and not self._usable(snap, route, request):
                allowed = frozenset()
        if allowed:
            err = GatewayError("method_not_allowed", f"Method {request.method} is not allowed on {path}; "
                               f"allowed: {', '.join(sorted(allowed))}", headers={"Allow": ", ".join(sorted(allowed))})
        else:
            err = GatewayError("not_found", self._not_found_message(snap, request), code="unknown_url")
        return self.error_response(self._style_for_path(path), err, x.request_id, x)

    def _usable(self, snap: Snapshot, route: Route, request: web.BaseRequest) -> bool:
        """Whether this caller's key (or none) passes the route's authentication."""
        try:
            self._authenticate(snap, route.handler, route.auth, request)
        except GatewayError:
            return False
        return True

    def _not_found_message(self, snap: Snapshot, request: web.BaseRequest) -> str:
        """Lists the routes this caller could use: with auth on, a caller without a valid key does not
        learn the others (the admin API among them)."""
        listed = snap.routes.describe(lambda route: self._usable(snap, route, request))
        head = f"No route for {request.method} {request.path}."
        if not listed:
            return f"{head} Send a valid API key to list the routes that exist."
        hidden = len(listed) < len(snap.routes.routes)
        return (f"{head} Routes that exist: {'; '.join(listed)}"
                + (". Routes that need a key you did not send are not listed." if hidden else ""))

    def _finish(self, x: Exchange, request: web.BaseRequest, route: str, status: int, started: float) -> None:
        latency = time.monotonic() - started
        self.metrics.observe(x, route, status, latency)
        access = self.gateway.access_log
        if not access.enabled:
            return
        usage = x.usage
        access.write({
            "request_id": x.request_id, "method": request.method, "path": request.path, "route": route,
            "handler": x.handler, "client_model": x.client_model, "upstream_model": x.upstream_model,
            "provider": x.provider.name if x.provider else None,
            "account": x.account.email if x.account else None,
            "attempts": len(x.attempts), "outcomes": [a.outcome for a in x.attempts] or None,
            "status": status, "latency_ms": round(latency * 1000, 2),
            "ttfb_ms": round(x.ttfb * 1000, 2) if x.ttfb is not None else None,
            "stream": x.canonical.stream if x.canonical else None,
            "tokens_in": usage.input_tokens if usage else None,
            "tokens_out": usage.output_tokens if usage else None,
            "client": request.remote, "error": x.error,
        })

    def _authenticate(self, snap: Snapshot, handler: str, route_auth: str, request: web.BaseRequest
                      ) -> str | None:
        """The name of the key the request authenticated with (None when none was needed)."""
        if handler.startswith("admin."):
            admin = snap.auth.admin_keys
            if admin:
                found = snap.auth.identify(presented_key(request.headers), admin)
                if found is None:
                    raise GatewayError("authentication", "admin endpoints need a valid admin key",
                                       code="invalid_api_key")
                return found.name
        if not snap.auth.required(handler, route_auth):
            return None
        key = presented_key(request.headers)
        if key is None:
            raise GatewayError("authentication", "Missing API key: send Authorization: Bearer <key>, "
                               "x-api-key or x-goog-api-key", code="invalid_api_key")
        found = snap.auth.identify(key)
        if found is None:
            raise GatewayError("authentication", "Incorrect API key provided", code="invalid_api_key")
        return found.name

    @staticmethod
    def _style_for_path(path: str) -> str:
        if path.startswith("/v1beta") or path.startswith("/v1alpha"):
            return "gemini"
        if path.startswith("/v1/messages"):
            return "anthropic"
        return "openai"

    @classmethod
    def _error_style(cls, handler: str, request: web.BaseRequest) -> str:
        """The dialect an error is written in: the handler's family, else the path's."""
        family = handler.split(".", 1)[0]
        return family if family in ("openai", "anthropic", "gemini") else cls._style_for_path(request.path)

    def error_response(self, style: str, err: GatewayError, rid: str, x: Exchange | None = None
                       ) -> web.Response:
        body = self.error_styles[style].error_body(err)
        headers = {"X-Request-Id": rid, **err.headers}
        if x is not None and x.provider is not None:
            headers.update(response_headers(x))
        if err.retry_after is not None:
            headers["Retry-After"] = str(client_retry_after(err.retry_after))
        if x is not None:
            x.error = err.message  # x.status is set once, where the response is returned
        return web.Response(status=err.status, body=orjson.dumps(body), content_type="application/json",
                            headers=headers)

    # --- handlers ---------------------------------------------------------------------------------

    def proxy(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]
              ) -> Coroutine[Any, Any, web.StreamResponse]:
        """Not a coroutine itself: hands back the engine's, one await level fewer per suspension."""
        x.dialect = self.dialects[x.handler]
        return self.engine.proxy(x, request, params)

    async def count_tokens(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.Response:
        from router.dialects import anthropic_messages

        dialect = self.dialects[x.handler]
        server = x.snapshot.server
        body = await read_json(request, server.max_body_bytes, server.body_timeout)
        if x.handler == "anthropic.count_tokens":
            req = anthropic_messages.decode_count_tokens_request(body)
            return _json({"input_tokens": anthropic_messages.count_tokens(req)})
        req = dialect.decode_request(body, params)
        return _json(dialect.count_tokens_response(anthropic_messages.count_tokens(req)))

    async def health(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.Response:
        return _json({"status": "ok", "version": __version__, "config_generation": x.snapshot.generation})

    def _model_ids(self, snap: Snapshot) -> list[tuple[str, str]]:
        seen: dict[str, str] = {}
        for name in snap.mapper.client_models():
            target = snap.mapper.resolve(name)
            seen.setdefault(name, target.provider if target else "gateway")
        for p in snap.providers.values():
            for model in p.models:
                seen.setdefault(model, p.name)
        return list(seen.items())

    @staticmethod
    def _list_style(request: web.BaseRequest) -> str:
        """Which family asks for the model list: one path (/v1/models) serves all three."""
        if request.path.startswith("/v1beta"):
            return "gemini"
        if "anthropic-version" in request.headers:
            return "anthropic"
        if "x-goog-api-key" in request.headers or "x-goog-api-client" in request.headers \
                or "key" in request.query:
            return "gemini"
        return "openai"

    async def models_list(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.Response:
        style = self._list_style(request)
        if style != "openai":
            return await (self.anthropic_models if style == "anthropic" else self.gemini_models)(x, request, params)
        created = int(x.snapshot.loaded_at)
        return _json({"object": "list", "data": [
            {"id": mid, "object": "model", "created": created, "owned_by": owner}
            for mid, owner in self._model_ids(x.snapshot)]})

    async def models_get(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.Response:
        from router.dialects import anthropic_messages, gemini_native

        mid = str(params.get("model") or params.get("id") or "").removeprefix("models/")
        known = dict(self._model_ids(x.snapshot))
        target = x.snapshot.mapper.resolve(mid)
        if mid not in known and target is None:
            raise GatewayError("not_found", f"The model '{mid}' does not exist", code="model_not_found",
                               param="model")
        owner = known.get(mid) or (target.provider if target else "gateway")
        style = self._list_style(request)
        if style == "gemini":
            return _json(gemini_native.model_info(mid))
        if style == "anthropic":
            return _json(anthropic_messages.models_list([mid])["data"][0])
        return _json({"id": mid, "object": "model", "created": int(x.snapshot.loaded_at), "owned_by": owner})

    async def anthropic_models(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.Response:
        from router.dialects import anthropic_messages

        return _json(anthropic_messages.models_list([m for m, _ in self._model_ids(x.snapshot)]))

    async def gemini_models(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.Response:
        from router.dialects import gemini_native

        return _json(gemini_native.models_list([m for m, _ in self._model_ids(x.snapshot)]))

    async def admin_config(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.Response:
        return _json(self.gateway.config_status())

    async def admin_accounts(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.Response:
        return _json({"accounts": self.gateway.accounts_status()})

    async def admin_account_reset(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]
                                  ) -> web.Response:
        wanted = str(params.get("id", ""))
        done = self.gateway.reset_accounts(wanted)
        if not done:
            raise GatewayError("not_found", f"no account '{wanted}' (use an id, an email or provider/id)")
        return _json({"reset": done})

    async def metrics_handler(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.Response:
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def admin_reload(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.Response:
        ok = await self.gateway.reload("admin")
        status = self.gateway.config_status()
        return _json({"reloaded": ok, **status}, status=200 if ok else 422)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")

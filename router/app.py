"""aiohttp wiring: the low-level server hands every request to one dispatcher and its route table.

This is the single error boundary: a GatewayError becomes an error body in the caller's API family,
anything unexpected is logged with its traceback and answered as a 500 in that family's shape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web

from router.auth import ApiKey, presented_key
from router.canonical import StreamError
from router.codecs import Family, family_of_path
from router.drain import SHUTTING_DOWN, InFlight
from router.endpoints import Endpoint
from router.engine import Engine
from router.errors import GatewayError, client_retry_after
from router.exchange import Exchange, response_headers
from router.gateway import Gateway
from router.ids import IdGenerator
from router.metrics import Metrics
from router.registry import FAMILIES, KEY_HEADERS
from router.routes import Route
from router.snapshot import Snapshot

log = logging.getLogger("router.app")
MISSING_KEY = "Missing API key: send " + " or ".join([", ".join(["Authorization: Bearer <key>", *KEY_HEADERS[:-1]]),
                                                      *KEY_HEADERS[-1:]])


class Dispatcher:
    """Route → auth → endpoint, with the error boundary around it; what endpoints use of the running
    gateway (``router.endpoints.Services``): the gateway, the engine, the metrics."""

    def __init__(self, gateway: Gateway, metrics: Metrics):
        self.gateway = gateway
        self.engine: Engine = None  # type: ignore[assignment]  # set at start-up with the HTTP session
        self.metrics = metrics
        self.inflight = InFlight()  # what a shutdown waits for, then cuts
        self.ids = IdGenerator()
        self.telemetry = gateway.telemetry  # tracing (router.telemetry): off unless telemetry.enabled

    # --- dispatch -------------------------------------------------------------------------------

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route, authenticate, run the handler; the single error boundary (kept flat on purpose:
        every coroutine level is paid again at each suspension of the request)."""
        snap = self.gateway.current
        started = time.monotonic()
        m = snap.routes.match(request.method, request.path)
        rid = request.headers.get("X-Request-Id") or self.ids.new("", 8)
        route = m.route
        endpoint = route.endpoint if route else None
        x = Exchange(rid, snap, endpoint, started)  # positional: keywords cost more
        if self.telemetry.on:
            x.trace = self.telemetry.begin(request)
        task: asyncio.Task[Any] = asyncio.current_task()  # type: ignore[assignment]  # aiohttp's, per request
        inflight = self.inflight.requests
        inflight[task] = x
        status = 500
        try:
            if endpoint is None or route is None:
                resp: web.StreamResponse = self._no_route(x, request, m.allowed)
            else:
                try:
                    key = x.key = self._authenticate(snap, endpoint, route.auth, request)
                    if key is not None:
                        x.client_key = key.name
                    resp = await endpoint.run(self, x, request, self._params(request, route.params, m.params))
                except GatewayError as e:
                    resp = self.error_response(self._family(endpoint, request), e, rid, x)
                except asyncio.CancelledError:
                    if task not in self.inflight.cut_off:
                        raise  # the client went away
                    resp = await self._cut(task, x, self._family(endpoint, request))
                except ConnectionResetError:
                    raise
                except Exception:  # noqa: BLE001 - the one boundary that turns surprises into a 500
                    resp = self._unexpected(x, endpoint, request)
            status = resp.status
            if not resp.prepared:
                resp.headers.setdefault("X-Request-Id", rid)
            return resp
        except (ConnectionResetError, asyncio.CancelledError):
            status = 499  # the client went away
            raise
        finally:
            del inflight[task]
            self._record(x, request, route.path if route else "unmatched", status)

    @staticmethod
    def _params(request: web.BaseRequest, fixed: dict[str, Any], matched: dict[str, str]) -> dict[str, Any]:
        """The route's fixed parameters, the path's and the query's (parsed only when there is one:
        most API calls have none)."""
        return {**request.query, **fixed, **matched} if request.query_string else {**fixed, **matched}

    def _unexpected(self, x: Exchange, endpoint: Endpoint, request: web.BaseRequest) -> web.StreamResponse:
        """A bug: logged with its traceback; a 500 in the caller's family, or, when a stream already
        started, the stream as it is (its error went in-band: no second status line)."""
        log.exception("unhandled error", extra={"request_id": x.request_id, "handler": endpoint.name})
        if x.response is not None and x.response.prepared:
            return x.response
        return self.error_response(self._family(endpoint, request),
                                   GatewayError("server", "internal gateway error"), x.request_id, x)

    def _record(self, x: Exchange, request: web.BaseRequest, route: str, status: int) -> None:
        """Metrics and the access line, once the response is on its way (not before it)."""
        x.status = status
        try:
            asyncio.get_running_loop().call_soon(self._finish, x, request, route, status, x.started)
        except RuntimeError:  # no running loop (a coroutine closed at shutdown): record it now
            self._finish(x, request, route, status, x.started)

    async def _cut(self, task: asyncio.Task[Any], x: Exchange, family: Family) -> web.StreamResponse:
        """A shutdown's grace ended with this request still running: a 503 in its family when nothing
        was sent yet, else a stream still flowing ends with its codec's error event."""
        self.inflight.cut_off.discard(task)
        if task.uncancel():  # cancelled for another reason as well (its client went away)
            raise asyncio.CancelledError
        err = GatewayError("unavailable", SHUTTING_DOWN, retry_after=1.0)
        out, encoder = x.response, x.encoder
        if out is None or not out.prepared:
            return self.error_response(family, err, x.request_id, x)
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
        return self.error_response(family_of_path(path, FAMILIES), err, x.request_id, x)

    def _usable(self, snap: Snapshot, route: Route, request: web.BaseRequest) -> bool:
        """Whether this caller's key (or none) passes the route's authentication."""
        try:
            self._authenticate(snap, route.endpoint, route.auth, request)
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
        self.gateway.usage.record(x, status)
        if x.trace is not None:
            self.telemetry.finish(x, request, route, status, latency)
        access = self.gateway.access_log
        if not access.enabled:
            return
        usage, key = x.usage, x.key
        access.write({
            "request_id": x.request_id, "method": request.method, "path": request.path, "route": route,
            "key": key.name if key else None, "team": key.team if key else None,
            "handler": x.handler, "client_model": x.client_model, "upstream_model": x.upstream_model,
            "provider": x.provider.name if x.provider else None,
            "account": x.account.email if x.account else None,
            "attempts": len(x.attempts), "outcomes": [a.outcome for a in x.attempts] or None,
            "chain": x.chain,  # a fallback list or split: ["provider/model:outcome", ...]; else null
            "status": status, "latency_ms": round(latency * 1000, 2),
            "ttfb_ms": round(x.ttfb * 1000, 2) if x.ttfb is not None else None,
            "stream": x.canonical.stream if x.canonical else None,
            "tokens_in": usage.input_tokens if usage else None,
            "tokens_out": usage.output_tokens if usage else None,
            "client": request.remote, "error": x.error,
        })

    def _authenticate(self, snap: Snapshot, endpoint: Endpoint, route_auth: str, request: web.BaseRequest
                      ) -> ApiKey | None:
        """The key the request authenticated with (None when none was needed)."""
        auth = snap.auth
        if endpoint.admin and auth.admin_keys:
            found = auth.identify(presented_key(request.headers, KEY_HEADERS), admin=True)
            if found is None:
                raise GatewayError("authentication", "admin endpoints need a valid admin key", code="invalid_api_key")
            return found
        if not auth.required(endpoint.public, route_auth):
            return None
        key = presented_key(request.headers, KEY_HEADERS)
        if key is None:
            raise GatewayError("authentication", MISSING_KEY, code="invalid_api_key")
        found = auth.identify(key)
        if found is None:
            raise GatewayError("authentication", "Incorrect API key provided", code="invalid_api_key")
        if found.expires is not None and time.time() >= found.expires:
            raise found.expired_error()
        return found

    @staticmethod
    def _family(endpoint: Endpoint, request: web.BaseRequest) -> Family:
        """The family an error is written in: the endpoint's, else the request path's."""
        return endpoint.family or family_of_path(request.path, FAMILIES)

    def error_response(self, family: Family, err: GatewayError, rid: str, x: Exchange | None = None
                       ) -> web.Response:
        body = family.error_body(err)
        headers = {"X-Request-Id": rid, **err.headers}
        if x is not None and x.provider is not None:
            headers.update(response_headers(x))
        if err.retry_after is not None and "Retry-After" not in err.headers:  # an error's own: exact (budgets)
            headers["Retry-After"] = str(client_retry_after(err.retry_after))
        if x is not None:
            x.error = err.message  # x.status is set once, where the response is returned
        return web.Response(status=err.status, body=orjson.dumps(body), content_type="application/json",
                            headers=headers)

"""The proxy pipeline over one per-request :class:`Exchange`, as named stages.

read the body → decode it with the client codec → apply server-side state → resolve the model
mapping → the provider → the attempt loop (:mod:`router.attempts`: pick an account, one attempt,
retry?) where one attempt is render the template → send → classify → read the JSON answer (decode
with the upstream codec, encode with the client codec) or relay the stream (:mod:`router.relay`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable
from concurrent.futures import Executor
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from router.accounts import Account, StateStore
from router.attempts import AttemptLoop
from router.bodies import read_json, read_limited
from router.budgets import BudgetPlan, Budgets
from router.canonical import CanonicalRequest, Event, ResponseContext, StreamError, Usage
from router.codecs import LocalAnswer, Stores
from router.errors import BadRequest, GatewayError
from router.exchange import ClientHeaders, Exchange, response_headers
from router.failures import ProviderFailed, UpstreamFailure
from router.fallback import PlanRunner
from router.ids import IdGenerator
from router.limit_headers import openai_headers
from router.limits import Admission, Limiter, LimitPlan
from router.limits_shared import admit_shared
from router.plan import Plan, Target
from router.redact import redact
from router.relay import StreamRelay
from router.snapshot import Provider, Timeouts
from router.token_estimate import estimate_tokens
from router.tokens import Tokens
from router.upstream_request import UpstreamRequest, render_request

log = logging.getLogger("router.engine")

ERROR_BODY_LIMIT = 64 * 1024
MAX_NAME = 256  # longest model name or sticky session id taken from a client


class Engine:
    """Runs requests through upstream providers; shared state is the store and the HTTP session."""

    def __init__(self, store: StateStore, session: aiohttp.ClientSession,
                 stores: Stores | None = None,
                 ids: IdGenerator | None = None, renders: Executor | None = None, limiter: Limiter | None = None,
                 budgets: Budgets | None = None, tokens: Tokens | None = None):
        self.ids = ids or IdGenerator()
        # where templates with Jinja leaves render (None: the loop's default executor); a pool of its
        # own keeps runaway renders, each bounded by its budget, from delaying DNS lookups and reloads
        self.renders = renders
        self.store = store
        self.stores = stores if stores is not None else Stores()  # what client codecs keep between requests
        self._timeouts: dict[Timeouts, tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]] = {}
        self.session = session
        self.attempts = AttemptLoop(store, self._attempt)  # where retry happens
        self.plans = PlanRunner(self._serve_target)  # fallback lists and splits: which target serves
        # client keys' and teams' limits: outside the snapshot, kept across reloads (the gateway's)
        self.limiter = limiter if limiter is not None else Limiter()
        self.budgets = budgets if budgets is not None else Budgets()  # their spend: the gateway's too
        self.tokens = tokens if tokens is not None else Tokens(store)  # token accounts' tokens: the gateway's

    # --- the pipeline ---------------------------------------------------------------------------

    async def proxy(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.StreamResponse:
        """The proxy pipeline, stage by stage; the attempts (and every retry) are the attempt loop's."""
        server = x.snapshot.server
        body = await read_json(request, server.max_body_bytes, server.body_timeout)
        req = self._decode(x, body, params)
        if self.stores.remote is not None and x.codec is not None and x.codec.fetch is not None:
            await x.codec.fetch(self.stores, req, x.client_key)  # what other gateways stored
        req = self._apply_state(x, req)
        mapped = self._resolve(x, req)  # a single target (the common case) runs here; a fallback list or split
        provider = self._provider(x, mapped) if type(mapped) is Target else None  # runs target by target
        budget = x.key.budget if x.key is not None else None
        if budget is not None:
            self.budgets.admit(budget)  # a used-up budget: a 429 before the limits are taken
        key = x.key  # with limits.models: its plan for this model (looked up, not built)
        plan = None if key is None else (key.plan if key.by_model is None
                                         else key.by_model.plan(x.client_model or req.model))
        admission = (None if plan is None else self._admit(x, plan, req) if self.limiter.shared is None
                     else await self._admit_shared(x, plan, req))  # a 429 before any upstream
        try:
            if x.codec is not None and x.codec.answer_locally is not None:
                local = self._local_answer(x, x.codec.answer_locally, req)
                if local is not None:
                    return local
            if provider is None:
                return await self.plans.run(x, mapped, request)
            session = self._session_id(provider, request, req)
            if session is not None and self.store.listener is not None:
                await self._recall_binding(provider, session, x.upstream_model or req.model)
            return await self.attempts.run(x, provider, request, session)
        finally:  # also when the client went away or an error ends the request: a stream has ended here
            if admission is not None or budget is not None:
                self._settle(x, admission, budget)

    def _admit(self, x: Exchange, plan: LimitPlan, req: CanonicalRequest) -> Admission:
        """Take the request from its key's and team's limits in this process (rpm: 1; tpm: the input
        estimate plus the most output tokens it asked for); its response shows what is left (a 429
        too). No await: with the ``memory`` state this is the request path of every limited key."""
        tokens = estimate_tokens(req) + (req.max_tokens or 0) if plan.tokens else 0
        family = x.endpoint.family if x.endpoint is not None else None
        headers = family.ratelimit_headers if family is not None else openai_headers
        limiter = self.limiter
        try:
            admission = limiter.admit(plan, tokens)
        except GatewayError:
            x.limit_headers = headers(limiter.status(plan))  # the 429 shows them too
            raise
        x.limit_headers = headers(admission.status or (None, None))
        return admission

    async def _admit_shared(self, x: Exchange, plan: LimitPlan, req: CanonicalRequest) -> Admission:
        """``_admit`` in the shared state (``state.backend: redis``): one round trip for every gateway."""
        limiter = self.limiter
        assert limiter.shared is not None
        tokens = estimate_tokens(req) + (req.max_tokens or 0) if plan.tokens else 0
        admission, status = await admit_shared(limiter, limiter.shared, plan, tokens)
        family = x.endpoint.family if x.endpoint is not None else None
        x.limit_headers = (family.ratelimit_headers if family is not None else openai_headers)(status)
        return admission

    def _settle(self, x: Exchange, admission: Admission | None, budget: BudgetPlan | None) -> None:
        """The response ended: free its concurrency slots and correct its tpm reservation with the
        real usage (all of it given back when no upstream answered: nothing was used); charge the
        usage (its tokens, and their cost at the serving provider's prices) to the key's and team's
        budgets (nothing when no upstream answered with usage)."""
        usage = x.usage
        used = None if usage is None else usage.input_tokens + usage.output_tokens  # total_tokens, inlined
        if admission is not None:
            self.limiter.settle(admission, used if used is not None or x.ttfb is not None else 0)
        if budget is not None and used is not None and x.provider is not None:
            self.budgets.charge(budget, used, x.cost())

    async def _recall_binding(self, provider: Provider, session: str, model: str) -> None:
        """A sticky session this process has no usable binding for: ask the shared state (another
        gateway may have bound it) before an account is chosen."""
        store, key = self.store, provider.pool.session_key(session)
        bound = store.sticky.get(key)
        if store.listener is not None and (bound is None or store.state(bound).cooling_for(model, store.clock())):
            await store.listener.recall_binding(key)

    @staticmethod
    def _decode(x: Exchange, body: Any, params: dict[str, Any]) -> CanonicalRequest:
        """The client's body through its client codec; a 403 for a model the client's key may not use."""
        assert x.codec is not None  # set by the proxy endpoint before the engine runs
        req = x.canonical = x.codec.decode_request(body, params)
        req.inbound = x.codec.name  # picks the provider's template for this codec, if it names one
        if len(req.model) > MAX_NAME:  # names become cache keys and metric labels: bound them
            raise BadRequest(f"model name longer than {MAX_NAME} characters", param="model")
        x.client_model = req.model
        key = x.key
        if key is not None and key.models is not None:  # the client's name, before any mapping: a 403
            key.check_model(req.model)
        return req

    def _apply_state(self, x: Exchange, req: CanonicalRequest) -> CanonicalRequest:
        """Server-side state a client codec keeps between requests (the Responses API store)."""
        prepare = x.codec.prepare if x.codec is not None else None
        if prepare is None:
            return req
        req = x.canonical = prepare(self.stores, req, x.client_key)
        return req

    @staticmethod
    def _local_answer(x: Exchange, answer: LocalAnswer, req: CanonicalRequest) -> web.Response | None:
        """A request the client codec answers itself once the model is known to be served (Ollama's
        "load the model"); None for every other request."""
        body = answer(req)
        if body is None:
            return None
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=response_headers(x))

    async def _serve_target(self, x: Exchange, target: Target, request: web.BaseRequest) -> web.StreamResponse:
        """One target of a fallback list or split (the plan runner's): as a single target is served."""
        x.account, x.attempt = None, 0  # not the previous target's (its headers would name them)
        provider = self._provider(x, target)
        session = self._session_id(provider, request, x.canonical) if x.canonical is not None else None
        if session is not None and self.store.listener is not None:
            await self._recall_binding(provider, session, target.model)
        return await self.attempts.run(x, provider, request, session)

    @staticmethod
    def _resolve(x: Exchange, req: CanonicalRequest) -> Plan:
        """The model mapping's plan for the requested model: one provider and upstream model, or a
        fallback list or split of them."""
        target = x.snapshot.mapper.resolve(req.model)
        if target is None:
            raise GatewayError("not_found", f"The model '{req.model}' does not exist or is not mapped",
                               param="model", code="model_not_found")
        return target

    @staticmethod
    def _provider(x: Exchange, target: Target) -> Provider:
        """The mapping target's provider, with at least one account to try (else ``exhausted``: a
        fallback list moves on)."""
        provider = x.snapshot.provider(target.provider)
        if provider is None:
            raise GatewayError("server", f"provider '{target.provider}' is not available")
        x.provider, x.upstream_model = provider, target.model
        if not provider.pool.accounts:
            raise ProviderFailed("exhausted", "unavailable", f"provider '{provider.name}' has no account with a key")
        return provider

    @staticmethod
    def _session_id(provider: Provider, request: web.BaseRequest, req: CanonicalRequest) -> str | None:
        """The sticky session a request belongs to (None unless the pool schedules sticky)."""
        if provider.pool.scheduling != "sticky":
            return None
        md = req.metadata or {}
        sid = request.headers.get(provider.session_header) or req.user or md.get("session_id") \
            or md.get("user_id")
        if not sid:
            return None
        sid = str(sid)
        return sid if len(sid) <= MAX_NAME else hashlib.sha256(sid.encode()).hexdigest()

    # --- one attempt: render, send, classify, read --------------------------------------------

    async def _attempt(self, x: Exchange, provider: Provider, account: Account, request: web.BaseRequest,
                       renewed: bool = False) -> web.StreamResponse | UpstreamFailure:
        """One attempt with one account (the attempt loop's transport): the client's response, or why
        the attempt failed while nothing reached the client. A token account's 401 is tried once more
        with a new token (``renewed``), on the same account: not a rotation, not a cooldown."""
        req = x.canonical
        assert req is not None
        view = account.template_view if account.source is None else (  # a token account: the cached token
            self.tokens.view(account) or await self.tokens.obtain(account, self.session))
        if isinstance(view, UpstreamFailure):  # no token (the token server failed or refused)
            return view
        ctx = {"request": req, "model": x.upstream_model, "stream": req.stream,
               "client_headers": ClientHeaders(request.headers),
               "provider": provider.template_view, "account": view}
        template = provider.inbound_templates.get(req.inbound, provider.template)
        if template.jinja:  # Jinja leaves: a runaway render (bounded by its budget) must not hold the loop
            up = x.upstream = await asyncio.get_running_loop().run_in_executor(
                self.renders, render_request, template, ctx, provider.base_url, request.headers)
        else:
            up = x.upstream = render_request(template, ctx, provider.base_url, request.headers)
        if x.trace is not None or account.signer is not None:
            _stamp(x, account, up)
        json_timeout, stream_timeout = self._client_timeouts(provider.timeouts)
        secrets_ = (account.api_key,) if view is account.template_view else (account.api_key, view["access_token"])
        try:
            if req.stream:  # the first byte has its own limit; chunks are watched by an IdleTimer
                async with asyncio.timeout(provider.timeouts.first_byte):
                    resp = await self.session.request(up.method, up.url, params=up.params, headers=up.headers,
                                                      data=up.body, timeout=stream_timeout)
            else:  # sock_read covers the wait for the headers: no timeout context on this path
                resp = await self.session.request(up.method, up.url, params=up.params, headers=up.headers,
                                                  data=up.body, timeout=json_timeout)
        except (TimeoutError, aiohttp.ClientError) as e:
            return _send_failure(e, secrets_)
        if log.isEnabledFor(logging.DEBUG):  # one cached check per attempt; the URL is built only for debug
            _log_sent(x, provider, account, resp.status)
        async with resp:
            try:
                if resp.status >= 400:
                    body = await read_limited(resp.content, ERROR_BODY_LIMIT) or b""
                    if resp.status != 401 or account.source is None or renewed:
                        return provider.codec.parse_failure(resp.status, resp.headers, body, secrets_)
                    self.tokens.expire(account, view)  # refused: one more try with a new token, below
                elif req.stream:
                    return await StreamRelay(self, x, request, self._context(x)).run(provider, resp.content)
                else:
                    return await self._json(x, provider, resp)
            except TimeoutError:
                return UpstreamFailure("timeout", "upstream timed out")
        return await self._attempt(x, provider, account, request, renewed=True)

    def _client_timeouts(self, t: Timeouts) -> tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]:
        """(non-stream, stream) aiohttp timeouts for a provider's settings, built once."""
        pair = self._timeouts.get(t)
        if pair is None:
            pair = self._timeouts[t] = (
                aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect, sock_read=t.first_byte),
                aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect))
        return pair

    async def _json(self, x: Exchange, provider: Provider, resp: aiohttp.ClientResponse
                    ) -> web.StreamResponse | UpstreamFailure:
        """A non-stream answer: read it (bounded), decode it with the upstream codec, then answer."""
        limit = x.snapshot.server.upstream_max_body_bytes
        try:  # bounded after decompression: read_limited keeps aiohttp inflating in small steps
            raw = await read_limited(resp.content, limit)
        except aiohttp.ClientError:
            return UpstreamFailure("reset", "upstream connection closed while reading the response")
        if raw is None:
            return UpstreamFailure("malformed", f"upstream response body is larger than {limit} bytes "
                                                "(server.upstream_limits.max_body_bytes)")
        x.ttfb = time.monotonic() - x.started
        try:  # only the upstream's body is decoded here: the encoder's errors are the gateway's own
            events = provider.codec.decode_response(orjson.loads(raw))
        except ValueError as e:  # orjson.JSONDecodeError is a ValueError
            return UpstreamFailure("malformed", f"upstream sent a malformed response: {str(e)[:200]}")
        for ev in events:
            if isinstance(ev, StreamError):
                return UpstreamFailure(ev.status, redact(ev.message, (x.account.api_key,) if x.account else ()))
        return await self._answer(x, events)

    async def _answer(self, x: Exchange, events: list[Event]) -> web.Response:
        """The client's non-stream response: the events encoded by its client codec."""
        codec = x.codec
        assert codec is not None  # set by the proxy endpoint before the engine runs
        x.usage = next((e for e in reversed(events) if isinstance(e, Usage)), None)
        if x.trace is not None:
            x.trace.answered(events)
        rctx = self._context(x)
        body = codec.encode_response(events, rctx)
        if codec.remember is not None or rctx.signed_calls:  # most codecs keep nothing
            await self.keep_state(x, rctx, events)
        return web.Response(body=orjson.dumps(body), content_type="application/json",
                            headers=response_headers(x))

    def _context(self, x: Exchange) -> ResponseContext:
        """What the client codec's encoder needs to know of this response (its id, model, time)."""
        codec, req = x.codec, x.canonical
        assert codec is not None and req is not None
        return ResponseContext(self.ids.new(codec.id_prefix), x.client_model or req.model, int(time.time()), req,
                               None, x.started)

    # --- codecs with server-side state (Responses store, OpenAI Chat signatures) ----------------------

    @staticmethod
    def keeps_events(x: Exchange) -> bool:
        return x.codec is not None and x.codec.remember is not None

    async def keep_state(self, x: Exchange, rctx: ResponseContext, events: list[Event] | None) -> None:
        """What the client codec keeps of a finished response (its exchange, the signatures handed
        out). Called before the response's last bytes go out, and a shared store's writes are awaited
        (each bounded by ``state.timeout``, plus ``connect_timeout`` when a connection Redis closed is
        replaced): the client may send its follow-up to another gateway as soon as it has it."""
        writes = [self._after_response(x, rctx, events), self._remember_signatures(x, rctx)]
        pending = [w for w in writes if w is not None]
        if pending:
            await asyncio.gather(*pending)

    def _after_response(self, x: Exchange, rctx: ResponseContext, events: list[Event] | None) -> Awaitable[Any] | None:
        """Lets a codec with server-side state (``remember``) keep the finished exchange."""
        remember = x.codec.remember if x.codec is not None else None
        if remember is not None and x.canonical is not None and events is not None:
            return remember(self.stores, x.canonical, rctx, events, x.client_key)
        return None

    def _remember_signatures(self, x: Exchange, rctx: ResponseContext) -> Awaitable[Any] | None:
        """Lets the codec keep the tool-call signatures its encoder handed out, by call id, for
        clients that drop them on replay (only responses with signed calls get here)."""
        remember = x.codec.remember_signatures if x.codec is not None else None
        if remember is not None and rctx.signed_calls:
            return remember(self.stores, rctx.signed_calls, x.client_key)
        return None


def _send_failure(e: TimeoutError | aiohttp.ClientError, secrets_: tuple[str, ...]) -> UpstreamFailure:
    """How sending an attempt failed (nothing reached the upstream's answer yet)."""
    if isinstance(e, aiohttp.ConnectionTimeoutError):
        return UpstreamFailure("connect_error", "timed out connecting to upstream")
    if isinstance(e, TimeoutError):
        return UpstreamFailure("timeout", "upstream timed out before its first byte")
    if isinstance(e, aiohttp.ClientConnectorError):
        return UpstreamFailure("connect_error", redact(f"cannot connect to upstream: {e.os_error}", secrets_))
    return UpstreamFailure("reset", redact(f"upstream connection failed: {type(e).__name__}", secrets_))


def _log_sent(x: Exchange, provider: Provider, account: Account, status: int) -> None:
    log.debug("upstream attempt %d: %s %s -> %d", x.attempt, *x.upstream_target(), status,
              extra={"request_id": x.request_id, "provider": provider.name, "account": account.email,
                     "status": status})


def _stamp(x: Exchange, account: Account, up: UpstreamRequest) -> None:
    """What the rendered request gets last: the trace context (the attempt's CLIENT span id goes
    upstream in its traceparent), then the account's signature, which covers the final headers."""
    if x.trace is not None:
        x.trace.attempt(x, up)
    if account.signer is not None:
        account.signer.sign(up, time.time())

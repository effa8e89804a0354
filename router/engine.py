"""The proxy pipeline over one per-request :class:`Exchange`.

decode inbound dialect → map model → attempt loop [pick account → render template → send →
classify → retry?] → decode upstream dialect → encode inbound dialect → client.
"""

from __future__ import annotations

import asyncio
import logging
import hashlib
import time
from concurrent.futures import Executor
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from router.accounts import Account, StateStore
from router.bodies import read_json, read_limited
from router.canonical import CanonicalRequest, Event, ResponseContext, StreamError, Usage
from router.codecs import ClientCodec, StreamEncoder, Stores
from router.errors import BadRequest, GatewayError, kind_for_status
from router.exchange import Attempt, ClientHeaders, Exchange, response_headers
from router.failures import UpstreamFailure
from router.idle import IdleTimer
from router.ids import IdGenerator
from router.logs import Throttle
from router.redact import redact
from router.retry import decide
from router.snapshot import Provider, Timeouts
from router.sse import SSEParser
from router.upstream_request import render_request

log = logging.getLogger("router.engine")

ERROR_BODY_LIMIT = 64 * 1024
MAX_NAME = 256  # longest model name or sticky session id taken from a client


class Engine:
    """Runs requests through upstream providers; shared state is the store and the HTTP session."""

    def __init__(self, store: StateStore, session: aiohttp.ClientSession,
                 stores: Stores | None = None,
                 ids: IdGenerator | None = None, renders: Executor | None = None):
        self.ids = ids or IdGenerator()
        # where templates with Jinja leaves render (None: the loop's default executor); a pool of its
        # own keeps runaway renders, each bounded by its budget, from delaying DNS lookups and reloads
        self.renders = renders
        self.store = store
        self.stores = stores if stores is not None else Stores()  # what client codecs keep between requests
        self._timeouts: dict[Timeouts, tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]] = {}
        self.session = session
        self._hint_warnings = Throttle()  # odd Retry-After values: a hostile upstream sends one per request

    # --- the attempt loop ---------------------------------------------------------------------

    async def proxy(self, x: Exchange, request: web.BaseRequest, params: dict[str, Any]) -> web.StreamResponse:
        """Decode the client's request with ``x.codec``, then run the attempt loop."""
        codec = x.codec
        assert codec is not None
        body = await read_json(request, x.snapshot.server.max_body_bytes, x.snapshot.server.body_timeout)
        req = x.canonical = codec.decode_request(body, params)
        if len(req.model) > MAX_NAME:  # names become cache keys and metric labels: bound them
            raise BadRequest(f"model name longer than {MAX_NAME} characters", param="model")
        x.client_model = req.model
        if codec.prepare is not None:  # codecs with server-side state (Responses API store)
            req = x.canonical = codec.prepare(self.stores, req, x.client_key)
        target = x.snapshot.mapper.resolve(req.model)
        if target is None:
            raise GatewayError("not_found", f"The model '{req.model}' does not exist or is not mapped",
                               param="model", code="model_not_found")
        provider = x.snapshot.provider(target.provider)
        if provider is None:
            raise GatewayError("server", f"provider '{target.provider}' is not available")
        x.provider, x.upstream_model = provider, target.model
        if not provider.pool.accounts:
            raise GatewayError("unavailable", f"provider '{provider.name}' has no account with a key")
        policy = provider.retry
        session = self._session_id(provider, request, req)
        exclude: set[str] = set()
        account: Account | None = None
        failure: UpstreamFailure | None = None
        for attempt in range(1, policy.max_attempts + 1):
            if account is None:
                pick = provider.pool.pick(self.store, target.model, session, exclude)
                if pick.account is None and failure is None and 0 < pick.wait <= policy.max_wait:
                    await asyncio.sleep(pick.wait)
                    pick = provider.pool.pick(self.store, target.model, session, exclude)
                if pick.account is None:
                    if failure is None:
                        raise GatewayError("rate_limit", f"every account of '{provider.name}' is cooling down",
                                           retry_after=max(1.0, pick.wait))
                    break
                account = pick.account
            x.account, x.attempt = account, attempt
            t0 = time.monotonic()
            result = await self._attempt(x, provider, account, request)
            if not isinstance(result, UpstreamFailure):
                x.attempts.append(Attempt(account.email, result.status, time.monotonic() - t0))
                return result
            failure = result
            x.attempts.append(Attempt(account.email, failure.outcome, time.monotonic() - t0))
            if failure.retry_after is not None or failure.note is not None:
                self._check_hint(x, provider, failure)
            decision = decide(policy, attempt, failure.outcome, failure.retry_after)
            retry = decision.retry
            if retry and decision.rotate and len(exclude) + 1 >= len(provider.pool.accounts):
                retry = False  # no other account to rotate to: the error goes out now, not after a wait
            self._log_failure(x, provider, account, failure, retry)
            if decision.cooldown is not None:
                self.store.cool(account, decision.cooldown, target.model if failure.model_scoped else None,
                                str(failure.outcome))
            else:
                self.store.record_failure(account, str(failure.outcome))
            if not retry:
                break
            if decision.rotate:
                exclude.add(account.state_key)
                account = None
            elif decision.cooldown is not None:
                account = None  # it is resting now: pick again (another account, or wait for it)
            if decision.wait > 0:
                await asyncio.sleep(decision.wait)
        assert failure is not None
        raise GatewayError(kind_for_status(failure.status), failure.message, status=failure.status,
                           retry_after=failure.retry_after)

    def _check_hint(self, x: Exchange, provider: Provider, failure: UpstreamFailure) -> None:
        """Caps the upstream's retry hint at the policy's ``max_cooldown`` (for the cooldown, the wait
        and the client's Retry-After alike); logs an unusable or capped hint, once a minute per provider."""
        note = failure.note
        capped = provider.retry.cap(failure.retry_after)
        if capped != failure.retry_after:
            note = (f"{note}; " if note else "") + \
                f"a retry delay of {failure.retry_after:.6g} s is capped at max_cooldown {capped:g} s"
            failure.retry_after = capped
        if note is None:
            return
        held = self._hint_warnings.allow(provider.name)
        if held is not None:
            log.warning("upstream sent an unusable retry delay: %s", note, extra={
                "request_id": x.request_id, "provider": provider.name, "outcome": failure.outcome,
                "similar_warnings_suppressed": held})

    @staticmethod
    def _log_failure(x: Exchange, provider: Provider, account: Account, failure: UpstreamFailure,
                     retry: bool) -> None:
        """One line per failed attempt naming method, host and path (never the query: it may hold
        the key) and the outcome; the account by its label, never its key."""
        method, url = x.upstream_target()
        log.info("upstream attempt %d failed: %s %s -> %s%s", x.attempt, method, url, failure.outcome,
                 " (retrying)" if retry else "",
                 extra={"request_id": x.request_id, "provider": provider.name, "account": account.email,
                        "method": method, "upstream": url, "outcome": failure.outcome, "retry": retry,
                        "detail": failure.message[:300]})

    @staticmethod
    def _session_id(provider: Provider, request: web.BaseRequest, req: CanonicalRequest) -> str | None:
        if provider.pool.scheduling != "sticky":
            return None
        md = req.metadata or {}
        sid = request.headers.get(provider.session_header) or req.user or md.get("session_id") \
            or md.get("user_id")
        if not sid:
            return None
        sid = str(sid)
        return sid if len(sid) <= MAX_NAME else hashlib.sha256(sid.encode()).hexdigest()

    async def _attempt(self, x: Exchange, provider: Provider, account: Account, request: web.BaseRequest
                       ) -> web.StreamResponse | UpstreamFailure:
        req = x.canonical
        assert req is not None
        ctx = {"request": req, "model": x.upstream_model, "stream": req.stream,
               "client_headers": ClientHeaders(request.headers),
               "provider": provider.template_view, "account": account.template_view}
        template = provider.inbound_templates.get(req.inbound, provider.template)
        if template.jinja:  # Jinja leaves: a runaway render (bounded by its budget) must not hold the loop
            up = x.upstream = await asyncio.get_running_loop().run_in_executor(
                self.renders, render_request, template, ctx, provider.base_url, request.headers)
        else:
            up = x.upstream = render_request(template, ctx, provider.base_url, request.headers)
        json_timeout, stream_timeout = self._client_timeouts(provider.timeouts)
        secrets_ = (account.api_key,)
        try:
            if req.stream:  # the first byte has its own limit; chunks are watched by an IdleTimer
                async with asyncio.timeout(provider.timeouts.first_byte):
                    resp = await self.session.request(up.method, up.url, params=up.params, headers=up.headers,
                                                      data=up.body, timeout=stream_timeout)
            else:  # sock_read covers the wait for the headers: no timeout context on this path
                resp = await self.session.request(up.method, up.url, params=up.params, headers=up.headers,
                                                  data=up.body, timeout=json_timeout)
        except aiohttp.ConnectionTimeoutError:
            return UpstreamFailure("connect_error", "timed out connecting to upstream")
        except TimeoutError:
            return UpstreamFailure("timeout", "upstream timed out before its first byte")
        except aiohttp.ClientConnectorError as e:
            return UpstreamFailure("connect_error", redact(f"cannot connect to upstream: {e.os_error}", secrets_))
        except aiohttp.ClientError as e:
            return UpstreamFailure("reset", redact(f"upstream connection failed: {type(e).__name__}", secrets_))
        if log.isEnabledFor(logging.DEBUG):  # one cached check per attempt; the URL is built only for debug
            log.debug("upstream attempt %d: %s %s -> %d", x.attempt, *x.upstream_target(), resp.status,
                      extra={"request_id": x.request_id, "provider": provider.name, "account": account.email,
                             "status": resp.status})
        async with resp:
            try:
                if resp.status >= 400:
                    body = await read_limited(resp.content, ERROR_BODY_LIMIT) or b""
                    return provider.codec.parse_failure(resp.status, resp.headers, body, secrets_)
                if req.stream:
                    return await self._stream(x, provider, resp, request)
                return await self._json(x, provider, resp)
            except TimeoutError:
                return UpstreamFailure("timeout", "upstream timed out")

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
        limit = x.snapshot.server.upstream_max_body_bytes
        try:  # bounded after decompression: read_limited keeps aiohttp inflating in small steps
            raw = await read_limited(resp.content, limit)
        except aiohttp.ClientError:
            return UpstreamFailure("reset", "upstream connection closed while reading the response")
        if raw is None:
            return UpstreamFailure("malformed", f"upstream response body is larger than {limit} bytes "
                                                "(server.upstream_limits.max_body_bytes)")
        x.ttfb = time.monotonic() - x.started
        try:
            events = provider.codec.decode_response(orjson.loads(raw))
        except ValueError as e:  # orjson.JSONDecodeError is a ValueError
            return UpstreamFailure("malformed", f"upstream sent a malformed response: {str(e)[:200]}")
        for ev in events:
            if isinstance(ev, StreamError):
                return UpstreamFailure(ev.status, redact(ev.message, (x.account.api_key,) if x.account else ()))
        x.usage = next((e for e in reversed(events) if isinstance(e, Usage)), None)
        rctx = self._context(x)
        body = self._codec(x).encode_response(events, rctx)
        self.after_response(x, rctx, events)
        if rctx.signed_calls:
            self.remember_signatures(x, rctx)
        return web.Response(body=orjson.dumps(body), content_type="application/json",
                            headers=response_headers(x))

    async def _stream(self, x: Exchange, provider: Provider, resp: aiohttp.ClientResponse,
                      request: web.BaseRequest) -> web.StreamResponse | UpstreamFailure:
        decoder = provider.codec.stream_decoder()
        parser = SSEParser(x.snapshot.server.upstream_max_event_bytes)
        rctx = self._context(x)
        encoder = self._codec(x).stream_encoder(rctx)
        out: web.StreamResponse | None = None
        keep: list[Event] | None = [] if self.keeps_events(x) else None
        content = resp.content
        try:
            with IdleTimer(provider.timeouts.idle) as idle:
                while True:
                    chunk = await content.readany()
                    idle.touch()
                    frames = parser.feed(chunk) if chunk else parser.close()
                    pending: list[bytes] = []  # one write per upstream read, however many events
                    for name, data in frames:
                        events = decoder.feed(name, data)
                        if not events:
                            continue
                        for ev in events:
                            if isinstance(ev, StreamError):
                                ev.message = redact(ev.message, (x.account.api_key,) if x.account else ())
                                if out is None:
                                    return UpstreamFailure(ev.status, ev.message)
                                x.encoder = None
                                pending.append(encoder.error(ev))
                                await out.write(b"".join(pending))
                                x.error = ev.message
                                return out
                        if out is None:
                            out = await self._start_stream(x, request, encoder)
                        if keep is not None:
                            keep.extend(events)
                        pending.extend([encoder.feed(ev) for ev in events])
                    if pending and out is not None:
                        idle.pause()  # a slow client is not an idle upstream
                        await out.write(b"".join(pending))
                        idle.resume()
                    if not chunk:
                        break
            tail = decoder.finish()
        except ConnectionResetError:
            raise  # our own client went away (a write to it failed): not an upstream failure
        except TimeoutError:  # the IdleTimer's, or aiohttp's for the attempt's ``total``
            why = "upstream stream stalled (idle timeout)" if idle.fired else \
                f"upstream stream exceeded the total timeout of {provider.timeouts.total:g} s"
            return await self._stream_failure(x, out, encoder, "timeout", why)
        except aiohttp.ClientPayloadError:
            return await self._stream_failure(x, out, encoder, "reset", "upstream connection reset mid-stream")
        except aiohttp.ClientConnectionError:
            return await self._stream_failure(x, out, encoder, "reset", "upstream connection lost mid-stream")
        except ValueError as e:
            return await self._stream_failure(x, out, encoder, "malformed",
                                              f"upstream sent a malformed stream chunk: {str(e)[:200]}")
        if out is None:
            out = await self._start_stream(x, request, encoder)
        if keep is not None:
            keep.extend(tail)
        buf = b"".join([encoder.feed(ev) for ev in tail])
        x.usage = next((e for e in reversed(tail) if isinstance(e, Usage)), None)
        x.encoder = None
        last = buf + encoder.finish()
        # remembered before the last write: a client may send its follow-up (previous_response_id, a
        # replayed tool call) as soon as it has the end of the stream
        if rctx.signed_calls:
            self.remember_signatures(x, rctx)
        if keep is not None:
            self.after_response(x, rctx, keep)
        await out.write(last)
        await out.write_eof()
        return out

    async def _start_stream(self, x: Exchange, request: web.BaseRequest, encoder: StreamEncoder
                            ) -> web.StreamResponse:
        out = x.response = web.StreamResponse(status=200, headers=response_headers(x))
        x.encoder = encoder  # a shutdown that cuts the stream ends it with the encoder's error event
        out.content_type = self._codec(x).stream_media_type
        out.headers["Cache-Control"] = "no-cache"
        out.headers["X-Accel-Buffering"] = "no"
        await out.prepare(request)
        x.ttfb = time.monotonic() - x.started
        start = encoder.start()
        if start:
            await out.write(start)
        return out

    async def _stream_failure(self, x: Exchange, out: web.StreamResponse | None, encoder: StreamEncoder,
                              outcome: str, message: str) -> web.StreamResponse | UpstreamFailure:
        if out is None:
            return UpstreamFailure(outcome, message)  # nothing reached the client yet: retryable
        status = 504 if outcome == "timeout" else 502
        method, url = x.upstream_target()
        log.warning("stream failed after the first byte: %s %s -> %s", method, url, outcome,
                    extra={"request_id": x.request_id, "upstream": url, "outcome": outcome, "detail": message})
        x.error, x.encoder = message, None
        await out.write(encoder.error(StreamError(status, kind_for_status(status), message)))
        return out

    # --- codecs with server-side state (Responses store, OpenAI Chat signatures) ----------------------

    @staticmethod
    def _codec(x: Exchange) -> ClientCodec:
        assert x.codec is not None  # set by the proxy endpoint before the engine runs
        return x.codec

    def _context(self, x: Exchange) -> ResponseContext:
        assert x.canonical is not None
        return ResponseContext(self.ids.new(self._codec(x).id_prefix), x.client_model or x.canonical.model,
                               int(time.time()), x.canonical)

    @staticmethod
    def keeps_events(x: Exchange) -> bool:
        return x.codec is not None and x.codec.remember is not None

    def after_response(self, x: Exchange, rctx: ResponseContext, events: list[Event]) -> None:
        """Lets a codec with server-side state (``remember``) keep the finished exchange."""
        remember = x.codec.remember if x.codec is not None else None
        if remember is not None and x.canonical is not None:
            remember(self.stores, x.canonical, rctx, events, x.client_key)

    def remember_signatures(self, x: Exchange, rctx: ResponseContext) -> None:
        """Lets the codec keep the tool-call signatures its encoder handed out, by call id, for
        clients that drop them on replay (only responses with signed calls get here)."""
        remember = x.codec.remember_signatures if x.codec is not None else None
        if remember is not None and rctx.signed_calls:
            remember(self.stores, rctx.signed_calls, x.client_key)

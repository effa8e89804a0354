"""Where retry happens: :class:`AttemptLoop`, the one loop over a proxied request's attempts.

pick an account (waiting for the pool when every account rests) → run one attempt (the engine's
transport: render, send, classify, read) → record it → decide with the pure :func:`router.retry.decide`
→ cool the account or count its failure → rotate to another account or stay → wait → next attempt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from router.accounts import Account, StateStore
from router.circuit import gate, observe, verdict
from router.exchange import Attempt, Exchange
from router.failures import ProviderFailed, UpstreamFailure
from router.logs import Throttle
from router.retry import Decision, decide
from router.scheduling import account_failed
from router.snapshot import Provider

log = logging.getLogger("router.engine")  # the pipeline's log: its lines keep the engine's name

# One attempt with one account: the client's response, or why the attempt failed (nothing sent yet).
Transport = Callable[[Exchange, Provider, Account, web.BaseRequest],
                     Awaitable["web.StreamResponse | UpstreamFailure"]]


class AttemptLoop:
    """Runs a request's attempts against its provider until one answers or the retry policy says stop.

    This is the only place that retries: it picks each attempt's account, hands the attempt to the
    transport, records its outcome in ``Exchange.attempts``, asks the provider's policy what to do
    (``retry.decide``), cools the account or counts its failure in the state store, rotates to
    another account or stays, and waits. The transport only runs one attempt and reports how it
    failed; it never loops. One per engine: per-request state lives in ``run``'s locals.
    """

    __slots__ = ("_hint_warnings", "store", "transport")

    def __init__(self, store: StateStore, transport: Transport) -> None:
        self.store = store
        self.transport = transport
        self._hint_warnings = Throttle()  # odd Retry-After values: a hostile upstream sends one per request

    async def run(self, x: Exchange, provider: Provider, request: web.BaseRequest, session: str | None
                  ) -> web.StreamResponse:
        """The response of the first attempt that answers; a ProviderFailed with the last failure when
        none does (or an ``exhausted`` rate-limit error when every account rests before any attempt)."""
        model = x.upstream_model or ""
        exclude: set[str] = set()  # accounts rotated away from
        account: Account | None = None
        failure: UpstreamFailure | None = None
        circuit = provider.pool.circuit
        if circuit is not None:
            failure = gate(self.store, provider.name, circuit)  # open: ends now (a fallback moves on)
            if failure is not None:
                raise ProviderFailed.of(failure)
        for attempt in range(1, provider.retry.max_attempts + 1):
            if account is None:
                pick = provider.pool.pick(self.store, model, session, exclude)
                account = pick.account or await self._wait_for_account(provider, model, session, exclude,
                                                                        pick.wait, failure)
                if account is None:
                    break
            x.account, x.attempt = account, attempt
            t0 = time.monotonic()
            st = self.store.state(account.state_key)
            st.in_flight += 1  # until the attempt ends: a stream after its last byte, or when the client left
            try:
                result = await self.transport(x, provider, account, request)
            finally:
                st.in_flight -= 1
            if not isinstance(result, UpstreamFailure):
                st.outcome(x.error is not None, self.store.clock())  # x.error: the upstream broke the stream
                if circuit is not None:
                    observe(self.store, provider.pool, account, x.error is not None, circuit)
                x.attempts.append(Attempt(account.email, result.status, time.monotonic() - t0))
                return result
            failure = result
            x.attempts.append(Attempt(account.email, failure.outcome, time.monotonic() - t0))
            decision = self._settle(x, provider, account, failure, len(exclude))
            if decision is None:
                break
            if decision.rotate:
                exclude.add(account.state_key)
                account = None
            elif decision.cooldown is not None:
                account = None  # it is resting now: pick again (another account, or wait for it)
            if decision.wait > 0:
                await asyncio.sleep(decision.wait)
        assert failure is not None
        raise ProviderFailed.of(failure)

    async def _wait_for_account(self, provider: Provider, model: str, session: str | None, exclude: set[str],
                                wait: float, failure: UpstreamFailure | None) -> Account | None:
        """Every account rests: before any attempt, wait for the first one free (up to the policy's
        ``max_wait``) or answer with a rate-limit error; after a failed attempt, None (that failure
        goes out)."""
        if failure is not None:
            return None
        if wait == math.inf:  # every account left is disabled (its credential refused for good): a fallback moves on
            raise ProviderFailed("exhausted", "unavailable", f"every account of provider '{provider.name}' is "
                                 "disabled: its credential was refused (see /admin/accounts)")
        if 0 < wait <= provider.retry.max_wait:
            await asyncio.sleep(wait)
            pick = provider.pool.pick(self.store, model, session, exclude)
            if pick.account is not None:
                return pick.account
            wait = pick.wait
        raise ProviderFailed("exhausted", "rate_limit", f"every account of '{provider.name}' is cooling down",
                             retry_after=max(1.0, wait))

    def _settle(self, x: Exchange, provider: Provider, account: Account, failure: UpstreamFailure,
                excluded: int) -> Decision | None:
        """After a failed attempt: the policy's decision (None: no retry), the failure logged and the
        account cooled down or its failure counted (in its error rate too, unless the client caused it)."""
        if failure.retry_after is not None or failure.note is not None:
            self._check_hint(x, provider, failure)
        decision = decide(provider.retry, x.attempt, failure.outcome, failure.retry_after)
        retry = decision.retry
        if retry and decision.rotate and excluded + 1 >= len(provider.pool.accounts):
            retry = False  # no other account to rotate to: the error goes out now, not after a wait
        circuit = provider.pool.circuit
        if circuit is not None and observe(self.store, provider.pool, account, verdict(failure.outcome), circuit):
            retry = False  # the provider's circuit just opened: no more attempts at it
        _log_failure(x, provider, account, failure, retry)
        self.store.state(account.state_key).outcome(account_failed(failure), self.store.clock())
        if decision.cooldown is not None:
            self.store.cool(account, decision.cooldown, x.upstream_model if failure.model_scoped else None,
                            str(failure.outcome))
        else:
            self.store.record_failure(account, str(failure.outcome))
        return decision if retry else None

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


def _log_failure(x: Exchange, provider: Provider, account: Account, failure: UpstreamFailure, retry: bool) -> None:
    """One line per failed attempt naming method, host and path (never the query: it may hold the
    key) and the outcome; the account by its label, never its key."""
    method, url = x.upstream_target()
    log.info("upstream attempt %d failed: %s %s -> %s%s", x.attempt, method, url, failure.outcome,
             " (retrying)" if retry else "",
             extra={"request_id": x.request_id, "provider": provider.name, "account": account.email,
                    "method": method, "upstream": url, "outcome": failure.outcome, "retry": retry,
                    "detail": failure.message[:300]})

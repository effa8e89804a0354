"""Client limits with ``state.backend: redis``: rpm and tpm reserved and a concurrency lease taken for
every gateway in one round trip (``router.state_limits``: all of a request's cells, all or none); the
lease goes back in the background when the response ends. The per-process limiter counts the
concurrency too (never more than all gateways together: a request it refuses would be refused
anyway), so it holds at once when the shared state cannot be reached. Then the operator's
``state.limits_when_down`` decides: ``open`` (the default) holds requests to the per-process
limiter, ``closed`` answers a 503."""

from __future__ import annotations

from router.errors import GatewayError
from router.limit_headers import Status
from router.limits import Admission, Limiter, LimitPlan, SharedLimits, over, tightest

DOWN = "rate limits cannot be checked: the shared state is unreachable (state.limits_when_down: closed)"
FULL_RETRY_S = 1.0  # the Retry-After of a full concurrency cell (when a slot frees is not known)


async def admit_shared(limiter: Limiter, shared: SharedLimits, plan: LimitPlan, tokens: int
                       ) -> tuple[Admission, Status]:
    """Hold the concurrency slots here, then reserve every cell in the shared state; the admission and
    what is left (a 429 or a 503 instead, with every slot given back)."""
    admission = limiter.hold(plan, tokens)
    try:
        slots = [(c.id, c.limit) for c in plan.concurrent] if plan.concurrent else ()
        reply = await shared.reserve_limits(plan.tag, plan.costs(tokens), slots) if shared.up else None
        if reply is None:  # down, or the call failed
            if not shared.limits_open:
                raise GatewayError("unavailable", DOWN, retry_after=1.0)
            return admission, limiter.take(plan, tokens)
        denied, wait, cells, admission.lease = reply
        if denied:
            rates = plan.rates
            raise (over(rates[denied - 1], wait) if denied <= len(rates)
                   else over(plan.concurrent[denied - len(rates) - 1], FULL_RETRY_S))
    except BaseException:  # a 429, a 503, or the client went away during the round trip
        limiter.release(admission)
        raise
    admission.shared = True
    return admission, tightest(plan.rates, [reset for _, reset in cells])

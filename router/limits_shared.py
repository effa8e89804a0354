"""Client limits with ``state.backend: redis``: rpm and tpm reserved for every gateway in one round
trip (``RedisState.reserve_all``: all of a request's cells, all or none); concurrency stays per
process. When the shared state cannot be reached the operator's ``state.limits_when_down`` decides:
``open`` (the default) holds requests to the per-process limiter, ``closed`` answers a 503."""

from __future__ import annotations

from router.errors import GatewayError
from router.limit_headers import Status
from router.limits import Admission, Limiter, LimitPlan, SharedLimits, over, tightest

DOWN = "rate limits cannot be checked: the shared state is unreachable (state.limits_when_down: closed)"


async def admit_shared(limiter: Limiter, shared: SharedLimits, plan: LimitPlan, tokens: int
                       ) -> tuple[Admission, Status]:
    """Hold the concurrency slots here, reserve rpm and tpm in the shared state; the admission and
    what is left (a 429 or a 503 instead, with every slot given back)."""
    admission = limiter.hold(plan, tokens)
    try:
        reply = await shared.reserve_limits(plan.tag, plan.costs(tokens)) if shared.up else None
        if reply is None:  # down, or the call failed
            if not shared.limits_open:
                raise GatewayError("unavailable", DOWN, retry_after=1.0)
            return admission, limiter.take(plan, tokens)
        denied, wait, cells = reply
        if denied:
            raise over(plan.rates[denied - 1], wait)
    except BaseException:  # a 429, a 503, or the client went away during the round trip
        limiter.release(admission)
        raise
    admission.shared = True
    return admission, tightest(plan.rates, [reset for _, reset in cells])

"""``GET /v1/usage``: a client's own usage and what is left of its rate limits, asked with its own key.

The rows are those of ``GET /admin/usage`` (``router.usage_report``) for the calling key only:
``from``, ``to``, ``model``, ``group_by`` (``day``, ``model``; default both) and ``format`` work as
there; ``key`` and ``team`` are not parameters here. ``limits`` shows the tightest of the key's and
its team's rpm and tpm limits now, as the ``x-ratelimit-*`` headers do: with ``state.backend: redis``
read from Redis (every gateway's use; reading reserves nothing), else this process's limiter.
``budgets`` shows each of the key's and its team's budgets this period: spent, what is left and when
the period turns (with ``state.backend: redis``, every gateway's spend as of the last sync).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.budgets import BudgetPlan, Budgets, instant
from router.errors import GatewayError
from router.limit_headers import RateStatus, Window, rate_status
from router.limits import Limiter, LimitPlan, tightest
from router.prices import usd
from router.usage import day_of
from router.usage_report import View, answer, parse_query

if TYPE_CHECKING:
    from router.endpoints import Params, Services
    from router.exchange import Exchange

OWN = View(("day", "model"), ("day", "model"), ("model",))
NO_KEY = "GET /v1/usage shows the usage of the API key that calls it: send one (Authorization: Bearer <key>)"


async def key_usage(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
    key = x.key
    if key is None:  # auth off: no key is asked for, so none is known
        raise GatewayError("authentication", NO_KEY, code="invalid_api_key")
    ledger = svc.gateway.usage
    q = parse_query(request.query, request.headers.get("Accept", ""), day_of(ledger.clock()), OWN)
    q = replace(q, filters={**q.filters, 0: frozenset({key.name})})
    limits = await limits_left(svc.engine.limiter, key.plan) if key.plan is not None else None
    budgets = budgets_left(svc.gateway.budgets, key.budget) if key.budget is not None else []
    return await answer(svc.gateway, q, {"key": key.name, "team": key.team, "limits": limits, "budgets": budgets})


def budgets_left(budgets: Budgets, plan: BudgetPlan) -> list[dict[str, Any]]:
    """Each budget of ``plan`` (the key's, then its team's) this period: spent, left, when it resets."""
    shown = []
    for cell in plan.cells:
        tokens, nano = budgets.spent(cell)  # rolls the periods over first
        budget, turn = cell.budget, budgets.periods[cell.budget.period]
        row: dict[str, Any] = {"scope": cell.scope, "name": cell.owner, **budget.public(),
                               "spent_tokens": tokens, "spent_usd": usd(nano), "resets_at": instant(turn.end)}
        if budget.tokens is not None:
            row["remaining_tokens"] = max(0, budget.tokens - tokens)
        if budget.nano is not None:
            row["remaining_usd"] = usd(max(0, budget.nano - nano))
        shown.append(row)
    return shown


async def limits_left(limiter: Limiter, plan: LimitPlan) -> dict[str, Any] | None:
    """The tightest rpm and tpm windows of ``plan`` now (None: it has neither)."""
    if not plan.rates:
        return None
    status = await _shared_status(limiter, plan)
    if status is None:
        status = limiter.status(plan)
    return {"requests": _window(status.requests), "tokens": _window(status.tokens)}


async def _shared_status(limiter: Limiter, plan: LimitPlan) -> RateStatus | None:
    """Every gateway's use of the cells: a reservation of nothing (one round trip); None without a
    shared state, when it fails, or when a cell is over its limit (then this process's view)."""
    shared = limiter.shared
    if shared is None or not shared.up:
        return None
    reply = await shared.reserve_limits(plan.tag, [(c.id, c.interval, c.limit, 0) for c in plan.rates])
    if reply is None or reply[0]:
        return None
    return rate_status(tightest(plan.rates, [reset for _, reset in reply[2]]))


def _window(window: Window | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {"limit": window.limit, "remaining": window.remaining, "reset_seconds": round(window.reset_s, 3)}

"""Walking a fallback list or a split per request: which target serves it, and the chain walked.

A single target never comes here (the engine runs it directly). For a plan, each target is served by
the engine's own path (its provider, its template and upstream codec, its attempt loop with the
provider's retries), so a fallback to another dialect re-renders the request for that provider while
the client's codec stays the same. A target that fails raises :class:`ProviderFailed`; its node's
``on`` decides whether the walk moves on (next entry of a list, the other arms of a split, heaviest
first) or the error goes to the client. Nothing moves on once a stream's first byte went out: a failure
after that is the stream's own error event (the relay's), never an exception here.

Every target tried is noted in ``Exchange.chain`` (``provider/model:outcome``) for the access log and
the response-header context.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from router.errors import GatewayError
from router.exchange import Exchange
from router.failures import ProviderFailed
from router.plan import Fallback, Plan, Split, Target, triggered

log = logging.getLogger("router.engine")  # the pipeline's log: its lines keep the engine's name

# Serve one target: its provider's attempt loop; raises ProviderFailed when it does not answer.
Serve = Callable[[Exchange, Target, web.BaseRequest], Awaitable[web.StreamResponse]]
MAX_SESSION = 256  # longest session id taken from a client


def outcome_label(e: ProviderFailed) -> str:
    """How a failed target shows in the chain: its reason (``context_length``) or its outcome."""
    return e.reason or str(e.outcome)


def session_point(session: str, total: int) -> int:
    """A session's place in ``[0, total)``: the same on every gateway (no per-process hash seed)."""
    digest = hashlib.blake2b(session.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % total


class PlanRunner:
    """Walks a request's plan; one per engine. ``rand`` is this process's source for split choices
    (seed it for reproducible tests); sticky sessions do not use it."""

    __slots__ = ("rand", "serve")

    def __init__(self, serve: Serve, rand: random.Random | None = None) -> None:
        self.serve = serve
        self.rand = rand if rand is not None else random.Random()

    async def run(self, x: Exchange, plan: Plan, request: web.BaseRequest) -> web.StreamResponse:
        """The response of the first target that answers; the last failure's error when none does."""
        x.chain = []
        return await self._walk(x, plan, request)

    async def _walk(self, x: Exchange, plan: Plan, request: web.BaseRequest) -> web.StreamResponse:
        if isinstance(plan, Target):
            return await self._target(x, plan, request)
        if isinstance(plan, Fallback):
            return await self._in_order(x, plan.entries, plan.on, request)
        first = self.choose(plan, self.session(x, request))
        return await self._in_order(x, [plan.arms[i].plan for i in (first, *plan.spill[first])], plan.on, request)

    async def _target(self, x: Exchange, target: Target, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one target, noted in the chain first as answering (every answer is a 200, and its
        headers, rendered before it returns, show the whole chain), then corrected if it did not."""
        chain = x.chain
        assert chain is not None  # set by run
        at, label = len(chain), "aborted"  # aborted: the client went away (or a bug, for the app's boundary)
        chain.append(f"{target.name}:200")
        try:
            resp = await self.serve(x, target, request)
            label = str(resp.status)
            return resp
        except ProviderFailed as e:
            label = outcome_label(e)
            raise
        except GatewayError as e:  # the gateway's own error (a template that failed to render)
            label = str(e.status)
            raise
        finally:
            chain[at] = f"{target.name}:{label}"

    async def _in_order(self, x: Exchange, plans: Sequence[Plan], on: frozenset[int | str],
                        request: web.BaseRequest) -> web.StreamResponse:
        """Each plan in turn until one answers or a failure is not in ``on`` (then it goes out)."""
        last = len(plans) - 1
        for i, plan in enumerate(plans):
            try:
                return await self._walk(x, plan, request)
            except ProviderFailed as e:
                if i == last or not self._moves_on(x, on, e):
                    raise
                log.info("falling back after %s: %s", outcome_label(e), x.chain,
                         extra={"request_id": x.request_id, "outcome": outcome_label(e), "chain": x.chain})
        raise AssertionError("unreachable: a plan has at least one entry")

    @staticmethod
    def _moves_on(x: Exchange, on: frozenset[int | str], e: ProviderFailed) -> bool:
        started = x.response is not None and x.response.prepared  # a stream's first byte went out
        return not started and triggered(on, e.outcome, e.reason)

    def choose(self, split: Split, session: str | None) -> int:
        """The arm a request goes to first: by its session id when it has one (sticky), else at random
        by weight."""
        point = session_point(session, split.total) if session else self.rand.randrange(split.total)
        return split.arm_at(point)

    @staticmethod
    def session(x: Exchange, request: web.BaseRequest) -> str | None:
        """The request's session id for sticky splits: the mapping's ``session_header``, else the
        request's ``user`` or its metadata's ``session_id`` / ``user_id``."""
        req = x.canonical
        header = x.snapshot.mapper.session_header
        md = (req.metadata if req is not None else None) or {}
        sid = request.headers.get(header) or (req.user if req is not None else None) \
            or md.get("session_id") or md.get("user_id")
        if not sid:
            return None
        sid = str(sid)
        return sid if len(sid) <= MAX_SESSION else hashlib.sha256(sid.encode()).hexdigest()

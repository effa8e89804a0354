"""Graceful shutdown: in-flight requests get the grace period to finish, then the rest are cut.

The dispatcher keeps every request it is handling in ``InFlight.requests`` (its task -> its exchange:
one dict insert and one delete per request). A cut cancels the request's task after putting it in
``InFlight.cut_off``, so the dispatcher can tell a shutdown from a client that went away: it answers
a 503 in the request's API family when nothing was sent yet, or ends a started stream with its
client codec's error event.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

SHUTTING_DOWN = "the gateway is shutting down; retry the request"


@dataclass(slots=True)
class InFlight:
    requests: dict[asyncio.Task[Any], Any] = field(default_factory=dict)  # task -> exchange.Exchange
    cut_off: set[asyncio.Task[Any]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Drained:
    """What a shutdown found in flight and what became of it."""

    grace: float
    requests: int = 0
    streams: int = 0
    cut: int = 0
    cut_streams: int = 0

    def __str__(self) -> str:
        if not self.requests:
            return "shutdown: no request in flight"
        return (f"shutdown: {_count(self.requests, 'request')} in flight ({_count(self.streams, 'stream')}); "
                f"{self.requests - self.cut} finished within the {self.grace:g} s grace, "
                f"{self.cut} cut ({_count(self.cut_streams, 'stream')})")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


async def drain(inflight: InFlight, grace: float, cut_wait: float, hurry: asyncio.Event | None = None
                ) -> Drained:
    """Wait up to ``grace`` seconds for the requests in flight (less when ``hurry`` is set), then cut
    the rest and give them ``cut_wait`` seconds to write their last bytes.

    Call it once no new request can start (the listener and idle keep-alive connections closed).
    """
    running = dict(inflight.requests)
    if not running:
        return Drained(grace)
    pending = await _wait(set(running), grace, hurry or asyncio.Event())
    for task in pending:
        inflight.cut_off.add(task)
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=cut_wait)
    inflight.cut_off.clear()  # whatever is still running now is aiohttp's to close
    return Drained(grace, len(running), sum(1 for x in running.values() if x.response is not None),
                   len(pending), sum(1 for t in pending if running[t].response is not None))


async def _wait(pending: set[asyncio.Task[Any]], timeout: float, hurry: asyncio.Event) -> set[asyncio.Task[Any]]:
    """The tasks still running after ``timeout`` seconds, or as soon as ``hurry`` is set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    hurried = loop.create_task(hurry.wait())
    try:
        while pending and not hurry.is_set() and (left := deadline - loop.time()) > 0:
            done, _ = await asyncio.wait(pending | {hurried}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            pending -= done
    finally:
        hurried.cancel()
    return pending

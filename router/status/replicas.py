"""The status page's traffic across replicas, through ``state: {backend: redis}``.

Every gateway process (each replica, each ``--workers`` child) sends, once a second, the seconds of
its traffic ring that are over and not yet sent: one hash per second, ``{<prefix>:status}:s:<second>``,
a field per process (``host:pid:<random>``) holding that second's rows, expiring when the ring has moved past
it; and its new failed requests to one list, ``{<prefix>:status}:failed``, trimmed to the newest
``FAILED``. ``GET /admin/status`` reads the ring's seconds (one pipelined round trip) and adds what its
own process has not sent yet, so it shows the whole fleet's traffic, at most a second behind for the
other processes. Off the request path; while Redis is down each process keeps its seconds and sends
what is still in its ring when Redis is back, and the page shows the answering process's (or, under
``--workers``, every worker's through the worker directory).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

import orjson

from router.status.traffic import FAILED, SECONDS

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from router.gateway import Gateway
    from router.status.traffic import Traffic

log = logging.getLogger("router.status")

SHARE_EVERY = 1.0  # seconds between a process's sends
READ_TIMEOUT = 2.0  # seconds /admin/status waits for Redis before it answers with this process's traffic
TTL = SECONDS + 30  # a second's hash outlives the ring by a little


def process_id() -> str:
    """``host:pid:<random>``: the random part tells apart two gateways in one process (tests, embedding)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _second_key(prefix: str, second: int) -> str:
    return f"{{{prefix}:status}}:s:{second}"


def _failed_key(prefix: str) -> str:
    return f"{{{prefix}:status}}:failed"


async def publish(client: Redis, prefix: str, traffic: Traffic, me: str, now: float | None = None) -> None:
    """Send the seconds that are over and the failed requests not sent yet (one pipelined round trip)."""
    second = int(time.time() if now is None else now)
    seconds = traffic.seconds(max(traffic.shared_until, second - SECONDS + 1), second)
    failures, failures_total = traffic.unshared_failures(), traffic.failures
    if seconds or failures:
        pipe = client.pipeline(transaction=False)
        for sec, rows in seconds:
            key = _second_key(prefix, sec)
            pipe.hset(key, me, orjson.dumps(rows))
            pipe.expire(key, TTL)
        if failures:
            key = _failed_key(prefix)
            pipe.lpush(key, *(orjson.dumps(f) for f in failures))
            pipe.ltrim(key, 0, FAILED - 1)
            pipe.expire(key, TTL)
        await pipe.execute()
    traffic.shared_until, traffic.failures_shared = second, failures_total


async def fleet(client: Redis, prefix: str, traffic: Traffic, now: float) -> list[dict[str, Any]]:
    """Every process's sent traffic and failed requests, plus this process's not sent yet."""
    second = int(now)
    first = second - SECONDS + 1
    pipe = client.pipeline(transaction=False)
    for sec in range(first, second + 1):
        pipe.hgetall(_second_key(prefix, sec))
    pipe.lrange(_failed_key(prefix), 0, FAILED - 1)
    replies = await asyncio.wait_for(pipe.execute(), READ_TIMEOUT)
    seconds = [[sec, [row for blob in reply.values() for row in orjson.loads(blob)]]
               for sec, reply in zip(range(first, second + 1), replies[:-1], strict=True) if reply]
    failed = [orjson.loads(blob) for blob in replies[-1]]
    return [{"seconds": seconds, "failed": failed},
            {"seconds": traffic.seconds(traffic.shared_until, second + 1), "failed": traffic.unshared_failures()}]


async def shared_exports(gw: Gateway, traffic: Traffic) -> list[dict[str, Any]] | None:
    """The fleet's traffic when the state is shared and up; None otherwise (or when Redis does not answer)."""
    shared = gw.shared
    if shared is None or not shared.up:
        return None
    from redis.exceptions import RedisError  # redis-py: only with backend redis (an extra)

    try:
        return await fleet(shared.client, shared.settings.prefix, traffic, time.time())
    except (RedisError, OSError, TimeoutError) as e:
        log.warning("status page: the fleet's traffic is unavailable (%s): showing this process's", type(e).__name__)
        return None


async def share_traffic(gw: Gateway, traffic: Traffic, every: float = SHARE_EVERY) -> None:
    """The process's loop: sends its traffic while the state is shared (idle otherwise)."""
    me = process_id()
    while True:
        await asyncio.sleep(every)
        shared = gw.shared
        if shared is None or not shared.up:
            continue
        from redis.exceptions import RedisError  # redis-py: only with backend redis (an extra)

        try:
            await publish(shared.client, shared.settings.prefix, traffic, me)
        except (RedisError, OSError, TimeoutError) as e:  # kept: sent on a later tick, while in the ring
            log.debug("status page: traffic not sent (%s)", type(e).__name__)

"""State-store primitives on Redis: extend-only cooldowns, a GCRA rate limiter, batched counters.

The building blocks of the shared state (``router.shared_state``), each one round trip:

- ``cool`` / ``read_cooldowns``: an account's cooldown deadlines (epoch ms), for the whole account and
  per model, in one value per account. A write never shortens a stored deadline (one Lua script
  compares and extends), so a late or slow writer cannot end a cooldown early; a whole pool is read
  with one MGET.
- ``reserve`` / ``adjust``: a generic cell rate algorithm (GCRA) in one Lua script: check and reserve
  atomically, ``cost`` tokens at a time, no fixed windows (so no double burst at a window edge); a
  denied call reserves nothing. ``adjust`` corrects a reservation afterwards (reserve an estimate,
  then add ``real - estimate``), atomically too.
- ``reserve_all`` / ``adjust_all``: a client's limits at admission, in one script: every GCRA cell of
  a request reserved and a lease taken in every concurrency cell (a sorted set of leases that expire),
  all or none; ``renew_leases`` / ``release_leases``: a gateway's leases, many per pipelined call.
- ``incr_many``: many counter increments (with an optional TTL) in one pipelined round trip.
- ``clear``: an operator's reset (the cooldowns deleted, a reset mark set, in one transaction).
- ``put_blobs`` / ``get_blobs``: bounded stored entries (Responses conversations, signatures): a
  plain SET each, with a script keeping the books (entries, bytes, oldest first); read by one MGET.
- ``bind`` / ``binding``: sticky-session bindings with a time to live.

The Lua sources and their contracts are in ``router.state_scripts``.

Keys are Redis-Cluster-safe. Every key is ``{<prefix>:<kind>...}...``: a script touches one key, or
keys sharing one tag; an account's cooldowns, reset mark and counts share the hash tag
``{<prefix>:cool}`` (so one MGET can read a whole pool on a cluster too), as do the generic counters
``{<prefix>:count}`` (one node per pipeline) and each kind of stored entry (``{<prefix>:resp}``);
each rate-limit key is its own tag ``{<prefix>:rate:<key>}`` so limits spread over a cluster's nodes.

Clocks. The GCRA script reads Redis ``TIME`` unless the caller passes ``now_ms``: replicas' clocks
drift, and a limiter shared by replicas needs one clock for its theoretical arrival time, else a
replica whose clock runs ahead spends the others' tokens. (Redis 5+ replicates a script's effects,
not the script, so reading TIME before a write is allowed.) Cooldown deadlines come from the caller's
clock instead: they are set from an upstream's ``Retry-After`` as seen by the gateway and read back
by gateways, whose clocks are NTP-close; Redis' clock only decides when the key is dropped.

Scripts are registered once (``register_script``); redis-py's script object sends EVALSHA and on
NOSCRIPT (after ``SCRIPT FLUSH`` or a Redis restart) loads the script again and retries (the blob
pipeline does the same by hand). No command newer than Redis 5 is used (tested on Redis 7.0).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from router.state_lane import Lane
from router.state_scripts import COOL, GCRA, GCRA_ALL, INDEX, RENEW

RESET_MARK_TTL_MS = 86_400_000  # a reset mark is read by every gateway's next sync, long before a day
MAX_SCOPES = 64  # cooldowns one account holds at once (itself and per model): bounds each value

_US = 1_000_000


class Reservation(NamedTuple):
    """What ``reserve`` decided; unpacks as ``(allowed, retry_after_s, remaining, reset_after_s)``.

    ``retry_after_s``: when a denied request of the same cost would fit (0 when allowed).
    ``remaining``: requests of cost 1 that would still be allowed now. ``reset_after_s``: when the
    limiter is back to a full burst.
    """

    allowed: bool
    retry_after_s: float
    remaining: int
    reset_after_s: float


class RedisState:
    """The primitives over one asyncio Redis client; every key is namespaced by ``prefix``.

    The client may decode responses or not; values are parsed either way.
    """

    __slots__ = ("_client", "_cool", "_gcra", "_gcra_all", "_index", "_lane", "_prefix", "_renew")

    def __init__(self, client: Redis, prefix: str = "router", lane_timeout: float | None = None) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"state key prefix {prefix!r}: braces would break the keys' hash tags")
        self._client = client
        self._prefix = prefix
        self._cool = client.register_script(COOL)
        self._gcra = client.register_script(GCRA)
        self._gcra_all = client.register_script(GCRA_ALL)
        self._index = client.register_script(INDEX)
        self._renew = client.register_script(RENEW)
        # with ``lane_timeout``: admission's own connection (router.state_lane), each call bounded by it
        self._lane = Lane(client, lane_timeout) if lane_timeout is not None else None

    async def close(self) -> None:
        """Close the lane and the client's connections."""
        if self._lane is not None:
            await self._lane.close()
        await self._client.aclose()

    # keys: the hash tag (in braces) decides the cluster slot, see the module docstring

    def cooldown_key(self, key: str) -> str:
        return f"{{{self._prefix}:cool}}:{key}"

    def rate_key(self, key: str) -> str:
        return f"{{{self._prefix}:rate:{key}}}"

    def counter_key(self, key: str) -> str:
        return f"{{{self._prefix}:count}}:{key}"

    def tally_key(self, kind: str, key: str) -> str:
        """An account's counter (requests, failures) beside its cooldowns: one MGET reads a pool."""
        return f"{{{self._prefix}:cool}}#{kind}:{key}"

    def blob_key(self, kind: str, key: str) -> str:
        return f"{{{self._prefix}:{kind}}}:{key}"

    def binding_key(self, key: str) -> str:
        return f"{{{self._prefix}:sticky}}:{key}"

    # cooldowns

    async def cool(self, key: str, until_ms: int, scope: str = "", now_ms: int | None = None) -> int:
        """Extend ``key``'s cooldown for ``scope`` ("" the whole account, else one model) to ``until_ms``
        (epoch ms); never shortens. The deadline in effect, 0 when the key holds ``MAX_SCOPES`` already."""
        keys, args = self._cool_call(key, until_ms, scope, now_ms)
        result = await self._cool(keys=keys, args=args)
        return int(result)

    async def queue_cool(self, pipe: Pipeline, key: str, until_ms: int, scope: str = "",
                         now_ms: int | None = None) -> None:
        """``cool`` queued on a pipeline (its reply comes with the pipeline's)."""
        keys, args = self._cool_call(key, until_ms, scope, now_ms)
        await self._cool(keys=keys, args=args, client=pipe)

    def _cool_call(self, key: str, until_ms: int, scope: str, now_ms: int | None) -> tuple[list[Any], list[Any]]:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return [self.cooldown_key(key)], [scope, int(until_ms), now, MAX_SCOPES]

    async def read_cooldowns(self, keys: Iterable[str]) -> dict[str, dict[str, int]]:
        """Each key's cooldowns by scope (epoch ms; empty when none), in one MGET (none for no keys).
        Deadlines already past may be included (a key expires with its last deadline only)."""
        names = list(keys)
        if not names:
            return {}
        values = await self._client.mget([self.cooldown_key(name) for name in names])
        return {name: parse_cooldowns(value) for name, value in zip(names, values, strict=True)}

    def reset_key(self, key: str) -> str:
        """When ``key``'s cooldowns were last reset (epoch ms): readers drop what they hold of it."""
        return f"{{{self._prefix}:cool}}#reset:{key}"

    async def clear(self, keys: Iterable[str], now_ms: int | None = None) -> None:
        """Forget the cooldowns of ``keys`` and mark when (an operator's reset: the one write allowed
        to shorten one; the mark tells the gateways to drop their own copies). One transaction."""
        names = list(keys)
        if not names:
            return
        now = int(time.time() * 1000) if now_ms is None else now_ms
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(*(self.cooldown_key(name) for name in names))
        for name in names:
            pipe.set(self.reset_key(name), now, px=RESET_MARK_TTL_MS)
        await pipe.execute()

    # bounded blobs (stored conversations, signatures) and sticky bindings

    async def put_blob(self, kind: str, key: str, blob: bytes, ttl_s: float, max_items: int, max_bytes: int,
                       now_ms: int | None = None) -> int:
        """Store ``blob`` under ``kind``/``key`` for ``ttl_s``; the oldest entries of ``kind`` go when
        it holds more than ``max_items`` entries or ``max_bytes`` bytes. The number evicted."""
        return (await self.put_blobs(kind, [(key, blob)], ttl_s, max_items, max_bytes, now_ms))[0]

    async def put_blobs(self, kind: str, items: Sequence[tuple[str, bytes]], ttl_s: float, max_items: int,
                        max_bytes: int, now_ms: int | None = None) -> list[int]:
        """``put_blob`` for each item, in one round trip (a SET and the bookkeeping script each)."""
        tag = f"{{{self._prefix}:{kind}}}"
        books = [f"{tag}#index", f"{tag}#sizes", f"{tag}#bytes"]
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        calls = [([self.blob_key(kind, key), *books], [len(blob), ttl_ms, max_items, max_bytes,
                                                       "" if now_ms is None else now_ms], blob)
                 for key, blob in items]
        for attempt in range(2):  # the script is sent by its digest: after a Redis restart, load it once
            pipe = self._client.pipeline(transaction=False)
            for keys, args, blob in calls:
                pipe.set(keys[0], blob, px=ttl_ms)
                pipe.evalsha(self._index.sha, len(keys), *keys, *args)
            try:
                replies = await pipe.execute()
            except NoScriptError:
                if attempt:
                    raise
                await self._client.script_load(INDEX)
                continue
            return [int(r) for r in replies[1::2]]
        raise AssertionError("unreachable")  # the loop returns or raises

    async def get_blobs(self, kind: str, keys: Iterable[str]) -> list[bytes | None]:
        """The blobs of ``kind`` stored under ``keys`` (None: unknown or expired), in one MGET."""
        names = [self.blob_key(kind, key) for key in keys]
        if not names:
            return []
        return [v if isinstance(v, bytes) else v.encode() if isinstance(v, str) else None
                for v in await self._client.mget(names)]

    async def bind(self, key: str, value: str, ttl_s: float) -> None:
        """Bind a sticky session to an account for ``ttl_s`` (last writer wins)."""
        await self._client.set(self.binding_key(key), value, px=max(1, math.ceil(ttl_s * 1000)))

    async def binding(self, key: str) -> str | None:
        value = await self._client.get(self.binding_key(key))
        return value.decode() if isinstance(value, bytes) else value

    # rate limits (GCRA)

    async def reserve(self, key: str, rate: float, period_s: float, burst: int, cost: int = 1,
                      now_ms: int | None = None) -> Reservation:
        """Take ``cost`` tokens of a limit of ``rate`` per ``period_s`` with bursts up to ``burst``.

        Atomic: the check and the reservation are one script; a denied call changes nothing.
        ``now_ms`` (epoch ms) replaces Redis' clock, for callers that keep their own; mixing both
        clocks on one key is the caller's error.
        """
        if not 0 < cost <= burst:
            raise ValueError(f"rate limit {key!r}: cost {cost} must be in 1..burst ({burst}), else it never fits")
        return await self._run_gcra(key, rate, period_s, burst, cost, now_ms, force=False)

    async def adjust(self, key: str, rate: float, period_s: float, burst: int, delta: int,
                     now_ms: int | None = None) -> Reservation:
        """Correct an earlier reservation by ``delta`` tokens (real use minus the estimate), atomically.

        A positive ``delta`` is charged even past the burst (the tokens were spent; later requests
        wait); a negative one gives tokens back, never more than a full burst.
        """
        return await self._run_gcra(key, rate, period_s, burst, delta, now_ms, force=True)

    async def refund(self, key: str, rate: float, period_s: float, burst: int, tokens: int,
                     now_ms: int | None = None) -> Reservation:
        """Give ``tokens`` back (``adjust`` with ``-tokens``)."""
        return await self.adjust(key, rate, period_s, burst, -tokens, now_ms)

    async def _run_gcra(self, key: str, rate: float, period_s: float, burst: int, cost: int,
                        now_ms: int | None, *, force: bool) -> Reservation:
        if not (rate > 0 and period_s > 0 and burst >= 1):
            raise ValueError(f"rate limit {key!r}: rate, period and burst must be positive")
        interval_us = period_s * _US / rate
        now_arg = "" if now_ms is None else int(now_ms) * 1000
        allowed, remaining, retry_us, reset_us = await self._gcra(
            keys=[self.rate_key(key)],
            args=[repr(interval_us), burst, cost, now_arg, "1" if force else "0"],
        )
        return Reservation(bool(allowed), int(retry_us) / _US, int(remaining), int(reset_us) / _US)

    def limit_key(self, tag: str, cell: str) -> str:
        """A client limit's cell: the cells of one team (or of one key without a team) share a tag,
        so one script can reserve them all on a cluster."""
        return f"{{{self._prefix}:limit:{tag}}}:{cell}"

    async def reserve_all(self, tag: str, cells: Sequence[tuple[str, float, int, int]],
                          now_ms: int | None = None, slots: Sequence[tuple[str, int]] = (), lease: str = "",
                          ttl_s: float = 0.0) -> tuple[int, float, list[tuple[int, float]]]:
        """Reserve ``cost`` in every cell ``(name, interval_s, burst, cost)`` under ``tag`` and take the
        lease ``lease`` for ``ttl_s`` in every concurrency cell ``(name, limit)`` of ``slots``, all or
        none, in one round trip: ``(0, 0.0, [(remaining, reset_after_s) per rate cell])`` when admitted,
        else ``(index of the cell that refuses, its retry_after_s, [])``, 1-based over ``cells`` then
        ``slots`` (a full concurrency cell first, with 0.0; nothing taken)."""
        args: list[str | int] = ["" if now_ms is None else int(now_ms) * 1000, len(cells), lease,
                                 max(1, math.ceil(ttl_s * 1000))]
        for _, interval_s, burst, cost in cells:
            args += [repr(interval_s * _US), burst, cost]
        args += [limit for _, limit in slots]
        keys = [self.limit_key(tag, c[0]) for c in cells] + [self.limit_key(tag, name) for name, _ in slots]
        if self._lane is not None:  # awaited by a request: the lane's connection, not redis-py's pool
            reply = await self._lane.script(GCRA_ALL, self._gcra_all.sha, keys, args)
        else:
            reply = await self._gcra_all(keys=keys, args=args)
        if not int(reply[0]):
            return int(reply[1]), int(reply[2]) / _US, []
        flat = [int(v) for v in reply[1:]]
        return 0, 0.0, [(flat[i], flat[i + 1] / _US) for i in range(0, len(flat), 2)]

    async def renew_leases(self, leases: Mapping[str, Sequence[str]], ttl_s: float,
                           now_ms: int | None = None) -> int:
        """Renew the leases ``{lease set key: members}`` for ``ttl_s`` (those not yet expired), in one
        pipelined round trip; how many were renewed."""
        args = [max(1, math.ceil(ttl_s * 1000)), "" if now_ms is None else int(now_ms)]
        replies = await self._run_many(RENEW, self._renew.sha, [([key], [*args, *members])
                                                               for key, members in leases.items()])
        return sum(int(r) for r in replies)

    async def _run_many(self, source: str, sha: str, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run one script for each ``(keys, args)`` in one pipelined round trip (a script object on a
        pipeline would ask SCRIPT EXISTS first: one more round trip each time)."""
        for attempt in range(2):  # sent by its digest: after a Redis restart (NOSCRIPT), load it once
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt:
                    raise
                await self._client.script_load(source)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def release_leases(self, leases: Mapping[str, Sequence[str]]) -> None:
        """Give the leases ``{lease set key: members}`` back, in one pipelined round trip."""
        pipe = self._client.pipeline(transaction=False)
        for key, members in leases.items():
            pipe.zrem(key, *members)
        await pipe.execute()

    async def adjust_all(self, tag: str, cells: Sequence[tuple[str, float, int, int]]) -> None:
        """Correct each cell ``(name, interval_s, burst, delta)`` of ``reserve_all`` by ``delta`` tokens,
        charged past the burst or given back (``adjust``), in one pipelined round trip."""
        await self.adjust_many({tag: cells})

    async def adjust_many(self, cells_by_tag: Mapping[str, Sequence[tuple[str, float, int, int]]]) -> None:
        """``adjust_all`` for the cells of several tags at once, in one pipelined round trip."""
        await self._run_many(GCRA, self._gcra.sha, [([self.limit_key(tag, name)],
                                                      [repr(interval_s * _US), burst, delta, "", "1"])
                                                     for tag, cells in cells_by_tag.items()
                                                     for name, interval_s, burst, delta in cells])

    # counters

    async def incr_many(self, amounts: Mapping[str, int],
                        ttl_s: float | Mapping[str, float] | None = None) -> dict[str, int]:
        """Add each amount to its counter in one pipelined round trip; the counters' new values.

        ``ttl_s`` (one for all, or per key; a key missing from the mapping keeps no TTL) is set on
        every increment, so a counter lives ``ttl_s`` past its last increment.
        """
        if not amounts:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for key, amount in amounts.items():
            name = self.counter_key(key)
            pipe.incrby(name, amount)
            ttl = ttl_s.get(key) if isinstance(ttl_s, Mapping) else ttl_s
            if ttl is not None:
                pipe.pexpire(name, max(1, math.ceil(ttl * 1000)))
        replies = await pipe.execute()
        return _counter_values(amounts, replies, ttl_s)


def parse_cooldowns(value: object) -> dict[str, int]:
    """A stored cooldown object, read defensively (another writer of the same prefix may be broken)."""
    if not isinstance(value, bytes | str):
        return {}
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): int(v) for k, v in parsed.items() if isinstance(v, int | float)}


def _counter_values(amounts: Mapping[str, int], replies: list[object],
                    ttl_s: float | Mapping[str, float] | None) -> dict[str, int]:
    """Pick each INCRBY's reply out of the pipeline's replies (a PEXPIRE reply follows where a TTL was set)."""
    values: dict[str, int] = {}
    position = 0
    for key in amounts:
        values[key] = int(str(replies[position]))
        ttl = ttl_s.get(key) if isinstance(ttl_s, Mapping) else ttl_s
        position += 1 if ttl is None else 2
    return values

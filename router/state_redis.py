"""State-store primitives on Redis: extend-only cooldowns, a GCRA rate limiter, batched counters.

Not yet wired into the request path (issue 12 plugs them in); these are the building blocks, each one
round trip:

- ``cool`` / ``read_cooldowns``: an account's cooldown deadline (epoch ms). A write never shortens a
  stored deadline (one Lua script compares and extends), so a late or slow writer cannot end a
  cooldown early; a whole pool is read with one MGET.
- ``reserve`` / ``adjust``: a generic cell rate algorithm (GCRA) in one Lua script: check and reserve
  atomically, ``cost`` tokens at a time, no fixed windows (so no double burst at a window edge); a
  denied call reserves nothing. ``adjust`` corrects a reservation afterwards (reserve an estimate,
  then add ``real - estimate``), atomically too.
- ``incr_many``: many counter increments (with an optional TTL) in one pipelined round trip.

Keys are Redis-Cluster-safe. Every key is ``{<prefix>:<kind>...}...``: a script touches one key, so
its keys trivially share a slot; the cooldowns share the hash tag ``{<prefix>:cool}`` (so one MGET can
read a whole pool on a cluster too), as do the counters ``{<prefix>:count}`` (one node per pipeline);
each rate-limit key is its own tag ``{<prefix>:rate:<key>}`` so limits spread over a cluster's nodes.

Clocks. The GCRA script reads Redis ``TIME`` unless the caller passes ``now_ms``: replicas' clocks
drift, and a limiter shared by replicas needs one clock for its theoretical arrival time, else a
replica whose clock runs ahead spends the others' tokens. (Redis 5+ replicates a script's effects,
not the script, so reading TIME before a write is allowed.) Cooldown deadlines come from the caller's
clock instead: they are set from an upstream's ``Retry-After`` as seen by the gateway and read back
by gateways, whose clocks are NTP-close; Redis' clock only decides when the key is dropped.

Scripts are registered once (``register_script``); redis-py's script object sends EVALSHA and on
NOSCRIPT (after ``SCRIPT FLUSH`` or a Redis restart) loads the script again and retries.
Works with Redis 6+ and Valkey (no command newer than Redis 5 is used).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from redis.asyncio import Redis

# KEYS[1] = cooldown key, ARGV[1] = new deadline (epoch ms, integer). Extend only: a stored deadline
# at or past the new one stays as it is. Returns the effective deadline.
_COOL = """
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted <= stored then
  return stored
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return wanted
"""

# GCRA (the cell rate algorithm of ATM networks; as in redis-cell and go-redis/redis_rate), in µs.
# KEYS[1] = the key holding the theoretical arrival time (TAT).
# ARGV: 1 emission interval (µs per token), 2 burst (tokens), 3 cost (tokens, may be negative
# with force), 4 now (µs, or '' for Redis TIME), 5 force ('1': apply without checking: a correction).
# A request of `cost` fits when new_tat - burst * interval <= now. Returns
# {allowed 0/1, remaining tokens, retry_after µs, reset_after µs} (integers: Lua numbers are
# truncated in replies; the TAT is written with %.0f since a plain number is formatted with 14 digits).
_GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[4])
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local new_tat = tat + cost * interval
if new_tat < now then
  new_tat = now
end
local diff = now - (new_tat - burst * interval)
if diff < 0 and ARGV[5] ~= '1' then
  local retry = -diff
  return {0, 0, math.ceil(retry), math.ceil(tat - now)}
end
local reset = new_tat - now
if reset > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(reset / 1000))
else
  redis.call('DEL', KEYS[1])
end
local remaining = 0
if diff > 0 then
  remaining = math.floor(diff / interval)
end
return {1, remaining, 0, math.ceil(reset)}
"""

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

    __slots__ = ("_client", "_cool", "_gcra", "_prefix")

    def __init__(self, client: Redis, prefix: str = "router") -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"state key prefix {prefix!r}: braces would break the keys' hash tags")
        self._client = client
        self._prefix = prefix
        self._cool = client.register_script(_COOL)
        self._gcra = client.register_script(_GCRA)

    # keys: the hash tag (in braces) decides the cluster slot, see the module docstring

    def cooldown_key(self, key: str) -> str:
        return f"{{{self._prefix}:cool}}:{key}"

    def rate_key(self, key: str) -> str:
        return f"{{{self._prefix}:rate:{key}}}"

    def counter_key(self, key: str) -> str:
        return f"{{{self._prefix}:count}}:{key}"

    # cooldowns

    async def cool(self, key: str, until_ms: int) -> int:
        """Extend ``key``'s cooldown to ``until_ms`` (epoch ms); never shortens. The effective deadline."""
        result = await self._cool(keys=[self.cooldown_key(key)], args=[int(until_ms)])
        return int(result)

    async def read_cooldowns(self, keys: Iterable[str]) -> dict[str, int]:
        """Each key's cooldown deadline (epoch ms; 0 when none), in one MGET (none for no keys)."""
        names = list(keys)
        if not names:
            return {}
        values = await self._client.mget([self.cooldown_key(name) for name in names])
        return {name: int(value) if value is not None else 0 for name, value in zip(names, values, strict=True)}

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

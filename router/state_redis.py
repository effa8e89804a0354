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
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

RESET_MARK_TTL_MS = 86_400_000  # a reset mark is read by every gateway's next sync, long before a day
MAX_SCOPES = 64  # cooldowns one account holds at once (itself and per model): bounds each value

# KEYS[1] = an account's cooldowns: a JSON object {scope: deadline epoch ms}, scope "" for the whole
# account, a model name for one model. ARGV: 1 scope, 2 new deadline (epoch ms, integer), 3 now (epoch
# ms: entries past it are dropped), 4 most scopes kept. Extend only: a stored deadline at or past the new
# one stays; a new scope beyond the limit is refused (never by dropping another, which would shorten
# it). The key expires with its last deadline. Returns the deadline in effect for the scope (0: refused).
_COOL = """
local raw = redis.call('GET', KEYS[1])
local stored = {}
if raw then stored = cjson.decode(raw) end
local scope, wanted, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local current = tonumber(stored[scope] or 0)
if wanted <= current then
  return current
end
local kept, n, last = {}, 0, 0
for name, deadline in pairs(stored) do
  if deadline > now and name ~= scope then
    kept[name] = deadline
    n = n + 1
    if deadline > last then last = deadline end
  end
end
if wanted <= now then
  return current
end
if n >= tonumber(ARGV[4]) then
  return 0
end
kept[scope] = wanted
if wanted > last then last = wanted end
redis.call('SET', KEYS[1], cjson.encode(kept))
redis.call('PEXPIREAT', KEYS[1], last)
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

# Bounded blobs (stored Responses, signatures): KEYS 1 the entry, 2 the index (a sorted set of entry
# keys by time written), 3 the sizes (hash entry key -> bytes), 4 the total bytes. ARGV: 1 the blob,
# 2 now (ms), 3 time to live (ms), 4 most entries, 5 most bytes. Oldest entries go first when a bound
# is passed; each call does a bounded amount of work (64 evictions at most, so the bounds may be passed
# briefly after a sudden shrink). Every key of a kind shares one hash tag, so the entries' keys used
# here and not passed in KEYS live in the same cluster slot.
_PUT = """
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local function drop(member)
  local size = tonumber(redis.call('HGET', KEYS[3], member) or '0')
  redis.call('HDEL', KEYS[3], member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('DECRBY', KEYS[4], size)
  redis.call('DEL', member)
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl, 'LIMIT', 0, 64)) do
  drop(member)
end
if redis.call('HEXISTS', KEYS[3], KEYS[1]) == 1 then
  drop(KEYS[1])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], #ARGV[1])
local total = redis.call('INCRBY', KEYS[4], #ARGV[1])
local evicted = 0
while evicted < 64 and (redis.call('ZCARD', KEYS[2]) > tonumber(ARGV[4]) or total > tonumber(ARGV[5])) do
  drop(redis.call('ZRANGE', KEYS[2], 0, 0)[1])
  total = tonumber(redis.call('GET', KEYS[4]) or '0')
  evicted = evicted + 1
end
for i = 2, 4 do
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return evicted
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

    __slots__ = ("_client", "_cool", "_gcra", "_prefix", "_put")

    def __init__(self, client: Redis, prefix: str = "router") -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"state key prefix {prefix!r}: braces would break the keys' hash tags")
        self._client = client
        self._prefix = prefix
        self._cool = client.register_script(_COOL)
        self._gcra = client.register_script(_GCRA)
        self._put = client.register_script(_PUT)

    # keys: the hash tag (in braces) decides the cluster slot, see the module docstring

    def cooldown_key(self, key: str) -> str:
        return f"{{{self._prefix}:cool}}:{key}"

    def rate_key(self, key: str) -> str:
        return f"{{{self._prefix}:rate:{key}}}"

    def counter_key(self, key: str) -> str:
        return f"{{{self._prefix}:count}}:{key}"

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
        keys, args = self._put_call(kind, key, blob, ttl_s, max_items, max_bytes, now_ms)
        return int(await self._put(keys=keys, args=args))

    async def queue_put_blob(self, pipe: Pipeline, kind: str, key: str, blob: bytes, ttl_s: float,
                             max_items: int, max_bytes: int) -> None:
        """``put_blob`` queued on a pipeline."""
        keys, args = self._put_call(kind, key, blob, ttl_s, max_items, max_bytes, None)
        await self._put(keys=keys, args=args, client=pipe)

    def _put_call(self, kind: str, key: str, blob: bytes, ttl_s: float, max_items: int, max_bytes: int,
                  now_ms: int | None) -> tuple[list[Any], list[Any]]:
        tag = f"{{{self._prefix}:{kind}}}"
        now = int(time.time() * 1000) if now_ms is None else now_ms
        keys = [self.blob_key(kind, key), f"{tag}#index", f"{tag}#sizes", f"{tag}#bytes"]
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        return keys, [blob, now, ttl_ms, max_items, max_bytes]

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

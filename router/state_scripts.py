"""The Lua scripts of the Redis state store (``router.state_redis``), each with its contract.

Each runs atomically in Redis; every key a script touches is passed in KEYS or shares a passed key's
hash tag (the same cluster slot). Only commands of Redis 5 and the ``cjson`` library are used.
"""


def _now(arg: str, unit: str) -> str:
    """Lua setting ``now`` to the caller's clock in ``arg``, or Redis ``TIME`` when it is '' (µs or ms)."""
    redis_time = ("tonumber(t[1]) * 1000000 + tonumber(t[2])" if unit == "us"
                  else "tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)")
    return (f"local now\nif {arg} == '' then\n  local t = redis.call('TIME')\n  now = {redis_time}\n"
            f"else\n  now = tonumber({arg})\nend")


# KEYS[1] = an account's cooldowns: a JSON object {scope: deadline epoch ms}, scope "" for the whole
# account, a model name for one model. ARGV: 1 scope, 2 new deadline (epoch ms, integer), 3 now (epoch
# ms: entries past it are dropped), 4 most scopes kept. Extend only: a stored deadline at or past the new
# one stays; a new scope beyond the limit is refused (never by dropping another, which would shorten
# it). The key expires with its last deadline. Returns the deadline in effect for the scope (0: refused).
COOL = """
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
GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
""" + _now("ARGV[4]", "us") + """
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

# Bounded blobs (stored Responses, signatures). The blob itself is a plain SET (Redis copies a large
# string into a script's ARGV, a SET it does not); this script keeps the books, in the same pipeline:
# KEYS 1 the entry, 2 the index (a sorted set of entry keys by time written, Redis' clock), 3 the
# sizes (hash entry key -> bytes), 4 the total bytes. ARGV: 1 the entry's size, 2 time to live (ms),
# 3 most entries, 4 most bytes, 5 now (ms, '' for Redis TIME). Oldest entries go first when a bound
# is passed; each call does a bounded amount of work (64 evictions at most). When the books lost
# entries (Redis evicted some under memory pressure), the total restarts from the entry just written
# rather than evicting it. Every key of a kind shares one hash tag, so the entries' keys used here
# and not passed in KEYS live in the same cluster slot.
INDEX = """
local size, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
""" + _now("ARGV[5]", "ms") + """
local function drop(member)
  local dropped = tonumber(redis.call('HGET', KEYS[3], member) or '0')
  redis.call('HDEL', KEYS[3], member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('DECRBY', KEYS[4], dropped)
  redis.call('DEL', member)
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl, 'LIMIT', 0, 64)) do
  if member ~= KEYS[1] then
    drop(member)
  end
end
local old = tonumber(redis.call('HGET', KEYS[3], KEYS[1]) or '0')
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
local total = redis.call('INCRBY', KEYS[4], size - old)
local evicted = 0
while evicted < 64 and (redis.call('ZCARD', KEYS[2]) > tonumber(ARGV[3]) or total > tonumber(ARGV[4])) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest or oldest == KEYS[1] then
    redis.call('SET', KEYS[4], size)
    break
  end
  drop(oldest)
  total = tonumber(redis.call('GET', KEYS[4]) or '0')
  evicted = evicted + 1
end
for i = 2, 4 do
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return evicted
"""

# A request's admission in one script, all or none: its concurrency cells (a lease in each) and its
# GCRA cells (the script of GCRA over each, in µs). KEYS: the rate cells' TAT keys, then the concurrency
# cells' lease sets (one hash tag, so a cluster runs it on one node). A lease set is a sorted set of
# leases, member "<gateway id>:<sequence>", score its expiry (epoch ms, Redis' clock): the expired are
# dropped before counting, so a crashed gateway's leases free their slots by themselves. ARGV: 1 now
# (µs, or '' for Redis TIME), 2 number of rate cells n, 3 the lease's member, 4 its time to live (ms),
# then per rate cell three values: emission interval (µs per token), burst (tokens), cost (tokens), then
# per concurrency cell its limit. Returns {0, index of the cell that refuses (1-based over KEYS), its
# retry_after µs} when any cell is short (a full concurrency cell first, with 0: the caller decides its
# Retry-After; else the rate cell that waits longest), nothing taken; else {1, then per rate cell:
# remaining tokens, reset_after µs}, the lease added to every lease set.
GCRA_ALL = """
""" + _now("ARGV[1]", "us") + """
local n = tonumber(ARGV[2])
local now_ms = math.floor(now / 1000)
for i = n + 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[4 + 2 * n + i]) then
    return {0, i, 0}
  end
end
local tats = {}
local worst, worst_wait = 0, 0
for i = 1, n do
  local interval = tonumber(ARGV[3 * i + 2])
  local burst = tonumber(ARGV[3 * i + 3])
  local cost = tonumber(ARGV[3 * i + 4])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then
    tat = now
  end
  local new_tat = tat + cost * interval
  local wait = new_tat - burst * interval - now
  if wait > worst_wait then
    worst, worst_wait = i, wait
  end
  tats[i] = new_tat
end
if worst > 0 then
  return {0, worst, math.ceil(worst_wait)}
end
local out = {1}
for i = 1, n do
  local interval = tonumber(ARGV[3 * i + 2])
  local burst = tonumber(ARGV[3 * i + 3])
  local reset = tats[i] - now
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', math.max(1, math.ceil(reset / 1000)))
  out[#out + 1] = math.floor((burst * interval - reset) / interval)
  out[#out + 1] = math.ceil(reset)
end
local ttl = tonumber(ARGV[4])
for i = n + 1, #KEYS do
  redis.call('ZADD', KEYS[i], now_ms + ttl, ARGV[3])
  if redis.call('PTTL', KEYS[i]) < ttl then  -- extend only: another gateway's leases may live longer
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return out
"""

# Leases renewed (their gateway's requests still run): KEYS[1] a concurrency cell's lease set. ARGV: 1
# time to live (ms), 2 now (ms, '' for Redis TIME), then the members. Each one still held expires
# `ttl` from now; one already dropped (it expired) is not taken again. Returns how many were renewed.
RENEW = """
""" + _now("ARGV[2]", "ms") + """
local ttl = tonumber(ARGV[1])
local renewed = 0
for i = 3, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[i])
end
if renewed > 0 and redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return renewed
"""

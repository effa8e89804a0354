"""router/state_redis.py against a real redis-server on a free loopback port (no mocks).

CI installs the Debian package `redis-server` when it is missing (.ci/run); redis-py comes with the
`test` extra.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Connection, ConnectionPool, Redis
from redis.crc import key_slot

from router.state_redis import MAX_SCOPES, RedisState
from tests.redis_server import RedisServer, server_fixture

T0 = 1_800_000_000_000  # an epoch ms for the tests that pass their own clock


server = server_fixture()


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    connection = Redis(host="127.0.0.1", port=server.port)
    await connection.flushall()
    yield connection
    await connection.aclose()


@pytest.fixture
def state(client: Redis) -> RedisState:
    return RedisState(client, prefix="t")


# cooldowns

async def test_cool_extends_and_never_shortens(state: RedisState, client: Redis) -> None:
    far = int(time.time() * 1000) + 60_000
    assert await state.cool("acct", far) == far
    assert await state.cool("acct", far - 30_000) == far  # an earlier deadline changes nothing
    assert await state.cool("acct", far + 5_000) == far + 5_000
    assert orjson.loads(await client.get(state.cooldown_key("acct"))) == {"": far + 5_000}
    assert abs(await client.pexpiretime(state.cooldown_key("acct")) - (far + 5_000)) <= 1  # expires at the deadline


async def test_model_scopes_live_beside_the_account_in_one_value(state: RedisState, client: Redis) -> None:
    far = int(time.time() * 1000) + 60_000
    assert await state.cool("acct", far, scope="gpt-x") == far
    assert await state.cool("acct", far - 10_000) == far - 10_000
    assert await state.cool("acct", far - 20_000, scope="gpt-x") == far  # per scope: still extend-only
    assert await state.read_cooldowns(["acct"]) == {"acct": {"gpt-x": far, "": far - 10_000}}
    # the value expires with its last deadline, not its first
    assert abs(await client.pexpiretime(state.cooldown_key("acct")) - far) <= 1


async def test_scopes_per_account_are_bounded_and_never_shortened_to_fit(state: RedisState) -> None:
    far = int(time.time() * 1000) + 60_000
    for i in range(MAX_SCOPES):
        assert await state.cool("acct", far, scope=f"m{i}") == far
    assert await state.cool("acct", far, scope="one-too-many") == 0  # refused, nothing dropped
    cooldowns = (await state.read_cooldowns(["acct"]))["acct"]
    assert len(cooldowns) == MAX_SCOPES and "one-too-many" not in cooldowns
    assert await state.cool("acct", far + 1, scope="m3") == far + 1  # a known scope still extends


async def test_expired_scopes_are_dropped_on_the_next_write(state: RedisState) -> None:
    await state.cool("acct", T0 + 1_000, scope="old", now_ms=T0)
    await state.cool("acct", T0 + 90_000, now_ms=T0 + 5_000)
    assert await state.read_cooldowns(["acct"]) == {"acct": {"": T0 + 90_000}}


async def test_cool_in_the_past_leaves_nothing(state: RedisState, client: Redis) -> None:
    past = int(time.time() * 1000) - 1_000
    await state.cool("acct", past)
    assert await client.exists(state.cooldown_key("acct")) == 0
    assert await state.read_cooldowns(["acct"]) == {"acct": {}}


async def test_concurrent_writers_keep_the_latest_deadline(state: RedisState, server: RedisServer) -> None:
    base = int(time.time() * 1000) + 60_000
    deadlines = [base + random.randrange(0, 100_000) for _ in range(300)]
    others = [Redis(host="127.0.0.1", port=server.port) for _ in range(3)]
    states = [state, *(RedisState(other, prefix="t") for other in others)]
    try:
        await asyncio.gather(*(states[i % len(states)].cool("acct", d, scope=("", "m")[i % 2])
                               for i, d in enumerate(deadlines)))
        assert await state.read_cooldowns(["acct"]) == {"acct": {"": max(deadlines[0::2]), "m": max(deadlines[1::2])}}
    finally:
        for other in others:
            await other.aclose()


async def test_read_cooldowns_reads_a_pool_in_one_mget(state: RedisState, client: Redis) -> None:
    far = int(time.time() * 1000) + 60_000
    await state.cool("a", far)
    await state.cool("c", far + 1, scope="gpt-x")
    await client.config_resetstat()
    assert await state.read_cooldowns(["a", "b", "c"]) == {"a": {"": far}, "b": {}, "c": {"gpt-x": far + 1}}
    assert await state.read_cooldowns([]) == {}
    stats = await client.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1 and "cmdstat_get" not in stats


async def test_clear_forgets_cooldowns(state: RedisState, client: Redis) -> None:
    far = int(time.time() * 1000) + 60_000
    await state.cool("a", far)
    await state.cool("b", far)
    await state.clear(["a"], now_ms=T0)
    await state.clear([])
    assert await state.read_cooldowns(["a", "b"]) == {"a": {}, "b": {"": far}}
    assert await client.get(state.reset_key("a")) == str(T0).encode()  # the mark gateways drop their copies on
    assert await client.get(state.reset_key("b")) is None


async def test_a_corrupt_cooldown_value_reads_as_none(state: RedisState, client: Redis) -> None:
    await client.set(state.cooldown_key("a"), b"not json")
    await client.set(state.cooldown_key("b"), b"[1, 2]")
    assert await state.read_cooldowns(["a", "b"]) == {"a": {}, "b": {}}


# bounded blobs and sticky bindings

async def test_blobs_round_trip_with_ttl(state: RedisState, client: Redis) -> None:
    await state.put_blob("resp", "k1", b"one", ttl_s=30, max_items=10, max_bytes=1000)
    assert await state.get_blobs("resp", ["k1", "nope"]) == [b"one", None]
    assert await state.get_blobs("sig", ["k1"]) == [None]  # kinds do not share entries
    assert 29_000 < await client.pttl(state.blob_key("resp", "k1")) <= 30_000
    assert await state.get_blobs("resp", []) == []


async def test_blobs_keep_within_items_and_bytes_oldest_first(state: RedisState) -> None:
    for i in range(5):
        await state.put_blob("resp", f"k{i}", b"x" * 10, ttl_s=60, max_items=3, max_bytes=1000, now_ms=T0 + i)
    assert await state.get_blobs("resp", [f"k{i}" for i in range(5)]) == [None, None, b"x" * 10, b"x" * 10, b"x" * 10]
    evicted = await state.put_blob("resp", "big", b"y" * 25, ttl_s=60, max_items=3, max_bytes=40, now_ms=T0 + 9)
    assert evicted == 2  # 10+10+10+25 > 40: the two oldest go
    assert await state.get_blobs("resp", ["k2", "k3", "k4", "big"]) == [None, None, b"x" * 10, b"y" * 25]


async def test_rewriting_a_blob_does_not_count_it_twice(state: RedisState, client: Redis) -> None:
    for _ in range(3):
        await state.put_blob("resp", "same", b"z" * 10, ttl_s=60, max_items=3, max_bytes=15)
    assert await state.get_blobs("resp", ["same"]) == [b"z" * 10]
    assert int(await client.get("{t:resp}#bytes")) == 10


async def test_blob_index_forgets_entries_past_their_ttl(state: RedisState, client: Redis) -> None:
    await state.put_blob("resp", "old", b"o" * 10, ttl_s=1, max_items=10, max_bytes=1000, now_ms=T0)
    await state.put_blob("resp", "new", b"n" * 10, ttl_s=1, max_items=10, max_bytes=1000, now_ms=T0 + 5_000)
    assert await client.zrange("{t:resp}#index", 0, -1) == [state.blob_key("resp", "new").encode()]
    assert int(await client.get("{t:resp}#bytes")) == 10


async def test_sticky_bindings(state: RedisState, client: Redis) -> None:
    assert await state.binding("p:alice") is None
    await state.bind("p:alice", "p/a1", ttl_s=60)
    await state.bind("p:alice", "p/a2", ttl_s=60)  # last writer wins
    assert await state.binding("p:alice") == "p/a2"
    assert 59_000 < await client.pttl(state.binding_key("p:alice")) <= 60_000


# rate limits (GCRA); now_ms makes the schedule exact

async def test_gcra_allows_exactly_the_burst_then_spaces_at_the_rate(state: RedisState) -> None:
    # 10 per second, burst 5: five at once, then one every 100 ms
    results = [await state.reserve("k", 10, 1.0, 5, now_ms=T0) for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert [r.remaining for r in results[:5]] == [4, 3, 2, 1, 0]
    assert results[5].retry_after_s == pytest.approx(0.1)
    assert results[4].reset_after_s == pytest.approx(0.5)
    assert not (await state.reserve("k", 10, 1.0, 5, now_ms=T0 + 99)).allowed
    assert (await state.reserve("k", 10, 1.0, 5, now_ms=T0 + 100)).allowed
    assert not (await state.reserve("k", 10, 1.0, 5, now_ms=T0 + 150)).allowed
    assert (await state.reserve("k", 10, 1.0, 5, now_ms=T0 + 200)).allowed


async def test_gcra_has_no_double_burst_at_a_window_edge(state: RedisState) -> None:
    # a fixed 1 s window would allow 10 at 0.999 s and 10 more at 1.001 s; GCRA refills 10 per second
    edge = T0 + 999
    first = [(await state.reserve("k", 10, 1.0, 10, now_ms=edge)).allowed for _ in range(10)]
    after = [(await state.reserve("k", 10, 1.0, 10, now_ms=edge + 2)).allowed for _ in range(10)]
    assert all(first)
    assert not any(after)
    # over any second, at most burst + rate: a steady caller gets one per 100 ms
    later = [(await state.reserve("k", 10, 1.0, 10, now_ms=edge + 100 * i)).allowed for i in range(1, 11)]
    assert all(later)
    assert not (await state.reserve("k", 10, 1.0, 10, now_ms=edge + 1000)).allowed


async def test_gcra_cost_counts_tokens(state: RedisState) -> None:
    # 1000 tokens per minute, burst 1000
    first = await state.reserve("tpm", 1000, 60, 1000, cost=600, now_ms=T0)
    assert first.allowed and first.remaining == 400
    second = await state.reserve("tpm", 1000, 60, 1000, cost=500, now_ms=T0)
    assert not second.allowed
    assert second.retry_after_s == pytest.approx(6.0)  # 100 tokens at 60 ms each
    assert (await state.reserve("tpm", 1000, 60, 1000, cost=400, now_ms=T0)).allowed
    with pytest.raises(ValueError, match="never fits"):
        await state.reserve("tpm", 1000, 60, 1000, cost=1001)


async def test_a_denied_request_reserves_nothing(state: RedisState, client: Redis) -> None:
    await state.reserve("k", 10, 1.0, 10, cost=8, now_ms=T0)
    before = await client.get(state.rate_key("k"))
    for _ in range(20):
        assert not (await state.reserve("k", 10, 1.0, 10, cost=5, now_ms=T0)).allowed
    assert await client.get(state.rate_key("k")) == before
    assert (await state.reserve("k", 10, 1.0, 10, cost=2, now_ms=T0)).allowed


async def test_adjust_corrects_an_estimate_up_and_down(state: RedisState) -> None:
    # reserve an estimate of 300 tokens, then learn the real use
    await state.reserve("tpm", 1000, 60, 1000, cost=300, now_ms=T0)
    down = await state.adjust("tpm", 1000, 60, 1000, 100 - 300, now_ms=T0)  # used 100
    assert down.remaining == 900
    up = await state.adjust("tpm", 1000, 60, 1000, 1500 - 100, now_ms=T0)  # a second call used 1500 of 100
    assert up.allowed and up.remaining == 0  # charged past the burst: the tokens were spent
    denied = await state.reserve("tpm", 1000, 60, 1000, now_ms=T0)
    assert not denied.allowed
    assert denied.retry_after_s == pytest.approx(30.06)  # the 500-token debt plus one token, at 60 ms each
    back = await state.refund("tpm", 1000, 60, 1000, 10_000, now_ms=T0)
    assert back.remaining == 1000  # never more than a full burst
    assert back.reset_after_s == 0


async def test_gcra_on_redis_time(state: RedisState) -> None:
    results = [await state.reserve("k", 2, 1.0, 3) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert 0.3 < results[3].retry_after_s <= 0.5  # the next token is due 500 ms after the first
    await asyncio.sleep(results[3].retry_after_s + 0.02)
    assert (await state.reserve("k", 2, 1.0, 3)).allowed


async def test_concurrent_reservations_never_overspend(server: RedisServer, client: Redis) -> None:
    clients = [Redis(host="127.0.0.1", port=server.port) for _ in range(4)]  # `client` flushed the keys

    async def spend(state: RedisState) -> int:
        return sum([(await state.reserve("k", 1, 3600, 50, now_ms=T0)).allowed for _ in range(50)])

    try:
        spent = await asyncio.gather(*(spend(RedisState(c, prefix="t")) for c in clients))
        assert sum(spent) == 50
    finally:
        for c in clients:
            await c.aclose()


# counters

def _counting_pool(port: int, sends: list[int]) -> ConnectionPool:
    class CountingConnection(Connection):
        async def send_packed_command(self, command: object, check_health: bool = True) -> None:
            sends.append(1)
            await super().send_packed_command(command, check_health)  # type: ignore[arg-type]

    return ConnectionPool(host="127.0.0.1", port=port, connection_class=CountingConnection)


async def test_incr_many_is_one_round_trip(server: RedisServer, client: Redis) -> None:
    sends: list[int] = []
    counted = Redis(connection_pool=_counting_pool(server.port, sends))
    try:
        await counted.ping()  # connect (the handshake's sends are not the call's)
        await client.config_resetstat()
        sends.clear()
        values = await RedisState(counted, prefix="t").incr_many({"a": 1, "b": 5, "c": -2}, ttl_s=60)
        assert values == {"a": 1, "b": 5, "c": -2}
        assert len(sends) == 1
        stats = await client.info("commandstats")
        assert stats["cmdstat_incrby"]["calls"] == 3
        assert stats["cmdstat_pexpire"]["calls"] == 3
    finally:
        await counted.aclose()


async def test_every_primitive_is_one_round_trip(server: RedisServer, client: Redis) -> None:
    sends: list[int] = []
    counted = Redis(connection_pool=_counting_pool(server.port, sends))
    state = RedisState(counted, prefix="t")
    far = int(time.time() * 1000) + 60_000
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "cool": lambda: state.cool("a", far),
        "read_cooldowns": lambda: state.read_cooldowns(["a", "b", "c"]),
        "reserve": lambda: state.reserve("k", 10, 1.0, 5),
        "adjust": lambda: state.adjust("k", 10, 1.0, 5, -1),
        "put_blob": lambda: state.put_blob("resp", "k", b"v", 60, 10, 100),
        "get_blobs": lambda: state.get_blobs("resp", ["k", "j"]),
        "bind": lambda: state.bind("s", "p/a", 60),
        "binding": lambda: state.binding("s"),
        "clear": lambda: state.clear(["a", "b"]),
    }
    try:
        for call in calls.values():
            await call()  # connect, and load the scripts (NOSCRIPT, SCRIPT LOAD, EVALSHA)
        for name, call in calls.items():
            sends.clear()
            await call()
            assert len(sends) == 1, name
    finally:
        await counted.aclose()


async def test_incr_many_adds_and_sets_ttls_per_key(state: RedisState, client: Redis) -> None:
    await state.incr_many({"a": 2, "b": 3})
    assert await state.incr_many({"a": 1, "b": 1}, ttl_s={"a": 30}) == {"a": 3, "b": 4}
    assert 29_000 < await client.pttl(state.counter_key("a")) <= 30_000
    assert await client.pttl(state.counter_key("b")) == -1  # no TTL asked for b
    assert await state.incr_many({}) == {}


# cluster safety, scripts, restarts

def test_keys_are_cluster_safe() -> None:
    state = RedisState(Redis(), prefix="gw")  # no connection is made
    cool = {key_slot(state.cooldown_key(k).encode()) for k in ("a", "b", "a:model-x", "acct{1}")}
    cool |= {key_slot(state.reset_key(k).encode()) for k in ("a", "b")}  # read in the same MGET
    counters = {key_slot(state.counter_key(k).encode()) for k in ("a", "b", "c")}
    assert len(cool) == 1  # one MGET reads a whole pool on a cluster too
    assert len(counters) == 1  # one pipeline, one node
    blobs = {key_slot(k.encode()) for k in (state.blob_key("resp", "x"), state.blob_key("resp", "y{z}"),
                                             "{gw:resp}#index", "{gw:resp}#sizes", "{gw:resp}#bytes")}
    assert len(blobs) == 1  # the put script's entry, index, sizes and total: one slot
    assert state.rate_key("client-7") == "{gw:rate:client-7}"  # each limit is its own slot: one key per script
    with pytest.raises(ValueError, match="braces"):
        RedisState(Redis(), prefix="a{b}")


async def test_scripts_reload_after_script_flush(state: RedisState, client: Redis) -> None:
    far = int(time.time() * 1000) + 60_000
    await state.cool("a", far)
    await state.reserve("k", 10, 1.0, 5, now_ms=T0)
    await client.script_flush()
    assert await state.cool("a", far + 1) == far + 1
    assert (await state.reserve("k", 10, 1.0, 5, now_ms=T0)).remaining == 3


async def test_survives_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    connection = Redis(host="127.0.0.1", port=server.port)
    try:
        state = RedisState(connection, prefix="t")
        far = int(time.time() * 1000) + 60_000
        await state.cool("a", far)
        await state.reserve("k", 10, 1.0, 5, now_ms=T0)
        server.stop()
        server.start()  # same port, empty (no persistence), no scripts loaded
        assert await state.read_cooldowns(["a"]) == {"a": {}}
        assert await state.cool("a", far) == far
        assert (await state.reserve("k", 10, 1.0, 5, now_ms=T0)).remaining == 4
        assert await state.incr_many({"c": 1}) == {"c": 1}
        await state.put_blob("resp", "k", b"v", 60, 10, 100)  # its script too
    finally:
        await connection.aclose()
        server.stop()


async def test_blob_books_that_lost_entries_heal_instead_of_failing(state: RedisState, client: Redis) -> None:
    await state.put_blob("resp", "a", b"x" * 10, ttl_s=60, max_items=10, max_bytes=100)
    await client.delete("{t:resp}#index")  # as Redis evicting keys under memory pressure may do
    await client.set("{t:resp}#bytes", 999_999_999_999)
    assert await state.put_blob("resp", "b", b"y" * 10, ttl_s=60, max_items=10, max_bytes=100) == 0
    assert await state.get_blobs("resp", ["b"]) == [b"y" * 10]  # the entry just written stays
    assert int(await client.get("{t:resp}#bytes")) == 10  # the total starts again from it
    await state.put_blob("resp", "c", b"z" * 10, ttl_s=60, max_items=10, max_bytes=100)
    assert await state.get_blobs("resp", ["b", "c"]) == [b"y" * 10, b"z" * 10]


async def test_a_blob_is_a_plain_set_the_script_keeps_the_books(state: RedisState, client: Redis) -> None:
    await state.put_blob("resp", "warm", b"w", ttl_s=60, max_items=10, max_bytes=10_000_000)
    await client.config_resetstat()
    big = b"b" * 1_000_000
    await state.put_blob("resp", "big", big, ttl_s=60, max_items=10, max_bytes=10_000_000)
    stats = await client.info("commandstats")
    assert stats["cmdstat_set"]["calls"] == 1 and stats["cmdstat_evalsha"]["calls"] == 1
    assert await state.get_blobs("resp", ["big"]) == [big]

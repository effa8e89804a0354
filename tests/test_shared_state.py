"""router/shared_state.py: two gateways' stores sharing one real redis-server (no mocks), and what
each fault does: down, slow (a stopped process), back again."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from router.accounts import Account, Pool, StateStore
from router.response_store import ResponseStore
from router.shared_state import DOWN_AFTER, SharedState
from router.signature_memory import SignatureMemory
from router.state_settings import StateSettings
from tests.redis_server import RedisServer, server_fixture
from tests.serving import free_port

ACCOUNTS = tuple(Account("p", f"a{i}", f"a{i}@x", f"key{i}") for i in range(3))
POOL = Pool("p", ACCOUNTS, "sticky")


server = server_fixture()


def settings(port: int, **changes: object) -> StateSettings:
    values: dict[str, object] = {"backend": "redis", "url": f"redis://127.0.0.1:{port}/0", "prefix": "t",
                                 "sync_interval": 3600.0}  # the tests call sync() themselves
    values.update(changes)
    return StateSettings(**values)  # type: ignore[arg-type]  # test data of the right types


async def gateway(port: int, **changes: object) -> SharedState:
    shared = SharedState(settings(port, **changes), StateStore(), lambda: [[a.state_key for a in ACCOUNTS]])
    shared.start()
    await shared.sync()
    return shared


@pytest.fixture
async def pair(server: RedisServer) -> AsyncIterator[tuple[SharedState, SharedState]]:
    if server.process is None:
        server.start()
    async with Redis(host="127.0.0.1", port=server.port) as client:
        await client.flushall()
    a, b = await gateway(server.port), await gateway(server.port)
    yield a, b
    await a.close()
    await b.close()


async def settle(shared: SharedState) -> None:
    """Let the background writes finish (they never block a request)."""
    for _ in range(100):
        if not shared._tasks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("background writes did not finish")


async def test_a_cooldown_reaches_the_other_gateway_at_its_next_sync(pair: tuple[SharedState, SharedState]) -> None:
    a, b = pair
    a.store.cool(ACCOUNTS[0], 60, None, "429")
    a.store.cool(ACCOUNTS[1], 30, "gpt-x", "429")
    await settle(a)
    assert b.store.state("p/a0").cooling_for("m", b.store.clock()) == 0.0  # not before it syncs
    await b.sync()
    now = b.store.clock()
    assert b.store.state("p/a0").cooling_for("m", now) == pytest.approx(60, abs=1)
    assert b.store.state("p/a1").cooling_for("gpt-x", now) == pytest.approx(30, abs=1)
    assert b.store.state("p/a1").cooling_for("other", now) == 0.0  # a model cooldown stays per model
    assert POOL.pick(b.store, "m", None, set()).account in (ACCOUNTS[1], ACCOUNTS[2])


async def test_a_shorter_cooldown_never_shortens_a_longer_one(pair: tuple[SharedState, SharedState]) -> None:
    a, b = pair
    a.store.cool(ACCOUNTS[0], 120, None, "429")
    await settle(a)
    b.store.cool(ACCOUNTS[0], 5, None, "429")  # a later, shorter write from the other gateway
    await settle(b)
    await a.sync()
    await b.sync()
    for shared in pair:
        assert shared.store.state("p/a0").cooling_for("m", shared.store.clock()) == pytest.approx(120, abs=1)


async def test_an_operator_reset_reaches_the_other_gateway(pair: tuple[SharedState, SharedState]) -> None:
    a, b = pair
    a.store.cool(ACCOUNTS[0], 60, None, "429")
    await settle(a)
    await b.sync()
    assert b.store.state("p/a0").cooling_for("m", b.store.clock()) > 0
    a.store.reset("p/a0")
    await settle(a)
    await b.sync()
    assert b.store.state("p/a0").cooling_for("m", b.store.clock()) == 0.0


async def test_counts_add_up_over_gateways_in_one_round_trip_per_sync(pair: tuple[SharedState, SharedState]) -> None:
    a, b = pair
    for _ in range(3):
        POOL.pick(a.store, "m", None, set())
    POOL.pick(b.store, "m", None, set())
    a.store.record_failure(ACCOUNTS[0], "timeout")
    await a.sync()
    await b.sync()
    assert sum(r for r, _ in b.totals.values()) == 4 and b.totals["p/a0"][1] == 1
    assert b.synced_at is not None and abs(b.synced_at - time.time()) < 5


async def test_sticky_bindings_are_found_by_the_other_gateway(pair: tuple[SharedState, SharedState]) -> None:
    a, b = pair
    first = POOL.pick(a.store, "m", "alice", set()).account
    await settle(a)
    await b.recall_binding(POOL.session_key("alice"))
    assert POOL.pick(b.store, "m", "alice", set()).account == first


async def test_stored_responses_and_signatures_are_read_through(pair: tuple[SharedState, SharedState]) -> None:
    a, b = pair
    mine, theirs = ResponseStore(10), ResponseStore(10)
    mine.remote, theirs.remote = a, b
    mine.put("k\x00resp_1", "be brief", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    sig_a, sig_b = SignatureMemory(10), SignatureMemory(10)
    sig_a.remote, sig_b.remote = a, b
    sig_a.remember("k", [("call_1", "sig-1")])
    await settle(a)
    assert theirs.get("k\x00resp_1") is None  # not before fetch: get never waits for the network
    await theirs.fetch("k\x00resp_1")
    assert theirs.get("k\x00resp_1") == ("be brief", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    await sig_b.fetch("k", ["call_1", "call_2"])
    assert sig_b.recall("k", "call_1") == "sig-1"
    assert sig_b.recall("other-key", "call_1") is None  # per client key


async def test_redis_down_degrades_to_local_state_and_recovers(
        server: RedisServer, pair: tuple[SharedState, SharedState], caplog: pytest.LogCaptureFixture) -> None:
    a, b = pair
    caplog.set_level(logging.INFO, logger="router.state")
    server.stop()
    for _ in range(3):
        await a.sync()
    assert not a.up
    a.store.cool(ACCOUNTS[2], 60, None, "429")  # still works locally, and is kept to send later
    assert POOL.pick(a.store, "m", None, {"p/a0", "p/a1"}).account is None
    store = ResponseStore(10)
    store.remote = a
    t0 = time.monotonic()
    await store.fetch("k\x00resp_x")  # down: answers at once
    assert time.monotonic() - t0 < 0.05 and store.unavailable
    server.start()  # same port, empty
    await a.sync()
    await b.sync()
    assert a.up and b.store.state("p/a2").cooling_for("m", b.store.clock()) == pytest.approx(60, abs=1)
    downs = [r for r in caplog.records if "unreachable" in r.getMessage()]
    ups = [r for r in caplog.records if "reachable:" in r.getMessage() and "unreachable" not in r.getMessage()]
    assert len(downs) == 1 and len(ups) == 1, [r.getMessage() for r in caplog.records]


async def test_a_stopped_redis_costs_a_few_timeouts_then_nothing(server: RedisServer, tmp_path: Path) -> None:
    if server.process is None:
        server.start()
    shared = await gateway(server.port, timeout=0.05)
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)  # slow as can be: it accepts, never answers
    try:
        waits = []
        for _ in range(DOWN_AFTER + 1):
            t0 = time.monotonic()
            assert await shared.get_blobs("resp", ["x"]) is None
            waits.append(time.monotonic() - t0)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert all(0.04 < w < 0.5 for w in waits[:DOWN_AFTER]), waits  # each bounded by the timeout
    assert waits[-1] < 0.005 and not shared.up  # down: answered at once
    assert await shared.get_blobs("resp", ["x"]) is None  # and stays down until the loop says otherwise
    await shared.sync()
    assert shared.up
    await shared.close()


async def test_a_read_older_than_a_local_cooldown_does_not_undo_it(pair: tuple[SharedState, SharedState]) -> None:
    a, _ = pair
    pools = [[acc.state_key for acc in ACCOUNTS]]
    stale = await a._read_pools(pools)  # a pool read sent before the cooldown below
    a.store.cool(ACCOUNTS[0], 60, None, "429")
    a._adopt(pools, stale)  # its write still in flight
    assert a.store.state("p/a0").cooling_for("m", a.store.clock()) == pytest.approx(60, abs=1)
    await settle(a)
    a._adopt(pools, stale)  # written now, but this read was sent before
    assert a.store.state("p/a0").cooling_for("m", a.store.clock()) == pytest.approx(60, abs=1)
    await a.sync()  # a read sent after the write: the cooldown is Redis' now, and kept
    assert a.store.state("p/a0").cooling_for("m", a.store.clock()) == pytest.approx(60, abs=1)
    assert not a.pending.cooldowns


async def test_a_redis_that_restarted_empty_ends_no_cooldown(
        server: RedisServer, pair: tuple[SharedState, SharedState]) -> None:
    a, b = pair
    a.store.cool(ACCOUNTS[0], 60, "gpt-x", "429")
    await settle(a)
    await b.sync()
    server.stop()
    server.start()  # empty: no persistence
    for shared in pair:
        await shared.sync()
        assert shared.up and shared.store.state("p/a0").cooling_for("gpt-x", shared.store.clock()) > 50


async def test_a_burst_of_cooldowns_is_one_writer(pair: tuple[SharedState, SharedState]) -> None:
    a, b = pair
    for i in range(40):
        a.store.cool(ACCOUNTS[i % 3], 60 + i, f"m{i}", "429")
    assert len(a._tasks) == 1  # one task writes them all, in a few pipelined round trips
    await settle(a)
    await b.sync()
    assert all(b.store.state(f"p/a{i % 3}").cooling_for(f"m{i}", b.store.clock()) > 50 for i in range(40))


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl, as an operator would)."""
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr",
                                                            "server.pem"))
    ext = directory / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=t"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1",
         "-extfile", ext],
    ]
    for step in steps:
        subprocess.run(["openssl", *map(str, step)], check=True, capture_output=True, timeout=60)
    return ca, cert, key


async def test_rediss_speaks_tls_and_checks_the_certificate(tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path)
    tls_port = free_port()
    server = RedisServer(tmp_path, "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file",
                         str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no")
    server.start()
    try:
        trusted = await gateway(0, url=f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}", connect_timeout=2.0,
                                timeout=2.0)
        untrusted = await gateway(0, url=f"rediss://127.0.0.1:{tls_port}/0", connect_timeout=2.0, timeout=2.0)
        assert trusted.up and not untrusted.up  # a server certificate from an unknown CA is refused
        trusted.store.cool(ACCOUNTS[0], 60, None, "429")
        await settle(trusted)
        async with Redis(host="127.0.0.1", port=server.port) as plain:  # the same server, without TLS
            assert await plain.exists(trusted.redis.cooldown_key("p/a0")) == 1
        await trusted.close()
        await untrusted.close()
    finally:
        server.stop()


async def test_writes_made_while_down_are_sent_when_it_is_back(
        server: RedisServer, pair: tuple[SharedState, SharedState]) -> None:
    a, b = pair
    server.stop()
    await a.sync()
    assert not a.up
    mine = ResponseStore(10)
    mine.remote = a
    assert mine.put("k\x00resp_down", None, [{"role": "user", "content": []}]) is None  # nothing to wait for
    POOL.pick(a.store, "m", "carol", set())  # a sticky binding made during the outage
    a.store.reset("p/a1")  # and an operator's reset
    server.start()
    await a.sync()
    await settle(a)
    theirs = ResponseStore(10)
    theirs.remote = b
    await b.sync()
    await theirs.fetch("k\x00resp_down")
    assert theirs.get("k\x00resp_down") is not None
    await b.recall_binding(POOL.session_key("carol"))
    assert b.store.sticky.get(POOL.session_key("carol")) == a.store.sticky[POOL.session_key("carol")]
    assert not a.pending.blobs and not a.pending.bindings and not a.pending.resets


async def test_closing_lets_an_awaited_write_finish_and_is_bounded(server: RedisServer) -> None:
    if server.process is None:
        server.start()
    shared = await gateway(server.port, timeout=0.3)
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        write = shared.put_blobs("resp", [("k", b"v")], 60, 10, 100)
        assert write is not None
        t0 = time.monotonic()
        await shared.close()  # as a reload replacing the backend does, while a response awaits the write
        assert time.monotonic() - t0 < 5
        assert write.done() and not write.cancelled()  # the response gets its answer, not a cancellation
        assert shared.pending.blobs  # and what could not be written is kept (a successor takes it over)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


async def test_a_successor_takes_over_what_was_pending(server: RedisServer, pair: tuple[SharedState, SharedState]
                                                       ) -> None:
    a, _ = pair
    a.pending.keep_blobs("resp", [("k", b"v")], 60, 10, 100)
    a.pending.cool("p/a0", "", int(time.time() * 1000) + 60_000)
    successor = SharedState(settings(server.port, prefix="t2"), a.store, lambda: [[x.state_key for x in ACCOUNTS]])
    successor.start(previous=a)
    assert not a.pending.blobs and successor.pending.blobs and successor.pending.cooldowns
    await successor.sync()
    assert await successor.redis.get_blobs("resp", ["k"]) == [b"v"]
    await successor.close()


async def test_a_refused_command_does_not_mark_the_backend_down(pair: tuple[SharedState, SharedState]) -> None:
    a, _ = pair
    for _ in range(DOWN_AFTER + 2):
        assert await a._guard(a.client.execute_command("NO-SUCH-COMMAND")) is None
    assert a.up and a.healthy

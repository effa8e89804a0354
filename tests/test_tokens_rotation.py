"""Rotated refresh tokens (RFC 6749 section 6, strict: each answer revokes the token it was asked with)
with more than one gateway process on an account, against the simulator's rotating token server: a
refusal another process's rotation explains never disables the account (a real redis-server paused
with SIGSTOP, the lock race, two workers sharing their directory), a grant really revoked still does."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.gateway import Gateway
from router.runner import GatewayRunner
from router.sim import SimServer
from router.worker_dir import WorkerDir
from tests.conftest import Harness
from tests.redis_server import RedisServer, server_fixture
from tests.token_gateway import CHAT, CLIENT_SECRET, age, gateway, refresh_account, write_config

server = server_fixture()


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as s:
        s.oauth.rotate = True
        yield s


@pytest.fixture
async def pair(tmp_path: Path, server: RedisServer, sim: SimServer) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two gateways on one Redis (the default 50 ms command timeout), one refresh-token account."""
    if server.process is None:
        server.start()
    state = f"state: {{backend: redis, url: 'redis://127.0.0.1:{server.port}/0', prefix: rot-{tmp_path.name}}}\n"
    accounts = [refresh_account("alice@example.com", "rt-alice", sim)]
    gateways = [await gateway(tmp_path / name, sim, accounts, state) for name in ("a", "b")]
    yield gateways[0], gateways[1]
    for h in gateways:
        await h.close()


async def _status(h: Harness) -> int:
    return (await h.post_json("/v1/chat/completions", CHAT))[0]


async def _state(h: Harness) -> str:
    return str((await (await h.request("GET", "/admin/accounts")).json())["accounts"][0]["state"])


async def _drop_shared_access(h: Harness) -> None:
    """The shared access token is gone (as after its expiry): the next use refreshes."""
    shared = h.gateway.shared
    assert shared is not None
    keys = [k async for k in shared.client.scan_iter(match="{rot-*:cred:*}:access")]
    if keys:
        await shared.client.delete(*keys)


@contextmanager
def _paused(server: RedisServer, seconds: float) -> Iterator[None]:
    """redis-server stopped (SIGSTOP) for ``seconds``, then continued: every command times out meanwhile."""
    assert server.process is not None
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    handle = asyncio.get_running_loop().call_later(seconds, os.kill, pid, signal.SIGCONT)
    try:
        yield
    finally:
        handle.cancel()
        os.kill(pid, signal.SIGCONT)


async def _rotated_by_b(a: Harness, b: Harness) -> None:
    """a refreshed first (rt-alice -> rt1), then b (rt1 -> rt2): a still holds rt1, which the server revoked."""
    assert await _status(a) == 200
    await _drop_shared_access(a)
    assert await _status(b) == 200
    await _drop_shared_access(a)
    age(a, 7200)
    assert a.gateway.tokens.cells  # a's cell, with rt1 in its source


async def test_a_redis_stall_during_a_refresh_adopts_the_other_gateways_rotation(pair: tuple[Harness, Harness],
                                                                                 sim: SimServer,
                                                                                 server: RedisServer) -> None:
    a, b = pair
    await _rotated_by_b(a, b)
    with _paused(server, 0.3):  # a's read times out: it fetches alone with rt1, refused
        assert await _status(a) == 200  # then reads rt2 once Redis answers again, and retries with it
    assert await _state(a) == "ok" and await _state(b) == "ok"
    assert sim.oauth.requests == {"refresh_token": 4}  # a, b, a refused with rt1, a with rt2
    assert await _status(a) == 200 and await _status(b) == 200


async def test_a_refusal_the_shared_state_cannot_check_is_transient(pair: tuple[Harness, Harness], sim: SimServer,
                                                                    server: RedisServer,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    a, b = pair
    await _rotated_by_b(a, b)
    with _paused(server, 3.0):  # longer than a refusal's check re-reads
        assert await _status(a) == 502
        assert await _state(a) == "ok"  # not disabled on a guess
    failed = [r.getMessage() for r in caplog.records if "token refresh" in r.getMessage()]
    assert len(failed) == 1 and "shared state cannot tell" in failed[0], failed
    assert not [r for r in caplog.records if "disabled:" in r.getMessage()]
    assert not [t for t in ("rt-alice", "sim-rt-", "sim-at-", CLIENT_SECRET) if t in caplog.text]
    for _ in range(60):  # the failure's backoff (1 s), then rt2 from Redis
        if await _status(a) == 200:
            break
        await asyncio.sleep(0.1)
    assert await _state(a) == "ok" and await _status(a) == 200


async def test_the_lock_winner_reads_the_rotation_a_holder_just_released(pair: tuple[Harness, Harness],
                                                                         sim: SimServer,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair
    assert await _status(a) == 200  # rt-alice -> rt1, shared
    await _drop_shared_access(a)
    age(a, 7200)
    shared = a.gateway.shared
    assert shared is not None
    real_set = shared.client.set
    raced: list[int] = []

    async def set_after_b(name: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("nx") and ":cred:" in str(name) and not raced:  # a read rt1, its lock comes late:
            raced.append(await _status(b))  # b refreshed meanwhile (rt1 -> rt2), wrote and released
        return await real_set(name, value, *args, **kwargs)

    monkeypatch.setattr(shared.client, "set", set_after_b)
    assert await _status(a) == 200
    assert raced == [200]
    assert await _state(a) == "ok" and await _state(b) == "ok"
    assert sim.oauth.requests == {"refresh_token": 2}  # a took b's token: no refresh with the revoked rt1


async def test_a_revoked_grant_is_still_disabled_once_with_its_log_line(pair: tuple[Harness, Harness],
                                                                        sim: SimServer,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    a, b = pair
    await _rotated_by_b(a, b)
    age(b, 7200)
    sim.oauth.revoke_all = True  # the user revoked the app: rt2 is dead too
    assert await _status(b) == 502  # b sent rt2, Redis holds rt2: sure
    assert await _status(b) == 503
    assert await _state(b) == "disabled"
    disabled = [r.getMessage() for r in caplog.records if "disabled:" in r.getMessage()]
    assert len(disabled) == 1 and "invalid_grant" in disabled[0]
    assert await _status(a) == 502  # a sent rt1, adopted rt2 from Redis, refused again: sure as well
    assert await _state(a) == "disabled"


# --- --workers N with the memory state: the workers' directory ------------------------------------


async def _worker(config: Path, worker: int, directory: Path) -> Harness:
    gw = Gateway(config, env={}, worker=worker, worker_dir=WorkerDir(directory, worker))
    runner = GatewayRunner(gw)
    await runner.setup()
    from aiohttp import web

    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return Harness(runner, site, gw, config)


@pytest.fixture
async def workers(tmp_path: Path, sim: SimServer) -> AsyncIterator[tuple[Harness, Harness, Path]]:
    directory = tmp_path / "workers"
    directory.mkdir(mode=0o700)
    config = write_config(tmp_path / "c", sim, [refresh_account("alice@example.com", "rt-alice", sim)])
    pair = [await _worker(config, i, directory) for i in (0, 1)]
    yield pair[0], pair[1], directory
    for h in pair:
        await h.close()


def _drop_worker_access(directory: Path) -> None:
    for path in directory.glob("token-*.json"):
        doc = orjson.loads(path.read_bytes())
        doc.pop("access", None)
        path.write_bytes(orjson.dumps(doc))


async def test_two_workers_share_the_rotated_refresh_token_and_one_refresh(workers: tuple[Harness, Harness, Path],
                                                                           sim: SimServer) -> None:
    a, b, directory = workers
    assert await _status(a) == 200  # rt-alice -> rt1
    assert await _status(b) == 200  # a's token, from the directory (before: rt-alice, refused, disabled)
    assert sim.oauth.requests == {"refresh_token": 1}
    for first, second in ((b, a), (a, b)):
        _drop_worker_access(directory)
        age(first, 7200)
        assert await _status(first) == 200  # the latest rotated token, from the directory
        age(second, 7200)
        assert await _status(second) == 200  # first's new token
    assert sim.oauth.requests == {"refresh_token": 3}
    assert await _state(a) == "ok" and await _state(b) == "ok"
    files = sorted(directory.glob("token-*"))
    assert [p.suffix for p in files] == [".json", ".lock"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert not [p for p in files if "alice" in p.name]
    text = files[0].read_text()
    assert "sim-rt-" in text and CLIENT_SECRET not in text  # the refresh token, never the client's secret


async def test_a_worker_with_a_stale_refresh_token_rereads_the_directory_before_disabling(
        workers: tuple[Harness, Harness, Path], sim: SimServer) -> None:
    a, b, directory = workers
    assert await _status(a) == 200
    assert await _status(b) == 200
    _drop_worker_access(directory)
    age(a, 7200)
    assert await _status(a) == 200  # rt1 -> rt2
    cell = next(iter(b.gateway.tokens.cells.values()))
    cell.source.rotate("sim-rt-stale")  # type: ignore[attr-defined]  # as if b had missed a's rotation
    sim.oauth.revoke("sim-rt-stale")
    _drop_worker_access(directory)
    age(b, 7200)
    assert await _status(b) == 200
    assert await _state(b) == "ok"
    sim.oauth.revoke_all = True  # revoked for good: disabled
    _drop_worker_access(directory)
    age(a, 7200)
    assert await _status(a) == 502
    assert await _state(a) == "disabled"


async def test_router_serve_with_two_workers_keeps_a_rotating_account(tmp_path: Path, sim: SimServer) -> None:
    import aiohttp

    from tests.serving import free_port, serve_process, stop, wait_healthy

    sim.oauth.lifetime = 3.0  # refreshed every ~3 s: several rotations, by either worker
    config = write_config(tmp_path / "c", sim, [refresh_account("alice@example.com", "rt-alice", sim)])
    port = free_port()
    proc = serve_process(config, port, "--workers", "2", stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc, timeout=30)
        statuses, workers = [], set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 7.0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            while loop.time() < deadline:  # a new connection each: either worker may take it
                async with s.post(url + "/v1/chat/completions", json=CHAT) as r:
                    statuses.append(r.status)
                async with s.get(url + "/admin/accounts") as r:
                    doc = await r.json()
                    workers.add(doc["worker"])
                    assert doc["accounts"][0]["state"] == "ok", doc
                await asyncio.sleep(0.05)
    finally:
        stop(proc)
    assert workers == {0, 1}
    assert set(statuses) == {200}, statuses
    assert "refresh_token" in sim.oauth.requests and sim.oauth.requests["refresh_token"] >= 3


# --- the check itself, on a store in memory -----------------------------------------------------


class _MemoryStore:
    """A TokenStore in memory: another process's refresh is running (its lock held) until ``finish``."""

    def __init__(self, refresh: str) -> None:
        self.refresh = orjson.dumps({"fp": "fp", "refresh_token": refresh})
        self.holder = True

    def finish(self, refresh: str) -> None:
        self.refresh, self.holder = orjson.dumps({"fp": "fp", "refresh_token": refresh}), False

    async def read(self, key: str) -> tuple[object, object]:
        return None, self.refresh

    async def lock(self, key: str, owner: str, ttl_ms: int) -> bool:
        return not self.holder

    async def unlock(self, key: str, owner: str) -> None:
        return None

    async def locked(self, key: str) -> bool:
        return self.holder

    async def write(self, key: str, access: bytes, ttl_ms: int, refresh: bytes | None) -> None:
        return None


class _Source:
    """Strict rotation at a token server: only ``valid`` is accepted."""

    def __init__(self, refresh_token: str, valid: str) -> None:
        self.refresh_token, self.valid = refresh_token, valid
        self.sent: list[str] = []

    async def fetch(self, http: Any) -> Any:
        from router.credentials import CredentialRevoked, Token

        self.sent.append(self.refresh_token)
        if self.refresh_token != self.valid:
            raise CredentialRevoked("token endpoint refused the grant: invalid_grant")
        return Token("at", 1e12, "rt3")

    def rotate(self, refresh_token: str) -> None:
        self.refresh_token = refresh_token


async def test_a_refusal_during_another_processs_refresh_waits_for_its_rotation() -> None:
    from types import SimpleNamespace

    from router.credentials import CredentialRevoked
    from router.tokens_shared import SharedTokens

    store = _MemoryStore("rt1")  # the other process sent rt1 (revoked by now) and has not written rt2 yet
    source = _Source("rt1", valid="rt2")
    cell = SimpleNamespace(key="p/a", fingerprint="fp", source=source, stale="")
    asyncio.get_running_loop().call_later(0.2, store.finish, "rt2")
    token = await SharedTokens(store)._fetch(cell, None)  # type: ignore[arg-type]  # the fields it reads
    assert token.access_token == "at" and source.sent == ["rt1", "rt2"]
    dead = _Source("rt2", valid="none")  # the store holds the refused token, no refresh running: sure
    cell = SimpleNamespace(key="p/a", fingerprint="fp", source=dead, stale="")
    with pytest.raises(CredentialRevoked):
        await SharedTokens(store)._fetch(cell, None)  # type: ignore[arg-type]  # the fields it reads
    assert dead.sent == ["rt2"]

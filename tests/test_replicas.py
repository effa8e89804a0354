"""Several gateways, one Redis (issue 12, requirement 5): real processes, no mocks.

One ``redis-server``, one ``router sim`` (the upstream both gateways call, so a fault injected for one
account key is seen by whichever gateway uses it next) and two ``router serve`` processes A and B on
the same config dir with ``state: {backend: redis, sync_interval: 1s}``; a ``--workers 2`` gateway
for the last test. Each test fails with ``backend: memory`` (checked by hand when it was written).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import copy_routes
from tests.redis_server import RedisServer
from tests.serving import ROOT, free_port, stop

MODEL = "replica-model"
KEY_A, KEY_B = "upstream-key-a", "upstream-key-b"  # the upstream accounts (the simulator's keys)
EMAIL = {KEY_A: "a@replicas.test", KEY_B: "b@replicas.test"}
ALICE, BOB = "client-alice", "client-bob"  # two client keys: stored Responses are per client key
SYNC = 1.0  # state.sync_interval
HONOURED_WITHIN = 1.5  # a cooldown set through one gateway is honoured by the others by then

EXTRA = """\
providers:
  pool:
    dialect: openai
    base_url: http://127.0.0.1:{sim}
    template: {{default: openai, openai.chat: openai-passthrough}}
    scheduling: round_robin
    accounts: [{{email: {email_a}, api_key: {key_a}}}, {{email: {email_b}, api_key: {key_b}}}]
model_mapping:
  exact: {{{model}: pool/gpt-4o}}
auth:
  api_keys: [{{name: alice, key: {alice}}}, {{name: bob, key: {bob}}}]
"""
# timeout: generous on a shared 2-core machine, where a 50 ms command timeout could mark Redis down
# without a fault (the tests count the up/down transitions)
STATE = "state: {{backend: redis, url: 'redis://127.0.0.1:{port}/0', prefix: {prefix}, sync_interval: 1s, " \
        "timeout: 250ms}}\n"


def make_config(path: Path, sim_port: int, redis_port: int, prefix: str) -> Path:
    config = copy_routes(path)
    server = (config / "00-server.yaml").read_text()
    assert "mode: auto" in server
    (config / "00-server.yaml").write_text(server.replace("mode: auto", "mode: all_except_health"))
    (config / "70-replicas.yaml").write_text(EXTRA.format(
        sim=sim_port, email_a=EMAIL[KEY_A], email_b=EMAIL[KEY_B], key_a=KEY_A, key_b=KEY_B, model=MODEL,
        alice=ALICE, bob=BOB))
    (config / "80-state.yaml").write_text(STATE.format(port=redis_port, prefix=prefix))
    return config


@dataclass
class Process:
    """A child process whose output goes to a file (a pipe nobody reads would stall it)."""

    args: list[str]
    log: Path
    port: int
    proc: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "router", *self.args, "--port", str(self.port)],
                                         cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, path: str, timeout: float = 30.0) -> Process:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                assert time.monotonic() < deadline, f"{self.args} not ready: {self.log.read_text()}"
                time.sleep(0.1)

    def lines(self, text: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if text in line]


@dataclass
class Cluster:
    redis: RedisServer
    sim: Process
    a: Process
    b: Process


def run_cluster(tmp: Path, prefix: str, edit: Callable[[Path], None] | None = None) -> Iterator[Cluster]:
    """One redis-server, one simulator and two gateways on one config dir (``edit`` may change it
    before they start); everything stopped afterwards."""
    redis = RedisServer(tmp)
    redis.start()
    sim = Process(["sim"], tmp / "sim.log", free_port())
    config = make_config(tmp / "routes.d", sim.port, redis.port, prefix)
    if edit is not None:
        edit(config)
    a, b = (Process(["serve", "--config", str(config)], tmp / f"{n}.log", free_port()) for n in "ab")
    try:
        sim.wait_ready("/_sim/faults")
        yield Cluster(redis, sim, a.wait_ready("/healthz"), b.wait_ready("/healthz"))
    finally:
        for p in (a, b, sim):
            stop(p.proc)
        redis.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from run_cluster(tmp_path_factory.mktemp("replicas"), "replicas")


# --- HTTP helpers ------------------------------------------------------------------------------------


class Client:
    """A new connection per request (so a ``--workers`` parent's kernel may pick either worker)."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                             timeout=aiohttp.ClientTimeout(total=10))

    async def send(self, method: str, url: str, body: Any = None, key: str = ALICE) -> tuple[int, Any, Any]:
        async with self.session.request(method, url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
            raw = await r.read()
            return r.status, orjson.loads(raw) if raw.startswith(b"{") or raw.startswith(b"[") else raw, r.headers

    async def chat(self, url: str) -> tuple[int, Any, Any]:
        return await self.send("POST", url + "/v1/chat/completions",
                               {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})

    async def turn(self, url: str, text: str, previous: str | None, key: str = ALICE) -> tuple[int, Any, Any]:
        body = {"model": MODEL, "input": text, **({"previous_response_id": previous} if previous else {})}
        return await self.send("POST", url + "/v1/responses", body, key)

    async def sim_reset(self, sim: Process) -> None:
        assert (await self.send("DELETE", sim.url + "/_sim/faults"))[0] == 200

    async def sim_log(self, sim: Process, field: str) -> list[Any]:
        """``field`` (key, status, body...) of each request the simulator received since its last reset."""
        return [r[field] for r in (await self.send("GET", sim.url + "/_sim/requests"))[1]]

    async def account(self, url: str, key: str) -> dict[str, Any]:
        status, doc, _ = await self.send("GET", url + "/admin/accounts")
        assert status == 200, doc
        return next(a for a in doc["accounts"] if a["email"] == EMAIL[key])

    async def backend_up(self, url: str) -> float:
        _, text, _ = await self.send("GET", url + "/metrics")
        line = next(x for x in text.decode().splitlines() if x.startswith("router_state_backend_up{"))
        return float(line.rsplit(" ", 1)[1])

    async def close(self) -> None:
        await self.session.close()


def assert_not_found(doc: Any, outage: bool | None) -> None:
    """A ``previous_response_id`` that cannot be continued: OpenAI's error shape; ``outage``: whether it
    says the shared state is unreachable (None: either)."""
    assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}, doc
    assert doc["error"]["code"] == "previous_response_not_found" and doc["error"]["param"] == "previous_response_id"
    assert outage is None or ("unreachable" in doc["error"]["message"]) is outage, doc


async def within(seconds: float, check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Poll ``check`` until it holds; the seconds it took (fails past ``seconds``)."""
    t0 = time.monotonic()
    while not await check():
        assert time.monotonic() - t0 < seconds, f"{what}: not within {seconds}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def in_state(c: Client, url: str, key: str, state: str) -> bool:
    return bool((await c.account(url, key))["state"] == state)


async def cool_through(c: Client, sim: Process, url: str, key: str) -> None:
    """One 429 with Retry-After: 60 on ``key``'s account, met by a request through ``url``."""
    await c.sim_reset(sim)
    await c.send("POST", sim.url + "/_sim/faults", {"key": key, "faults": [{"status": 429, "retry_after": 60}]})
    for _ in range(4):  # round robin reaches ``key`` within two requests; each rotates past the 429
        status, doc, _ = await c.chat(url)
        assert status == 200, doc
        if 429 in await c.sim_log(sim, "status"):
            return
    raise AssertionError(f"no request reached {key}: {await c.sim_log(sim, 'key')}")


async def assert_avoided(c: Client, sim: Process, urls: list[str], key: str, n: int = 20) -> None:
    """``n`` requests (spread over ``urls``) never reach ``key``'s account."""
    await c.sim_reset(sim)
    for i in range(n):
        status, doc, headers = await c.chat(urls[i % len(urls)])
        assert status == 200, doc
        assert headers["X-Account-Email"] != EMAIL[key], (i, headers["X-Account-Email"])
    assert key not in await c.sim_log(sim, "key")


# --- 1. cooldowns --------------------------------------------------------------------------------------


async def test_a_cooldown_set_through_one_gateway_is_honoured_by_the_other(cluster: Cluster) -> None:
    c, a, b = Client(), cluster.a.url, cluster.b.url
    try:
        await cool_through(c, cluster.sim, a, KEY_A)
        t0 = time.monotonic()
        await within(HONOURED_WITHIN, lambda: in_state(c, b, KEY_A, "cooling"), "B shows the account cooling")
        assert (await c.account(b, KEY_A))["cooling_until"] > time.time() + 50  # A's Retry-After: 60
        await asyncio.sleep(max(0.0, t0 + HONOURED_WITHIN - time.monotonic()))
        await assert_avoided(c, cluster.sim, [b], KEY_A)
        # an operator's reset through A clears it on B too
        status, doc, _ = await c.send("POST", f"{a}/admin/accounts/{EMAIL[KEY_A]}/reset")
        assert status == 200 and doc["reset"] == ["pool/" + EMAIL[KEY_A]], doc
        await within(HONOURED_WITHIN, lambda: in_state(c, b, KEY_A, "ok"), "B shows it ok after the reset")
        await c.sim_reset(cluster.sim)
        served = {(await c.chat(b))[2]["X-Account-Email"] for _ in range(4)}
        assert served == {EMAIL[KEY_A], EMAIL[KEY_B]}
    finally:
        await c.close()


# --- 2. a Responses chain across replicas ----------------------------------------------------------------


async def test_a_responses_chain_alternates_between_replicas(cluster: Cluster) -> None:
    c, urls = Client(), [cluster.a.url, cluster.b.url]
    try:
        await c.sim_reset(cluster.sim)
        previous = None
        for i in range(10):
            status, doc, _ = await c.turn(urls[i % 2], f"turn {i}", previous)
            assert status == 200, (i, doc)
            previous = doc["id"]
        bodies = await c.sim_log(cluster.sim, "body")
        assert len(bodies) == 10
        for i, body in enumerate(bodies):  # each turn carried the whole history upstream
            users = [m["content"] for m in body["messages"] if m["role"] == "user"]
            assert users == [f"turn {j}" for j in range(i + 1)], (i, users)
            assert [m["role"] for m in body["messages"]].count("assistant") == i
        for url in urls:  # another client key cannot continue it, on either replica
            status, doc, _ = await c.turn(url, "mine now", previous, key=BOB)
            assert status == 404, doc
            assert_not_found(doc, outage=False)
        assert (await c.turn(urls[0], "turn 10", previous))[0] == 200  # while its owner still can
    finally:
        await c.close()


# --- 3. Redis killed under load ----------------------------------------------------------------------------


@dataclass
class Outcome:
    began: float
    ended: float
    status: int
    doc: Any


async def timed(call: Awaitable[tuple[int, Any, Any]]) -> Outcome:
    began = time.monotonic()
    status, doc, _ = await call
    return Outcome(began, time.monotonic(), status, doc)


class Load:
    """Clients sending until ``until``: ``counted`` need nothing from the shared state (chat completions
    and Responses turns without ``previous_response_id``, alternating between the gateways); ``chained``
    continues one conversation alternating between them (a new one after a 404); ``local`` continues
    one on A only."""

    def __init__(self, c: Client, urls: list[str]) -> None:
        self.c, self.urls, self.until = c, urls, float("inf")
        self.counted: list[Outcome] = []
        self.chained: list[Outcome] = []
        self.local: list[Outcome] = []

    async def steady(self, n: int) -> None:
        while time.monotonic() < self.until:
            url = self.urls[n % 2]
            self.counted.append(await timed(self.c.chat(url) if n % 4 < 2 else self.c.turn(url, "hello", None)))
            n += 1

    async def chain(self, out: list[Outcome], alternate: bool) -> None:
        previous, i = None, 0
        while time.monotonic() < self.until:
            outcome = await timed(self.c.turn(self.urls[i % 2 if alternate else 0], f"turn {i}", previous))
            out.append(outcome)
            previous, i = (outcome.doc["id"], i + 1) if outcome.status == 200 else (None, 0)

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(c) for c in [*(self.steady(n) for n in range(4)),
                                                 self.chain(self.chained, True), self.chain(self.local, False)]]


async def kill_and_restart(cluster: Cluster, c: Client, urls: list[str]) -> tuple[float, float, float]:
    """Redis stopped 1.5 s into the load, started again 2.5 s later on the same port: (when it was
    stopped, when it was started, when both gateways said it was up again)."""
    await asyncio.sleep(1.5)
    killed = time.monotonic()
    cluster.redis.stop()

    async def both(up: float) -> bool:
        return all([await c.backend_up(url) == up for url in urls])

    await within(3.0, lambda: both(0.0), "router_state_backend_up 0 on both")
    await asyncio.sleep(max(0.0, killed + 2.5 - time.monotonic()))
    back = time.monotonic()
    cluster.redis.start()
    await within(2 * SYNC, lambda: both(1.0), "router_state_backend_up 1 again on both")
    return killed, back, time.monotonic()


def check_outcomes(load: Load, killed: float, back: float, up: float) -> None:
    failed = [(o.status, o.doc) for o in load.counted + load.local if o.status != 200]
    assert not failed, failed
    assert len([o for o in load.counted if killed < o.began and o.ended < back]) >= 20, "no load in the outage"
    assert {o.status for o in load.chained} <= {200, 404}
    for o in load.chained:
        if o.status == 404:  # its conversation was stored by the other gateway: a clean 4xx, never a 5xx
            assert o.ended > killed, "a chained turn failed before the outage"
            assert_not_found(o.doc, outage=True if o.ended < back else None)  # after: either, per gateway
    assert [o for o in load.chained if killed < o.began and o.ended < back and o.status == 404]
    # after it: only a conversation stored during the outage (in one gateway's memory) is not found
    assert len([o for o in load.chained if o.began > up and o.status == 404]) <= 1


async def test_redis_killed_under_load_fails_no_request_and_sharing_resumes(cluster: Cluster) -> None:
    c, urls = Client(), [cluster.a.url, cluster.b.url]
    load = Load(c, urls)
    try:
        tasks = load.start()
        try:
            killed, back, up = await kill_and_restart(cluster, c, urls)
            await asyncio.sleep(1.0)
        finally:
            load.until = time.monotonic()
            await asyncio.gather(*tasks)
        check_outcomes(load, killed, back, up)
        for gateway in (cluster.a, cluster.b):  # one line per transition, not one per request
            assert len(gateway.lines("unreachable (")) == 1, gateway.lines("router.state")
            assert len(gateway.lines("reachable: sharing")) == 2, gateway.lines("router.state")  # start-up, back
        # sharing resumed: a new cooldown through A reaches B
        await cool_through(c, cluster.sim, urls[0], KEY_B)
        await within(HONOURED_WITHIN, lambda: in_state(c, urls[1], KEY_B, "cooling"), "B: the new cooldown")
        await assert_avoided(c, cluster.sim, [urls[1]], KEY_B)
        assert (await c.send("POST", f"{urls[0]}/admin/accounts/{EMAIL[KEY_B]}/reset"))[0] == 200
    finally:
        await c.close()
        if cluster.redis.process is None:  # stopped by a failure above: the next test needs it
            cluster.redis.start()


# --- 4. --workers 2 ---------------------------------------------------------------------------------------


async def each_worker(c: Client, url: str, check: Callable[[dict[str, Any]], bool], seconds: float) -> None:
    """Until both workers (each answers /admin/accounts for itself) have answered so that ``check`` holds."""
    seen: set[int] = set()

    async def both() -> bool:
        status, doc, _ = await c.send("GET", url + "/admin/accounts")
        assert status == 200, doc
        if check(doc):
            seen.add(doc["worker"])
        return seen == {0, 1}

    await within(seconds, both, "both workers show it")


def served_by_workers(log: str, path: str) -> set[int]:
    return {orjson.loads(line.split("  ", 1)[1])["worker"] for line in log.splitlines()
            if f"router.access: POST {path} 200" in line}


async def test_two_workers_share_stored_responses_and_cooldowns(cluster: Cluster, tmp_path: Path) -> None:
    config = make_config(tmp_path / "routes.d", cluster.sim.port, cluster.redis.port, "workers")
    gateway = Process(["serve", "--config", str(config), "--workers", "2"], tmp_path / "workers.log", free_port())
    c, url = Client(), gateway.url
    try:
        gateway.wait_ready("/healthz")
        await each_worker(c, url, lambda doc: True, 15.0)
        await c.sim_reset(cluster.sim)
        previous = None
        for i in range(31):  # 30 follow-ups, each on a new connection: either worker may take it
            status, doc, _ = await c.turn(url, f"turn {i}", previous)
            assert status == 200, (i, doc)
            previous = doc["id"]
        bodies = await c.sim_log(cluster.sim, "body")
        assert [len([m for m in body["messages"] if m["role"] == "user"]) for body in bodies] == list(range(1, 32))

        await cool_through(c, cluster.sim, url, KEY_A)
        t0 = time.monotonic()
        await each_worker(c, url, lambda doc: any(a["email"] == EMAIL[KEY_A] and a["state"] == "cooling"
                                                  for a in doc["accounts"]), HONOURED_WITHIN)
        await asyncio.sleep(max(0.0, t0 + HONOURED_WITHIN - time.monotonic()))
        await assert_avoided(c, cluster.sim, [url], KEY_A)
        await asyncio.sleep(0.6)  # the access log is written every 0.5 s
        log = gateway.log.read_text()
        assert served_by_workers(log, "/v1/responses") == {0, 1}  # the chain did cross between workers
        assert served_by_workers(log, "/v1/chat/completions") == {0, 1}
    finally:
        await c.close()
        stop(gateway.proc)

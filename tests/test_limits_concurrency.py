"""A concurrency limit across gateways (``state: {backend: redis}``): two ``router serve`` processes
share one key's ``concurrency: 2`` in front of a slow simulator. At most 2 requests are ever in flight
at the simulator, the rest get a 429 with Retry-After, also after ``lease_ttl`` (the long requests'
leases are renewed), new requests are admitted once the slow ones end, and the leases of a gateway
killed mid-request free their slots within ``lease_ttl``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving import free_port, stop
from tests.test_replicas import BOB, Client, Cluster, Process, run_cluster, within

CAROL = "client-carol"
CONCURRENCY = 2
LEASE_TTL = 3.0  # state.lease_ttl (sync_interval 1s)
SLOW = 6.0  # seconds the simulator takes to answer: longer than LEASE_TTL, so only renewals keep a lease


def limit_carol(config: Path) -> None:
    extra, state = config / "70-replicas.yaml", config / "80-state.yaml"
    bob = f"{{name: bob, key: {BOB}}}"
    assert bob in extra.read_text() and "timeout: 250ms}" in state.read_text()
    extra.write_text(extra.read_text().replace(
        bob, f"{bob}, {{name: carol, key: {CAROL}, limits: {{concurrency: {CONCURRENCY}}}}}"))
    state.write_text(state.read_text().replace("timeout: 250ms}", f"timeout: 250ms, lease_ttl: {LEASE_TTL:g}s}}"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from run_cluster(tmp_path_factory.mktemp("concurrency"), "concurrency", limit_carol)


async def chat(c: Client, url: str) -> tuple[int, Any, Any]:
    return await c.send("POST", url + "/v1/chat/completions",
                        {"model": "replica-model", "messages": [{"role": "user", "content": "hi"}]}, key=CAROL)


async def slow_upstream(c: Client, cluster: Cluster) -> None:
    await c.sim_reset(cluster.sim)
    status, _, _ = await c.send("POST", cluster.sim.url + "/_sim/faults", {"key": "*", "faults": [
        {"kind": "slow_first_byte", "delay": SLOW, "times": -1}]})
    assert status == 200


async def in_flight(c: Client, cluster: Cluster) -> int:
    """Requests the simulator received and has not answered yet."""
    return sum(1 for status in await c.sim_log(cluster.sim, "status") if status is None)


def assert_refused(answer: tuple[int, Any, Any]) -> None:
    status, doc, headers = answer
    assert status == 429, answer
    assert f"key 'carol' concurrency limit ({CONCURRENCY} requests in flight)" in doc["error"]["message"]
    assert headers["Retry-After"] == "1"


async def test_a_concurrency_limit_holds_across_two_gateways(cluster: Cluster) -> None:
    c = Client()
    try:
        await slow_upstream(c, cluster)
        t0 = time.monotonic()
        burst = asyncio.ensure_future(asyncio.gather(*(chat(c, url) for url in [cluster.a.url, cluster.b.url] * 3)))
        peak, probes = 0, []
        while not burst.done():
            peak = max(peak, await in_flight(c, cluster))
            if not probes and time.monotonic() - t0 > LEASE_TTL + 1:  # the admitted still run: renewed leases
                probes = [await chat(c, url) for url in (cluster.a.url, cluster.b.url)]
            await asyncio.sleep(0.05)
        answers = burst.result()
        statuses = [status for status, _, _ in answers]
        assert statuses.count(200) == CONCURRENCY and statuses.count(429) == 6 - CONCURRENCY, statuses
        assert peak == CONCURRENCY and len(await c.sim_log(cluster.sim, "status")) == CONCURRENCY
        assert time.monotonic() - t0 >= SLOW
        for answer in [a for a in answers if a[0] == 429] + probes:
            assert_refused(answer)
        await c.sim_reset(cluster.sim)  # fast again: the slow ones ended, their slots are free for anyone

        async def both_admitted() -> bool:
            return [s for s, _, _ in await asyncio.gather(chat(c, cluster.a.url), chat(c, cluster.b.url))] == [200, 200]

        await within(2.0, both_admitted, "new requests admitted after the slow ones ended")
    finally:
        await c.close()


async def test_a_killed_gateways_leases_expire(cluster: Cluster, tmp_path: Path) -> None:
    config = cluster.a.args[cluster.a.args.index("--config") + 1]
    gone = await asyncio.to_thread(lambda: Process(["serve", "--config", config], tmp_path / "c.log",
                                                   free_port()).wait_ready("/healthz"))
    c = Client()
    try:
        await slow_upstream(c, cluster)
        held = [asyncio.ensure_future(chat(c, gone.url)) for _ in range(CONCURRENCY)]

        async def both_upstream() -> bool:
            return await in_flight(c, cluster) == CONCURRENCY

        await within(5.0, both_upstream, "the killed gateway's requests at the simulator")
        gone.proc.kill()  # no release, no more renewals
        killed = time.monotonic()
        await asyncio.gather(*held, return_exceptions=True)
        await c.sim_reset(cluster.sim)
        assert_refused(await chat(c, cluster.a.url))  # its leases still count

        async def admitted() -> bool:
            return (await chat(c, cluster.a.url))[0] == 200

        await within(LEASE_TTL + 3, admitted, "the killed gateway's slots free")
        assert time.monotonic() - killed >= LEASE_TTL / 3  # freed by expiry (one renewal a sync at most), not at once
    finally:
        await c.close()
        stop(gone.proc)

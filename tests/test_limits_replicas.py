"""Client limits across gateways (``state: {backend: redis}``): an rpm limit holds across two
``router serve`` processes sharing one redis-server (the sum admitted in a burst never exceeds it);
with Redis unreachable, ``state.limits_when_down`` picks per-process limits (open) or a 503 (closed)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import start_gateway
from tests.serving import free_port
from tests.test_replicas import ALICE, BOB, Client, Cluster, run_cluster

RPM = 5


def limit_alice(config: Path) -> None:
    extra = config / "70-replicas.yaml"
    text = extra.read_text()
    assert f"{{name: alice, key: {ALICE}}}" in text
    extra.write_text(text.replace(f"{{name: alice, key: {ALICE}}}",
                                  f"{{name: alice, key: {ALICE}, limits: {{rpm: {RPM}}}}}"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from run_cluster(tmp_path_factory.mktemp("limits"), "limits", limit_alice)


async def test_an_rpm_limit_holds_across_two_gateways(cluster: Cluster) -> None:
    c = Client()
    try:
        burst = await asyncio.gather(*(c.chat(url) for url in [cluster.a.url, cluster.b.url] * 6))
        statuses = [status for status, _, _ in burst]
        assert statuses.count(200) == RPM and statuses.count(429) == 2 * 6 - RPM, statuses
        refused = next(doc for status, doc, _ in burst if status == 429)
        assert "key 'alice' rpm limit" in refused["error"]["message"]
        admitted = [headers for status, _, headers in burst if status == 200]
        assert sorted(int(h["x-ratelimit-remaining-requests"]) for h in admitted) == list(range(RPM))
        assert all(status == 200 for status, _, _ in [await c.send("POST", cluster.b.url + "/v1/chat/completions", {
            "model": "replica-model", "messages": [{"role": "user", "content": "hi"}]}, key=BOB)])
    finally:
        await c.close()


@pytest.mark.parametrize(("when_down", "status"), [("open", 200), ("closed", 503)])
async def test_limits_when_redis_is_unreachable(tmp_path: Path, config_dir: Path, when_down: str,
                                                status: int) -> None:
    (config_dir / "00-server.yaml").write_text(
        'auth:\n  mode: strict\n  api_keys:\n    - {name: k, key: sk-k, limits: {rpm: 1}}\n'
        f"state: {{backend: redis, url: 'redis://127.0.0.1:{free_port()}/0', limits_when_down: {when_down}}}\n")
    h = await start_gateway(config_dir)
    try:
        async def chat() -> tuple[int, object, object]:
            return await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": [
                {"role": "user", "content": "hi"}]}, headers={"Authorization": "Bearer sk-k"})

        first, doc, _ = await chat()
        assert first == status, doc
        if when_down == "open":
            assert (await chat())[0] == 429  # held to the per-process limiter
        else:
            assert "limits_when_down: closed" in doc["error"]["message"]  # type: ignore[index]
    finally:
        await h.close()


@pytest.mark.parametrize(("when_down", "status"), [("open", 200), ("closed", 503)])
async def test_a_concurrency_limit_when_redis_is_unreachable(tmp_path: Path, config_dir: Path, when_down: str,
                                                             status: int) -> None:
    (config_dir / "00-server.yaml").write_text(
        'auth:\n  mode: strict\n  api_keys:\n    - {name: k, key: sk-k, limits: {concurrency: 1}}\n'
        f"state: {{backend: redis, url: 'redis://127.0.0.1:{free_port()}/0', limits_when_down: {when_down}}}\n")
    h = await start_gateway(config_dir)
    try:
        for _ in range(2):  # open: the per-process count, given back when each ends
            code, doc, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": [
                {"role": "user", "content": "hi"}]}, headers={"Authorization": "Bearer sk-k"})
            assert code == status, doc
        assert not h.runner.dispatcher.engine.limiter.inflight()
    finally:
        await h.close()

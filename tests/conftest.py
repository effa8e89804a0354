"""Shared fixtures: a gateway on loopback serving a copy of the shipped routes.d through the simulator."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from router.gateway import Gateway
from router.runner import GatewayRunner

ROOT = Path(__file__).resolve().parent.parent
ROUTES = ROOT / "routes.d"


# A minimal valid config (one provider, template and route), for tests of loading and validation.
MINIMAL_CONFIG = """\
providers:
  p:
    dialect: openai
    base_url: http://up.example
    template: t
    accounts: [{email: a@x, api_key: k}]
templates:
  t: {url: "{{ provider.base_url }}/v1/chat", body: {model: "{{ model }}"}}
routes:
  - {path: /v1/chat/completions, methods: [POST], handler: openai.chat}
"""

# Fast retries, so fault tests spend their time on the faults, not on waits.
FAST_RETRY = """
retry_policies:
  default:
    max_attempts: 3
    max_wait: 5s
    rules:
      - {on: [429], rotate: true, wait: retry_after, cooldown: retry_after}
      - {on: [500, 502, 504, connect_error, timeout, reset, malformed], rotate: true, wait: 10ms}
      - {on: [503, 529], rotate: false, backoff: {initial: 10ms, factor: 2, max: 50ms}}
"""


class Harness:
    """A running gateway (real TCP on 127.0.0.1) plus handles on its config dir and simulator."""

    def __init__(self, runner: GatewayRunner, site: web.TCPSite, gateway: Gateway, config_dir: Path):
        self.runner = runner
        self.site = site
        self.gateway = gateway
        self.config_dir = config_dir
        self.session = aiohttp.ClientSession()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    @property
    def sim_url(self) -> str:
        return self.gateway.sim.url

    async def request(self, method: str, path: str, **kw: Any) -> aiohttp.ClientResponse:
        return await self.session.request(method, self.url + path, **kw)

    async def post_json(self, path: str, body: Any, **kw: Any) -> tuple[int, Any, Any]:
        async with self.session.post(self.url + path, json=body, **kw) as r:
            data = await r.read()
            try:
                doc = await r.json(content_type=None)
            except ValueError:
                doc = data
            return r.status, doc, r.headers

    async def faults(self, key: str, *faults: dict[str, Any]) -> None:
        async with self.session.post(self.sim_url + "/_sim/faults", json={"key": key, "faults": list(faults)}) as r:
            assert r.status == 200, await r.text()

    async def sim_requests(self) -> list[dict[str, Any]]:
        async with self.session.get(self.sim_url + "/_sim/requests") as r:
            return await r.json()

    async def sim_reset(self) -> None:
        async with self.session.delete(self.sim_url + "/_sim/faults") as r:
            assert r.status == 200

    async def close(self) -> None:
        await self.session.close()
        await self.runner.cleanup()


def copy_routes(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in ROUTES.glob("*.yaml"):
        shutil.copy(f, dst / f.name)
    return dst


async def start_gateway(config_dir: Path, env: dict[str, str] | None = None, watch: bool = False,
                        sim_options: dict[str, Any] | None = None) -> Harness:
    gateway = Gateway(config_dir, env=env if env is not None else {}, sim_options=sim_options)
    runner = GatewayRunner(gateway, watch=watch)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return Harness(runner, site, gateway, config_dir)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return copy_routes(tmp_path / "routes.d")


@pytest.fixture
async def gw(config_dir: Path) -> AsyncIterator[Harness]:
    h = await start_gateway(config_dir)
    try:
        yield h
    finally:
        await h.close()

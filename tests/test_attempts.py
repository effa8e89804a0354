"""The attempt loop on its own: a scripted transport instead of an upstream (no network).

It is the one place that retries: these tests drive it through pick → attempt → record → decide →
cool → rotate → wait and check what it leaves in the exchange and the state store.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import web

from router.accounts import Account, StateStore
from router.attempts import AttemptLoop
from router.errors import GatewayError
from router.exchange import Exchange
from router.failures import UpstreamFailure
from router.registry import template_filters
from router.snapshot import Provider, Snapshot, build
from tests.conftest import FAST_RETRY

CONFIG = """\
providers:
  p:
    dialect: openai
    base_url: http://up.example
    template: t
    accounts:
      - {email: a@x, api_key: ka}
      - {email: b@x, api_key: kb}
      - {email: c@x, api_key: kc}
templates:
  t: {url: "{{ provider.base_url }}/v1/chat", body: {model: "{{ model }}"}}
routes:
  - {path: /v1/chat/completions, methods: [POST], handler: openai.chat}
""" + FAST_RETRY

Result = web.StreamResponse | UpstreamFailure


class Script:
    """A transport answering each attempt with the next scripted result; it keeps who was tried."""

    def __init__(self, *results: Result) -> None:
        self.results = list(results)
        self.tried: list[str] = []

    async def __call__(self, x: Exchange, provider: Provider, account: Account, request: web.BaseRequest
                       ) -> Result:
        self.tried.append(account.email)
        return self.results.pop(0)


@pytest.fixture
def snap(tmp_path: Path) -> Snapshot:
    (tmp_path / "config.yaml").write_text(CONFIG)
    return build(tmp_path, 1, template_filters(), env={})[0]


def _key(snap: Snapshot, index: int) -> str:
    """The state-store key of the provider's account number ``index``."""
    provider = snap.provider("p")
    assert provider is not None
    return provider.pool.accounts[index].state_key


async def _run(snap: Snapshot, store: StateStore, script: Script) -> tuple[Exchange, web.StreamResponse]:
    x = Exchange("rid", snap, None, time.monotonic())
    x.upstream_model = "m"
    provider = snap.provider("p")
    assert provider is not None
    x.provider = provider
    resp = await AttemptLoop(store, script).run(x, provider, None, None)  # type: ignore[arg-type]  # unused
    return x, resp


async def test_rate_limited_account_rests_and_the_next_one_answers(snap: Snapshot) -> None:
    store = StateStore()
    script = Script(UpstreamFailure(429, "slow down", retry_after=30.0), web.Response(status=200))
    x, resp = await _run(snap, store, script)
    assert resp.status == 200
    assert script.tried == ["a@x", "b@x"]  # rotated, no wait (the next account need not wait)
    assert [a.outcome for a in x.attempts] == [429, 200]
    assert store.state(_key(snap, 0)).cooling_for("m", store.clock()) > 25  # the upstream's Retry-After


async def test_last_failure_goes_out_after_max_attempts(snap: Snapshot) -> None:
    store = StateStore()
    script = Script(*(UpstreamFailure(500, f"boom {i}") for i in range(3)))
    with pytest.raises(GatewayError) as e:
        await _run(snap, store, script)
    assert e.value.status == 500 and e.value.message == "boom 2"
    assert script.tried == ["a@x", "b@x", "c@x"]  # each failure rotates to an account not tried yet
    assert [f[1] for f in store.state(_key(snap, 2)).failures] == ["500"]  # counted, not cooled


async def test_overloaded_account_is_retried_in_place(snap: Snapshot) -> None:
    script = Script(UpstreamFailure(503, "busy"), web.Response(status=200))
    x, _ = await _run(snap, StateStore(), script)
    assert script.tried == ["a@x", "a@x"]  # rotate: false
    assert x.attempt == 2


async def test_every_account_resting_is_a_rate_limit_before_any_attempt(snap: Snapshot) -> None:
    store = StateStore()
    provider = snap.provider("p")
    assert provider is not None
    for account in provider.pool.accounts:
        store.cool(account, 60.0, None, "429")
    script = Script()
    with pytest.raises(GatewayError) as e:
        await _run(snap, store, script)
    assert e.value.kind == "rate_limit" and e.value.retry_after is not None and e.value.retry_after > 50
    assert script.tried == []


async def test_a_transport_bug_is_not_an_attempt_failure(snap: Snapshot) -> None:
    """What the transport raises (a gateway bug) goes to the error boundary: not recorded, not retried."""

    async def broken(x: Exchange, provider: Provider, account: Account, request: web.BaseRequest) -> Result:
        raise ValueError("encoder bug")

    store = StateStore()
    x = Exchange("rid", snap, None, time.monotonic())
    x.upstream_model = "m"
    provider = snap.provider("p")
    assert provider is not None
    with pytest.raises(ValueError, match="encoder bug"):
        await AttemptLoop(store, broken).run(x, provider, None, None)  # type: ignore[arg-type]  # unused
    assert x.attempts == [] and x.attempt == 1
    assert not store.state(_key(snap, 0)).failures

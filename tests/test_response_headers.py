"""Templated response headers: rendered per request, or once per (models, provider, account) when
the template reads nothing else (the snapshot's header cache)."""

from __future__ import annotations

from pathlib import Path

from router.exchange import HEADER_CACHE_MAX
from tests.conftest import start_gateway

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


async def test_shipped_headers_are_cached_per_model_and_account(config_dir: Path) -> None:
    h = await start_gateway(config_dir)
    try:
        combos, ids = set(), set()
        for model in ("gpt-4o", "gpt-4o", "gpt-4o", "gpt-4o", "gemini-2.5-pro", "gemini-2.5-pro"):
            status, _, headers = await h.post_json("/v1/chat/completions", {**CHAT, "model": model})
            assert status == 200 and headers["X-Mapped-Model"] and headers["X-Account-Email"]
            combos.add((model, headers["X-Mapped-Model"], headers["X-Account-Email"]))
            ids.add(headers["X-Request-Id"])
        assert len(ids) == 6  # the request id is never cached
        assert len(combos) < 6  # the pool has fewer accounts than requests: combinations repeat
        cache = h.gateway.current.header_cache
        assert {(k[1], k[0], v["X-Account-Email"]) for k, v in cache.items()} == combos
    finally:
        await h.close()


async def test_headers_reading_per_request_values_are_rendered_every_time(config_dir: Path) -> None:
    (config_dir / "60-headers.yaml").write_text(
        "response_headers:\n  X-Echo-Id: 'id-{{ request_id }}'\n  X-Model: '{{ upstream_model }}'\n"
        "  X-Attempts: '{{ attempts }}'\n")
    h = await start_gateway(config_dir)
    try:
        seen = set()
        for _ in range(3):
            status, _, headers = await h.post_json("/v1/chat/completions", CHAT)
            assert status == 200 and headers["X-Model"] and headers["X-Attempts"] == "1"
            assert headers["X-Echo-Id"] == "id-" + headers["X-Request-Id"]
            seen.add(headers["X-Echo-Id"])
        assert len(seen) == 3 and h.gateway.current.header_cache == {}
    finally:
        await h.close()


async def test_the_cache_is_bounded_and_starts_over_with_each_snapshot(config_dir: Path) -> None:
    h = await start_gateway(config_dir)
    try:
        snap = h.gateway.current
        snap.header_cache.update({(f"m{i}", None, 0, 0): {} for i in range(HEADER_CACHE_MAX)})
        status, _, headers = await h.post_json("/v1/chat/completions", CHAT)
        assert status == 200 and headers["X-Mapped-Model"]
        assert len(snap.header_cache) == 1  # full: cleared, then the new entry
        assert await h.gateway.reload("test")
        assert h.gateway.current.header_cache == {}
    finally:
        await h.close()

"""Hot reload under a running server: file edits, bad edits, bursts, symlink swaps, SIGHUP."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import ROUTES, Harness, start_gateway

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
MAPPING = "model_mapping:\n  exact:\n    gpt-4o: {target}\n  default: gemini/gemini-2.5-flash\n"


async def mapped(h: Harness) -> str:
    status, doc, headers = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 200, doc
    return headers["X-Mapped-Model"]


async def eventually(pred: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await pred():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def live(config_dir: Path):
    (config_dir / "00-server.yaml").write_text("server: {reload_debounce: 150ms}\n")
    h = await start_gateway(config_dir, watch=True)
    await asyncio.sleep(0.3)  # let the watcher start
    try:
        yield h
    finally:
        await h.close()


async def test_valid_edit_applies_and_invalid_edit_keeps_old_config(live: Harness) -> None:
    h = live
    assert await mapped(h) == "gemini-2.5-flash"
    (h.config_dir / "20-mapping.yaml").write_text(MAPPING.format(target="gemini/gemini-2.5-pro"))

    async def applied() -> bool:
        return await mapped(h) == "gemini-2.5-pro"

    await eventually(applied)
    gen = h.gateway.generation
    # an invalid edit: unknown provider in a mapping target, on line 3
    (h.config_dir / "20-mapping.yaml").write_text(MAPPING.format(target="nowhere/x"))

    async def rejected() -> bool:
        return h.gateway.last_error is not None and h.gateway.last_error.at > 0

    await eventually(rejected)
    assert h.gateway.generation == gen
    assert await mapped(h) == "gemini-2.5-pro"  # old snapshot still serving
    status = await (await h.request("GET", "/admin/config")).json()
    err = status["last_error"]["errors"][0]
    assert err["file"] == "20-mapping.yaml" and err["line"] == 3
    assert err["pointer"] == "/model_mapping/exact/gpt-4o" and "unknown provider 'nowhere'" in err["message"]
    assert status["generation"] == gen
    # a syntax error is rejected too, and the fix is picked up
    (h.config_dir / "20-mapping.yaml").write_text("model_mapping: {exact: [\n")
    await eventually(lambda: _async(h.gateway.reloads_failed >= 2))
    assert await mapped(h) == "gemini-2.5-pro"
    (h.config_dir / "20-mapping.yaml").write_text(MAPPING.format(target="gemini/gemini-2.0-flash"))

    async def fixed() -> bool:
        return await mapped(h) == "gemini-2.0-flash"

    await eventually(fixed)


async def _async(value: bool) -> bool:
    return value


async def test_burst_of_writes_is_one_reload(live: Harness) -> None:
    h = live
    gen = h.gateway.generation
    for i in range(5):
        (h.config_dir / f"7{i}-extra.yaml").write_text(f"response_headers: {{X-Extra-{i}: '{i}'}}\n")
    await eventually(lambda: _async(h.gateway.generation > gen))
    await asyncio.sleep(0.6)
    assert h.gateway.generation == gen + 1
    _, _, headers = await h.post_json("/v1/chat/completions", CHAT)
    assert [headers.get(f"X-Extra-{i}") for i in range(5)] == ["0", "1", "2", "3", "4"]


async def test_route_and_auth_edits_apply_without_restart(live: Harness) -> None:
    h = live
    assert (await h.request("GET", "/v1/alias-models")).status == 404
    (h.config_dir / "35-alias.yaml").write_text(
        "routes:\n  - {path: /v1/alias-models, methods: [GET], handler: models.list}\n")
    await eventually(lambda: _status_is(h, "/v1/alias-models", 200))
    (h.config_dir / "00-server.yaml").write_text(
        "server: {reload_debounce: 150ms}\nauth: {mode: strict, api_keys: [{name: k, key: sk-live}]}\n")
    await eventually(lambda: _status_is(h, "/v1/alias-models", 401))
    r = await h.request("GET", "/v1/alias-models", headers={"Authorization": "Bearer sk-live"})
    assert r.status == 200


async def _status_is(h: Harness, path: str, status: int) -> bool:
    r = await h.request("GET", path)
    r.release()
    return r.status == status


async def test_kubernetes_symlink_swap(tmp_path: Path) -> None:
    """A ConfigMap volume: files are symlinks through ..data, swapped atomically by rename."""
    root = tmp_path / "cm"
    root.mkdir()
    v1, v2 = root / "..v1", root / "..v2"
    shutil.copytree(ROUTES, v1)
    shutil.copytree(ROUTES, v2)
    (v1 / "00-server.yaml").write_text("server: {reload_debounce: 150ms}\n")
    (v2 / "00-server.yaml").write_text("server: {reload_debounce: 150ms}\n")
    (v2 / "20-mapping.yaml").write_text(MAPPING.format(target="gemini/gemini-swapped"))
    os.symlink("..v1", root / "..data")
    for f in v1.glob("*.yaml"):
        os.symlink(f"..data/{f.name}", root / f.name)
    h = await start_gateway(root, watch=True)
    try:
        await asyncio.sleep(0.3)
        assert await mapped(h) == "gemini-2.5-flash"
        os.symlink("..v2", root / "..data_tmp")
        os.replace(root / "..data_tmp", root / "..data")

        async def swapped() -> bool:
            return await mapped(h) == "gemini-swapped"

        await eventually(swapped)
    finally:
        await h.close()


async def test_sighup_forces_reload(live: Harness) -> None:
    gen = live.gateway.generation
    os.kill(os.getpid(), signal.SIGHUP)
    await eventually(lambda: _async(live.gateway.generation == gen + 1))
    assert live.gateway.last_reload is not None and live.gateway.last_reload.reason == "sighup"


async def test_admin_reload_endpoint(gw: Harness) -> None:
    (gw.config_dir / "20-mapping.yaml").write_text(MAPPING.format(target="gemini/gemini-admin"))
    r = await gw.request("POST", "/admin/reload")
    body = await r.json()
    assert r.status == 200 and body["reloaded"] is True and body["generation"] == 2
    assert await mapped(gw) == "gemini-admin"
    (gw.config_dir / "20-mapping.yaml").write_text("model_mapping: 12\n")
    r = await gw.request("POST", "/admin/reload")
    body = await r.json()
    assert r.status == 422 and body["reloaded"] is False and body["generation"] == 2
    assert body["last_error"]["errors"][0]["text"].startswith("20-mapping.yaml:1:")


async def test_in_flight_stream_finishes_on_its_snapshot(config_dir: Path) -> None:
    h = await start_gateway(config_dir, sim_options={"chunks": 8, "chunk_delay": 0.1})
    try:
        body = {**CHAT, "stream": True}
        async with h.session.post(h.url + "/v1/chat/completions", json=body) as r:
            assert r.headers["X-Mapped-Model"] == "gemini-2.5-flash"
            first = await r.content.readline()
            assert first.startswith(b"data: ")
            (config_dir / "20-mapping.yaml").write_text(MAPPING.format(target="gemini/gemini-new"))
            assert await h.gateway.reload("test")
            rest = await r.content.read()
        assert rest.rstrip().endswith(b"data: [DONE]")
        assert rest.count(b'"content"') >= 7  # the whole stream arrived
        assert await mapped(h) == "gemini-new"
    finally:
        await h.close()


async def test_cooldown_survives_reload(gw: Harness) -> None:
    snap = gw.gateway.current
    acc = snap.providers["simulator"].pool.accounts[0]
    gw.gateway.store.cool(acc, 60, None, "429")
    assert await gw.gateway.reload("test")
    assert gw.gateway.current is not snap
    new_acc = gw.gateway.current.providers["simulator"].pool.accounts[0]
    assert gw.gateway.store.state(new_acc.state_key).cooling_for("m", gw.gateway.store.clock()) > 50
    # every request now goes to the other account
    for _ in range(3):
        _, _, headers = await gw.post_json("/v1/chat/completions", CHAT)
        assert headers["X-Account-Email"] == "sim-b@simulator.local"


@pytest.mark.parametrize(("remove", "why"), [
    ("*.yaml", "no config files (*.yaml, *.yml) in"),
    ("30-routes.yaml", "no routes: the gateway would answer nothing"),
], ids=["all-files", "routes-file"])
async def test_files_that_disappear_keep_the_old_config_serving(live: Harness, remove: str, why: str) -> None:
    """A half-applied ConfigMap, an rsync --delete, a branch switch: the reload is rejected (by the file
    watcher and by POST /admin/reload) and the previous snapshot keeps serving."""
    h = live
    gen = h.gateway.generation
    saved = {f.name: f.read_text() for f in h.config_dir.glob(remove)}
    assert saved
    for name in saved:
        (h.config_dir / name).unlink()
    await eventually(lambda: _async(h.gateway.reloads_failed >= 1))  # the watcher's reload
    r = await h.request("POST", "/admin/reload")
    body = await r.json()
    assert r.status == 422 and body["reloaded"] is False and body["generation"] == gen
    assert any(why in e["message"] for e in body["last_error"]["errors"]), body["last_error"]
    health = await h.request("GET", "/healthz")
    assert health.status == 200 and (await health.json())["config_generation"] == gen
    assert await mapped(h) == "gemini-2.5-flash"  # the routes still answer
    status = await (await h.request("GET", "/admin/config")).json()
    assert status["generation"] == gen and len(status["routes"]) > 5
    assert any(why in e["text"] for e in status["last_error"]["errors"])
    assert h.gateway.generation == gen
    for name, text in saved.items():  # the files come back: the next reload applies them
        (h.config_dir / name).write_text(text)
    await eventually(lambda: _async(h.gateway.generation > gen))
    assert await mapped(h) == "gemini-2.5-flash"


async def test_config_dir_removed_and_recreated(live: Harness) -> None:
    """A branch switch or deploy that removes the whole dir: rejected while it is gone, and the
    re-created dir is watched again (its files are loaded without a SIGHUP)."""
    h = live
    gen = h.gateway.generation
    saved = {f.name: f.read_text() for f in h.config_dir.glob("*.yaml")}
    shutil.rmtree(h.config_dir)
    await eventually(lambda: _async(h.gateway.reloads_failed >= 1))
    assert "config directory not found" in h.gateway.last_error.errors[0].message  # type: ignore[union-attr]
    health = await h.request("GET", "/healthz")
    assert health.status == 200 and (await health.json())["config_generation"] == gen
    assert await mapped(h) == "gemini-2.5-flash"
    h.config_dir.mkdir()
    for name, text in saved.items():
        (h.config_dir / name).write_text(text.replace("gemini/gemini-2.5-flash", "gemini/gemini-recreated")
                                         if name == "20-mapping.yaml" else text)

    async def recreated() -> bool:
        return await mapped(h) == "gemini-recreated"

    await eventually(recreated)
    (h.config_dir / "20-mapping.yaml").write_text(MAPPING.format(target="gemini/gemini-watched-again"))

    async def watched() -> bool:
        return await mapped(h) == "gemini-watched-again"

    await eventually(watched)

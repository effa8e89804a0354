"""Reload under load: thousands of requests while the config is rewritten, valid and invalid in turn.

No request may fail because of a reload, and every answer must come from one complete, valid snapshot.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from router.sim.replies import FILLER
from tests.conftest import Harness, start_gateway

REQUESTS = 3000
CONCURRENCY = 32
WRITES = 20
INITIAL_TARGET = "gemini-2.5-flash"
MAPPING = "model_mapping:\n  exact:\n    gpt-4o: {target}\n  default: gemini/gemini-2.5-flash\n"
BROKEN_YAML = "model_mapping: {exact: [\n"


def atomic_write(path: Path, text: str, scratch: Path) -> None:
    """Write next to nothing the watcher sees, then rename in: the gateway never reads a torn file."""
    tmp = scratch / (path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Load:
    """Runs the request mix and records every inconsistency it sees."""

    def __init__(self, h: Harness, written: set[str]):
        self.h = h
        self.written = written  # valid mapping targets written so far (only grows)
        self.done = 0
        self.problems: list[str] = []  # the first 20, with ``failed`` counting them all
        self.failed = 0
        self.targets: Counter[str] = Counter()
        self.streams = 0

    def problem(self, i: int, text: str) -> None:
        self.failed += 1
        if len(self.problems) < 20:
            self.problems.append(f"request {i}: {text}")

    async def one(self, i: int) -> None:
        stream = i % 2 == 1
        prompt = f"hello number {i}"
        expected = f"Echo: {prompt} {FILLER}"
        body = {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": prompt}]}
        async with self.h.session.post(self.h.url + "/v1/chat/completions", json=body) as r:
            raw = await r.read()
            status, mapped = r.status, r.headers.get("X-Mapped-Model")
        allowed = {INITIAL_TARGET, *self.written}  # read after the answer: nothing newer may appear
        if status != 200:
            self.problem(i, f"status {status}: {raw[:300]!r}")
            return
        if mapped not in allowed:
            self.problem(i, f"X-Mapped-Model {mapped!r} is not a valid target written so far")
        else:
            self.targets[mapped] += 1
        text = self.stream_text(i, raw) if stream else orjson.loads(raw)["choices"][0]["message"]["content"]
        if stream:
            self.streams += 1
        if text is not None and text != expected:
            self.problem(i, f"incomplete text {text!r}")

    def stream_text(self, i: int, raw: bytes) -> str | None:
        frames = [f for f in raw.decode().split("\n\n") if f.strip()]
        if not frames or frames[-1].strip() != "data: [DONE]":
            self.problem(i, f"stream does not end with data: [DONE]: {raw[-200:]!r}")
            return None
        parts = []
        for frame in frames[:-1]:
            assert frame.startswith("data: "), frame
            doc = orjson.loads(frame[len("data: "):])
            if "error" in doc:
                self.problem(i, f"error frame {frame[:200]}")
                return None
            for choice in doc.get("choices") or ():
                parts.append((choice.get("delta") or {}).get("content") or "")
        return "".join(parts)

    async def run(self) -> None:
        indices = iter(range(REQUESTS))

        async def worker() -> None:
            for i in indices:
                try:
                    await self.one(i)
                except Exception as e:  # noqa: BLE001 - a transport failure is a failed request too
                    self.problem(i, f"{type(e).__name__}: {e}")
                self.done += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def _until(pred: Any, timeout: float, what: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.005)


async def rewrite(h: Harness, load: Load, scratch: Path) -> tuple[int, int, int]:
    """WRITES config rewrites spread over the run, valid and invalid in turn.

    Pairs of writes alternate between the two triggers: the file watcher alone, and a direct
    ``gateway.reload()`` right after the write (the watcher then reloads the same files once more).
    Each write waits until every reload it causes has finished, so the counts are exact.
    Returns (valid writes applied, expected successful reloads, expected failed reloads).
    """
    gw = h.gateway
    every = REQUESTS // (WRITES + 1)
    applied = want_ok = want_failed = 0
    for i in range(WRITES):
        due = (i + 1) * every
        await _until(lambda due=due: load.done >= due, 60, f"{due} requests")
        valid = i % 2 == 0
        direct = (i // 2) % 2 == 1
        if valid:
            target = f"gemini-gen-{i}"
            load.written.add(target)  # before the write: a response may carry it from now on
            text = MAPPING.format(target=f"gemini/{target}")
        elif i % 4 == 1:
            text = BROKEN_YAML
        else:
            text = MAPPING.format(target=f"nowhere/gemini-bad-{i}")  # unknown provider
        reloads = 2 if direct else 1
        if valid:
            want_ok += reloads
        else:
            want_failed += reloads
        atomic_write(h.config_dir / "20-mapping.yaml", text, scratch)
        if direct:
            assert await gw.reload("load") is valid
        # an extra reload for one write would overshoot these counts and time out here
        want = (1 + want_ok, want_failed)
        await _until(lambda want=want: (gw.reloads_ok, gw.reloads_failed) == want, 10,
                     lambda i=i, want=want: f"the reload(s) of write {i}: want (ok, failed) = {want}, "
                                            f"have {(gw.reloads_ok, gw.reloads_failed)}")
        assert gw.last_reload is not None and gw.last_reload.ok is valid, (i, gw.last_reload)
        if valid:
            applied += 1
            resolved = gw.current.mapper.resolve("gpt-4o")
            assert resolved is not None and resolved.model == f"gemini-gen-{i}"
        else:
            assert gw.last_error is not None and gw.last_error.errors
            assert any(e.file.endswith("20-mapping.yaml") for e in gw.last_error.errors), gw.last_error
    return applied, want_ok, want_failed


async def test_reload_under_load(tmp_path: Path, config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text("server: {reload_debounce: 50ms}\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    h = await start_gateway(config_dir, watch=True)
    try:
        await asyncio.sleep(0.3)  # let the watcher start
        gw = h.gateway
        assert (gw.reloads_ok, gw.reloads_failed) == (1, 0)
        load = Load(h, set())
        writer = asyncio.create_task(rewrite(h, load, scratch))
        await load.run()
        applied, want_ok, want_failed = await asyncio.wait_for(writer, 30)
        await asyncio.sleep(0.3)  # a stray extra reload for one write would show up by now

        assert load.failed == 0, f"{load.failed} failed request(s):\n" + "\n".join(load.problems)
        assert load.done == REQUESTS and load.streams == REQUESTS // 2
        assert applied == WRITES // 2
        # every valid write was applied by each of its reloads, every invalid one counted as failed
        assert gw.reloads_ok - 1 == want_ok == applied + WRITES // 4
        assert gw.reloads_failed == want_failed == WRITES // 2 + WRITES // 4
        # the load really ran across reloads: several snapshots answered it
        assert len(load.targets) >= 3, load.targets
        # the last valid write (the last write was invalid) is what serves now
        status, doc, headers = await h.post_json(
            "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200, doc
        assert headers["X-Mapped-Model"] == f"gemini-gen-{WRITES - 2}"
    finally:
        await h.close()


SIM_STICKY = """
providers:
  gemini:
    dialect: gemini
    base_url: "https://generativelanguage.googleapis.com"
    template: gemini
    accounts: [{email: gemini-key-1, api_key: ""}]
    fallback: simulator
  simulator:
    dialect: gemini
    base_url: builtin:simulator
    template: gemini
    scheduling: sticky
    accounts:
      - {email: sim-a@simulator.local, api_key: sim-key-a}
      - {email: sim-b@simulator.local, api_key: sim-key-b}
      - {email: sim-c@simulator.local, api_key: sim-key-c}
  sim-openai:
    dialect: openai
    base_url: builtin:simulator
    template: openai
    accounts: [{email: sim-openai@simulator.local, api_key: sim-key-openai}]
  sim-anthropic:
    dialect: anthropic
    base_url: builtin:simulator
    template: anthropic
    accounts: [{email: sim-anthropic@simulator.local, api_key: sim-key-anthropic}]
  openai:
    dialect: openai
    base_url: "https://api.openai.com"
    template: openai
    accounts: [{email: openai-key-1, api_key: ""}]
    fallback: sim-openai
  anthropic:
    dialect: anthropic
    base_url: "https://api.anthropic.com"
    template: anthropic
    accounts: [{email: anthropic-key-1, api_key: ""}]
    fallback: sim-anthropic
"""


async def test_concurrent_clients_on_one_sticky_session_stay_on_one_account(config_dir: Path) -> None:
    (config_dir / "10-providers.yaml").write_text(SIM_STICKY)
    h = await start_gateway(config_dir)
    try:
        async def one(session: str, i: int) -> str:
            body = {"model": "gpt-4o", "stream": i % 2 == 1, "messages": [{"role": "user", "content": "hi"}]}
            async with h.session.post(h.url + "/v1/chat/completions", json=body,
                                      headers={"x-session-id": session}) as r:
                await r.read()
                assert r.status == 200
                return r.headers["X-Account-Email"]

        same = await asyncio.gather(*(one("one-session", i) for i in range(64)))
        assert len(set(same)) == 1, Counter(same)
        seen = await h.sim_requests()
        assert len(seen) == 64 and len({r["key"] for r in seen}) == 1
        # a second wave on the same session, interleaved with other sessions, still stays put
        mixed = await asyncio.gather(*(one("one-session" if i % 2 else f"other-{i}", i) for i in range(64)))
        assert {e for i, e in enumerate(mixed) if i % 2} == set(same)
        others = {e for i, e in enumerate(mixed) if i % 2 == 0}
        assert len(others | set(same)) == 3, others  # different sessions spread over the whole pool
    finally:
        await h.close()

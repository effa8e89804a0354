"""SIGTERM with requests in flight: they get ``server.shutdown_grace`` to finish; then open streams
end with their dialect's error event, other requests get a 503 in their dialect, and the process
exits within grace + 1 s, logging what it drained and what it cut."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest

from router.endpoints import Endpoint
from router.sim import SimServer
from tests.conftest import start_gateway
from tests.serving import free_port, serve_process, stop, wait_healthy

GRACE = 1.5
HI = [{"role": "user", "content": "hi"}]


class Hang:
    """An upstream that takes requests and never answers them."""

    def __init__(self) -> None:
        self.received = asyncio.Event()
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        self.received.set()
        await self.release.wait()
        writer.close()

    async def __aenter__(self) -> Hang:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release.set()
        assert self.server is not None
        self.server.close()


def _config(cfg: Path, sim: str, hang: str, grace: float) -> None:
    """Streams last ~30 s (300 chunks 0.1 s apart); model "quick" answers after 0.3 s; "hangs" never."""
    gemini_url = ("{{ provider.base_url }}/v1beta/models/{{ model }}:"
                  "{{ 'streamGenerateContent' if stream else 'generateContent' }}")
    cfg.mkdir()
    (cfg / "gateway.yaml").write_text(json.dumps({
        "server": {"shutdown_grace": f"{grace}s"},
        "providers": {
            "slow": {"dialect": "gemini", "base_url": sim, "template": "slow",
                     "accounts": [{"email": "s", "api_key": "k"}]},
            "quick": {"dialect": "gemini", "base_url": sim, "template": "quick",
                      "accounts": [{"email": "q", "api_key": "k"}]},
            "hang": {"dialect": "openai", "base_url": hang, "template": "openai",
                     "accounts": [{"email": "h", "api_key": "k"}]},
        },
        "model_mapping": {"default": "slow/gemini-2.5-flash",
                          "exact": {"quick": "quick/gemini-2.5-flash", "hangs": "hang/m"}},
        "routes": [{"path": "/v1/chat/completions", "methods": ["POST"], "handler": "openai.chat"},
                   {"path": "/v1/messages", "methods": ["POST"], "handler": "anthropic.messages"},
                   {"path": "/healthz", "handler": "health"}],
        "templates": {
            "slow": {"url": gemini_url, "query": {"alt": "{{ 'sse' if stream else none }}"},
                     "headers": {"x-goog-api-key": "{{ account.api_key }}", "x-sim-chunks": "300",
                                 "x-sim-chunk-delay": "0.1"},
                     "body": {"contents": "{{ request.messages | gemini_contents }}"}},
            "quick": {"url": gemini_url, "headers": {"x-goog-api-key": "{{ account.api_key }}",
                                                     "x-sim-latency": "0.3"},
                      "body": {"contents": "{{ request.messages | gemini_contents }}"}},
            "openai": {"url": "{{ provider.base_url }}/v1/chat/completions",
                       "headers": {"Authorization": "Bearer {{ account.api_key }}"},
                       "body": {"model": "{{ model }}", "messages": "{{ request.messages | openai_messages }}"}},
        },
    }))


@pytest.fixture(params=[GRACE])
async def gateway(tmp_path: Path, request: pytest.FixtureRequest
                  ) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, Hang]]:
    """``router serve`` in a subprocess, with ``server.shutdown_grace`` the fixture's param."""
    async with SimServer(port=0) as sim, Hang() as hang:
        _config(tmp_path / "cfg", sim.url, hang.url, request.param)
        port = free_port()
        proc = serve_process(tmp_path / "cfg", port)
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(url, proc)
            yield proc, url, hang
        finally:
            stop(proc, timeout=0)


async def _first_bytes(s: aiohttp.ClientSession, url: str, path: str, body: dict[str, Any]
                       ) -> aiohttp.ClientResponse:
    r = await s.post(url + path, json=body)
    assert r.status == 200
    assert await asyncio.wait_for(r.content.readline(), 10)  # the stream is flowing
    return r


async def test_sigterm_cuts_what_outlasts_the_grace(gateway: tuple[subprocess.Popen[bytes], str, Hang]) -> None:
    proc, url, hang = gateway
    async with aiohttp.ClientSession() as s:
        chat = await _first_bytes(s, url, "/v1/chat/completions", {"model": "m", "messages": HI, "stream": True})
        claude = await _first_bytes(s, url, "/v1/messages",
                                    {"model": "m", "max_tokens": 50, "messages": HI, "stream": True})
        hung = asyncio.create_task(s.post(url + "/v1/chat/completions", json={"model": "hangs", "messages": HI}))
        await asyncio.wait_for(hang.received.wait(), 10)
        quick = asyncio.create_task(s.post(url + "/v1/messages",
                                           json={"model": "quick", "max_tokens": 50, "messages": HI}))
        await asyncio.sleep(0.1)  # in flight, answered 0.3 s after it arrived: within the grace
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        rest = await asyncio.wait_for(chat.content.read(), 10)
        cut_after = time.monotonic() - signalled
        assert GRACE - 0.3 < cut_after < GRACE + 1, cut_after  # streamed on through the grace, then cut
        assert rest.count(b'"content"') >= 5
        events = [line for line in rest.split(b"\n\n") if line.strip()]
        error = json.loads(events[-2].removeprefix(b"data: "))
        assert events[-1] == b"data: [DONE]"
        assert error["error"]["type"] == "server_error" and "shutting down" in error["error"]["message"]

        rest = await asyncio.wait_for(claude.content.read(), 10)
        last = rest.strip().split(b"\n\n")[-1].split(b"\n")
        assert last[0] == b"event: error", rest[-300:]
        error = json.loads(last[1].removeprefix(b"data: "))
        assert error["type"] == "error" and "shutting down" in error["error"]["message"]

        r = await asyncio.wait_for(hung, 10)
        assert r.status == 503 and "shutting down" in (await r.json())["error"]["message"]
        assert r.headers["Retry-After"]
        r = await asyncio.wait_for(quick, 10)
        assert r.status == 200 and (await r.json())["type"] == "message"

        code = await asyncio.to_thread(proc.wait, 10)
        exited_after = time.monotonic() - signalled
    log = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0, log
    assert exited_after < GRACE + 1, (exited_after, log)
    assert "shutdown: 4 requests in flight (2 streams); 1 finished within the 1.5 s grace, " \
           "3 cut (2 streams)" in log, log
    assert "Traceback" not in log, log


@pytest.mark.parametrize("gateway", [30.0], indirect=True)
async def test_a_second_signal_cuts_at_once(gateway: tuple[subprocess.Popen[bytes], str, Hang]) -> None:
    proc, url, _ = gateway
    async with aiohttp.ClientSession() as s:
        chat = await _first_bytes(s, url, "/v1/chat/completions", {"model": "m", "messages": HI, "stream": True})
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        rest = await asyncio.wait_for(chat.content.read(), 10)
        assert rest.endswith(b"data: [DONE]\n\n") and b"shutting down" in rest
        code = await asyncio.to_thread(proc.wait, 10)
        assert time.monotonic() - signalled < 1
    log = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0, log
    assert "shutdown: second signal, cutting what is still in flight now" in log
    assert "shutdown: 1 request in flight (1 stream); 0 finished within the 30 s grace, 1 cut (1 stream)" in log
    assert "Traceback" not in log and "Unclosed" not in log, log


async def test_a_handler_slow_to_stop_does_not_keep_the_gateway_open(config_dir: Path) -> None:
    """Stopped the way ``serve()`` is (its task cancelled, cleanup in ``finally``): a handler that
    ignores the cut is cancelled again by aiohttp's own short wait, and the gateway still closes."""
    h = await start_gateway(config_dir)

    async def stubborn(*_: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(30)  # the first cancellation is ignored

    table = h.gateway.current.routes  # this gateway's own snapshot: /healthz now runs the stub
    route = table.match("GET", "/healthz").route
    assert route is not None
    table._static["/healthz"] = [dataclasses.replace(route, endpoint=Endpoint("health", stubborn))]
    h.runner.grace = 0.2
    request = asyncio.create_task(h.request("GET", "/healthz"))
    await asyncio.sleep(0.2)
    assert len(h.runner.dispatcher.inflight.requests) == 1

    async def serving() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await h.runner.cleanup()

    server = asyncio.create_task(serving())
    await asyncio.sleep(0)
    started = time.monotonic()
    server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server
    assert time.monotonic() - started < 0.2 + 1
    assert h.gateway.session is None and h.gateway.sim is None  # closed all the same
    with pytest.raises(aiohttp.ClientError):
        await request
    await h.session.close()


STREAMS = {
    "openai.chat": ("/v1/chat/completions", {"model": "gpt-4o", "messages": HI, "stream": True},
                    lambda tail: tail.endswith(b"data: [DONE]") and b'data: {"error":' in tail),
    "openai.completions": ("/v1/completions", {"model": "gpt-4o", "prompt": "hi", "stream": True},
                           lambda tail: tail.endswith(b"data: [DONE]") and b'data: {"error":' in tail),
    "openai.responses": ("/v1/responses", {"model": "gpt-4o", "input": "hi", "stream": True},
                         lambda tail: b"event: response.failed" in tail.split(b"\n\n")[-1]),
    "anthropic.messages": ("/v1/messages", {"model": "gpt-4o", "max_tokens": 9, "messages": HI, "stream": True},
                           lambda tail: tail.split(b"\n\n")[-1].startswith(b"event: error")),
    "gemini.stream": ("/v1beta/models/gpt-4o:streamGenerateContent?alt=sse", {"contents": [{"parts": [{"text": "hi"}]}]},
                      lambda tail: b'"status":"UNAVAILABLE"' in tail.split(b"\n\n")[-1]),
}


async def test_every_dialects_stream_ends_with_its_error_event(config_dir: Path) -> None:
    h = await start_gateway(config_dir, sim_options={"chunks": 400, "chunk_delay": 0.05})
    h.runner.grace = 0.3
    try:
        responses = {}
        for name, (path, body, _) in STREAMS.items():
            r = responses[name] = await h.session.post(h.url + path, json=body)
            assert r.status == 200 and await asyncio.wait_for(r.content.readline(), 5)
        cleanup = asyncio.create_task(h.runner.cleanup())
        for name, (_, _, ends_well) in STREAMS.items():
            tail = (await asyncio.wait_for(responses[name].content.read(), 5)).strip()
            assert ends_well(tail), (name, tail[-400:])
            assert b"shutting down" in tail.split(b"\n\n")[-2 if name.startswith("openai.c") else -1]
        await asyncio.wait_for(cleanup, 5)
    finally:
        await h.session.close()

"""OpenTelemetry tracing end to end (needs the ``otel`` extra): a gateway serving a fake OpenAI-dialect
upstream that records the headers it gets, its spans caught by the SDK's InMemorySpanExporter.

SERVER span per request, CLIENT span per upstream attempt, GenAI attributes, the client's traceparent
continued and each attempt's sent upstream, streams and non-streams, a retry, a fallback; content only
when opted in; no secret in any span.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router.gateway import Gateway
from router.runner import GatewayRunner
from router.telemetry import parse_traceparent
from tests.conftest import FAST_RETRY, ROUTES, Harness

CLIENT_KEY = "sk-client-key-never-in-spans"
SECRETS = (CLIENT_KEY, "sk-account-a-secret", "sk-account-b-secret", "sk-backup-secret")
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"

CONFIG = """
auth:
  mode: all_except_health
  teams: {{qa: {{}}}}
  api_keys:
    - {{name: ci, team: qa, key: "{client_key}"}}
providers:
  up:
    dialect: openai
    base_url: http://127.0.0.1:{port}/a
    template: openai
    accounts:
      - {{email: a@example.com, api_key: "{secret_a}"}}
      - {{email: b@example.com, api_key: "{secret_b}"}}
  backup:
    dialect: openai
    base_url: http://127.0.0.1:{port}/b
    template: openai
    telemetry_name: azure.ai.openai
    accounts: [{{email: c@example.com, api_key: "{secret_c}"}}]
model_mapping:
  exact:
    m: up/model-a
    fb: [up/model-a, backup/model-b]
routes:
  - {{path: /healthz, methods: [GET], handler: health}}
  - {{path: /v1/chat/completions, methods: [POST], handler: openai.chat}}
  - {{path: /admin/config, methods: [GET], handler: admin.config}}
"""


class Upstream:
    """An OpenAI-dialect upstream on loopback: answers "Hello there" (JSON or SSE), fails the next
    ``fail[prefix]`` requests with a 500, and keeps every request's headers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.fail: dict[str, int] = {}
        self.answer_model: str | None = None  # the model its answers name (None: the one asked for)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{prefix}/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        prefix = request.match_info["prefix"]
        self.seen.append((prefix, dict(request.headers)))
        body = await request.json()
        if self.fail.get(prefix, 0) != 0:
            self.fail[prefix] -= 1
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        model = self.answer_model or body["model"]
        if not body.get("stream"):
            return web.json_response({"id": "chatcmpl-1", "object": "chat.completion", "model": model,
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": "Hello there"}}],
                                      "usage": usage})
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        chunk = {"id": "c1", "object": "chat.completion.chunk", "model": model}
        for choice in ({"index": 0, "delta": {"role": "assistant", "content": "Hello there"}},
                       {"index": 0, "delta": {}, "finish_reason": "length"}):
            await out.write(b"data: " + json.dumps({**chunk, "choices": [choice]}).encode() + b"\n\n")
        await out.write(b"data: " + json.dumps({**chunk, "choices": [], "usage": usage}).encode() + b"\n\n")
        await out.write(b"data: [DONE]\n\n")
        return out

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def write_config(config_dir: Path, port: int, telemetry: str) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROUTES / "50-templates.yaml", config_dir / "50-templates.yaml")
    text = CONFIG.format(port=port, client_key=CLIENT_KEY, secret_a=SECRETS[1], secret_b=SECRETS[2],
                         secret_c=SECRETS[3])
    (config_dir / "10-main.yaml").write_text(text + FAST_RETRY)
    (config_dir / "90-telemetry.yaml").write_text(telemetry)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    await up.start()
    try:
        yield up
    finally:
        await up.close()


async def traced_gateway(config_dir: Path, up: Upstream, telemetry: str = "telemetry: {enabled: true}\n",
                         env: dict[str, str] | None = None) -> tuple[Harness, InMemorySpanExporter]:
    write_config(config_dir, up.port, telemetry)
    memory = InMemorySpanExporter()
    gateway = Gateway(config_dir, env=env if env is not None else {})
    gateway.telemetry.exporter = memory  # before the first snapshot configures tracing
    runner = GatewayRunner(gateway, watch=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    h = Harness(runner, site, gateway, config_dir)
    return h, memory


@pytest.fixture
async def traced(tmp_path: Path, upstream: Upstream) -> AsyncIterator[tuple[Harness, InMemorySpanExporter]]:
    h, memory = await traced_gateway(tmp_path / "routes.d", upstream)
    try:
        yield h, memory
    finally:
        await h.close()


async def spans_of(memory: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The spans once ``count`` are there (they are made just after the response went out)."""
    deadline = time.monotonic() + 5
    while len(memory.get_finished_spans()) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    spans = list(memory.get_finished_spans())
    assert len(spans) == count, [s.name for s in spans]
    return spans


def split(spans: list[ReadableSpan]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(servers) == 1
    return servers[0], sorted((s for s in spans if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time or 0)


def no_secrets(spans: list[ReadableSpan]) -> None:
    text = "\n".join(s.to_json() for s in spans)
    for secret in SECRETS:
        assert secret not in text


async def chat(h: Harness, model: str = "m", stream: bool = False, headers: dict[str, str] | None = None
               ) -> tuple[int, Any]:
    body = {"model": model, "stream": stream, "max_tokens": 50, "temperature": 0.5,
            "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say hi secretly"}]}
    status, doc, _ = await h.post_json("/v1/chat/completions", body,
                                       headers={"Authorization": f"Bearer {CLIENT_KEY}", **(headers or {})})
    return status, doc


async def test_a_non_stream_request_continues_the_clients_trace_and_propagates_it_upstream(
        traced: tuple[Harness, InMemorySpanExporter], upstream: Upstream) -> None:
    h, memory = traced
    status, _ = await chat(h, headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01",
                                       "tracestate": "vendor=abc"})
    assert status == 200
    server, clients = split(await spans_of(memory, 2))
    assert server.name == "chat m" and server.context.trace_id == int(PARENT_TRACE, 16)
    assert server.parent is not None and server.parent.span_id == int(PARENT_SPAN, 16) and server.parent.is_remote
    attrs = dict(server.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "m" and attrs["gen_ai.response.model"] == "model-a"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (7, 3)
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert (attrs["gen_ai.request.max_tokens"], attrs["gen_ai.request.temperature"]) == (50, 0.5)
    assert (attrs["http.request.method"], attrs["http.route"], attrs["http.response.status_code"]) == \
        ("POST", "/v1/chat/completions", 200)
    assert (attrs["router.key"], attrs["router.team"], attrs["router.provider"]) == ("ci", "qa", "up")
    assert attrs["router.account"] == "a@example.com" and attrs["router.outcome"] == "200"
    assert "error.type" not in attrs and "gen_ai.input.messages" not in attrs  # no content by default
    [client] = clients
    assert client.name == "chat model-a" and client.parent is not None
    assert client.parent.span_id == server.context.span_id and client.context.trace_id == server.context.trace_id
    cattrs = dict(client.attributes or {})
    assert (cattrs["router.attempt"], cattrs["router.account"], cattrs["http.response.status_code"]) == \
        (1, "a@example.com", 200)
    assert cattrs["server.address"] == "127.0.0.1" and cattrs["gen_ai.usage.output_tokens"] == 3
    assert cattrs["server.port"] == upstream.port
    assert cattrs["url.full"] == f"http://127.0.0.1:{upstream.port}/a/v1/chat/completions"
    # the upstream got a traceparent naming the attempt's CLIENT span, and the client's tracestate
    _, seen = upstream.seen[-1]
    assert parse_traceparent(seen["traceparent"]) == (int(PARENT_TRACE, 16), client.context.span_id, True)
    assert seen["tracestate"] == "vendor=abc"
    for span in (server, client):  # and it is on the exported spans' contexts, as on their parent's
        assert dict(span.context.trace_state) == {"vendor": "abc"}, span.name
    assert server.parent.trace_state.to_header() == "vendor=abc"
    assert client.start_time is not None and server.start_time is not None and client.end_time is not None
    assert server.start_time <= client.start_time <= client.end_time <= (server.end_time or 0)
    no_secrets([server, client])


async def test_a_stream_has_its_finish_reasons_and_usage(traced: tuple[Harness, InMemorySpanExporter],
                                                         upstream: Upstream) -> None:
    h, memory = traced
    status, _ = await chat(h, stream=True)
    assert status == 200
    server, [client] = split(await spans_of(memory, 2))
    attrs = dict(server.attributes or {})
    assert server.parent is None  # no traceparent from the client: the trace starts here
    assert attrs["router.stream"] is True and attrs["gen_ai.response.finish_reasons"] == ("length",)
    assert attrs["gen_ai.usage.input_tokens"] == 7
    _, seen = upstream.seen[-1]
    assert parse_traceparent(seen["traceparent"]) == (server.context.trace_id, client.context.span_id, True)
    no_secrets([server, client])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_the_response_model_is_the_one_the_answer_names(traced: tuple[Harness, InMemorySpanExporter],
                                                              upstream: Upstream, stream: bool) -> None:
    h, memory = traced
    upstream.answer_model = "model-a-2025-06-01"  # an upstream answers with its own (dated) name
    status, _ = await chat(h, stream=stream)
    assert status == 200
    server, [client] = split(await spans_of(memory, 2))
    attrs, cattrs = dict(server.attributes or {}), dict(client.attributes or {})
    assert attrs["gen_ai.request.model"] == "m" and cattrs["gen_ai.request.model"] == "model-a"  # as asked
    assert attrs["gen_ai.response.model"] == cattrs["gen_ai.response.model"] == "model-a-2025-06-01"  # as answered


async def test_a_failed_attempt_then_a_retry_are_two_client_spans(traced: tuple[Harness, InMemorySpanExporter],
                                                                   upstream: Upstream) -> None:
    h, memory = traced
    upstream.fail["a"] = 1
    status, _ = await chat(h)
    assert status == 200
    server, clients = split(await spans_of(memory, 3))
    first, second = (dict(c.attributes or {}) for c in clients)
    assert (first["router.attempt"], first["router.outcome"], first["error.type"]) == (1, "500", "500")
    assert clients[0].status.status_code == StatusCode.ERROR
    assert (second["router.attempt"], second["router.outcome"]) == (2, "200") and "error.type" not in second
    assert first["router.account"] != second["router.account"]  # rotated to the other account
    assert dict(server.attributes or {})["router.attempts"] == 2
    sent = [parse_traceparent(headers["traceparent"]) for _, headers in upstream.seen[-2:]]
    assert [s[1] for s in sent if s] == [c.context.span_id for c in clients]  # each attempt its own span id
    no_secrets([server, *clients])


async def test_a_fallback_shows_its_chain_and_each_targets_attempts(
        traced: tuple[Harness, InMemorySpanExporter], upstream: Upstream) -> None:
    h, memory = traced
    upstream.fail["a"] = -1  # every request to the first provider fails
    status, _ = await chat(h, model="fb")
    assert status == 200
    server, clients = split(await spans_of(memory, 4))  # up: two accounts, then backup
    attrs = dict(server.attributes or {})
    assert attrs["router.fallback.chain"] == ("up/model-a:500", "backup/model-b:200")
    assert attrs["router.provider"] == "backup" and attrs["gen_ai.response.model"] == "model-b"
    assert [dict(c.attributes or {})["router.provider"] for c in clients] == ["up", "up", "backup"]
    assert [dict(c.attributes or {})["gen_ai.request.model"] for c in clients] == ["model-a", "model-a", "model-b"]
    # gen_ai.provider.name: the dialect's (openai), or the provider's telemetry_name (backup's)
    assert [dict(c.attributes or {})["gen_ai.provider.name"] for c in clients] == \
        ["openai", "openai", "azure.ai.openai"]
    assert attrs["gen_ai.provider.name"] == "azure.ai.openai"  # the answering provider's
    no_secrets([server, *clients])


async def test_an_error_response_has_its_error_type(traced: tuple[Harness, InMemorySpanExporter],
                                                    upstream: Upstream) -> None:
    h, memory = traced
    upstream.fail["a"] = -1
    status, _ = await chat(h)
    assert status == 500
    server, clients = split(await spans_of(memory, 3))
    attrs = dict(server.attributes or {})
    assert attrs["error.type"] == "500" and server.status.status_code == StatusCode.ERROR
    assert "gen_ai.response.model" not in attrs  # no upstream answered
    no_secrets([server, *clients])


async def test_content_is_recorded_only_when_opted_in(tmp_path: Path, upstream: Upstream) -> None:
    h, memory = await traced_gateway(tmp_path / "routes.d", upstream,
                                     "telemetry: {enabled: true, record_content: true}\n")
    try:
        for stream in (False, True):
            memory.clear()
            assert (await chat(h, stream=stream))[0] == 200
            server, _ = split(await spans_of(memory, 2))
            attrs = dict(server.attributes or {})
            assert json.loads(str(attrs["gen_ai.system_instructions"])) == [{"type": "text", "content": "Be terse."}]
            assert json.loads(str(attrs["gen_ai.input.messages"])) == [
                {"role": "user", "parts": [{"type": "text", "content": "Say hi secretly"}]}]
            output = json.loads(str(attrs["gen_ai.output.messages"]))
            assert output[0]["parts"] == [{"type": "text", "content": "Hello there"}]
        # a reload that turns it off: no content from the next request on
        (h.config_dir / "90-telemetry.yaml").write_text("telemetry: {enabled: true}\n")
        assert await h.gateway.reload("test")
        memory.clear()
        assert (await chat(h))[0] == 200
        server, _ = split(await spans_of(memory, 2))
        assert not [k for k in (server.attributes or {}) if k.startswith(("gen_ai.input", "gen_ai.output",
                                                                           "gen_ai.system"))]
    finally:
        await h.close()


async def test_unsampled_requests_make_no_spans_but_still_propagate(tmp_path: Path, upstream: Upstream) -> None:
    h, memory = await traced_gateway(tmp_path / "routes.d", upstream, "telemetry: {enabled: true, sampling_ratio: 0}\n")
    try:
        assert (await chat(h))[0] == 200
        _, seen = upstream.seen[-1]
        parsed = parse_traceparent(seen["traceparent"])
        assert parsed is not None and parsed[2] is False  # flags 00: not sampled
        # a client's sampled trace is kept whatever the ratio (parent-based)
        assert (await chat(h, headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}))[0] == 200
        server, _ = split(await spans_of(memory, 2))
        assert server.context.trace_id == int(PARENT_TRACE, 16)
    finally:
        await h.close()


async def test_other_routes_get_an_http_server_span_and_reload_turns_tracing_off(
        traced: tuple[Harness, InMemorySpanExporter], upstream: Upstream) -> None:
    h, memory = traced
    async with await h.request("GET", "/healthz") as r:
        assert r.status == 200
    [span] = await spans_of(memory, 1)
    assert span.name == "GET /healthz" and span.kind == SpanKind.SERVER
    assert "gen_ai.operation.name" not in (span.attributes or {})
    (h.config_dir / "90-telemetry.yaml").write_text("telemetry: {enabled: false}\n")
    assert await h.gateway.reload("test")
    assert h.gateway.telemetry.on is False
    memory.clear()
    assert (await chat(h))[0] == 200
    await asyncio.sleep(0.05)
    assert memory.get_finished_spans() == () or list(memory.get_finished_spans()) == []
    assert "traceparent" not in upstream.seen[-1][1]  # off: nothing added to the upstream request


@pytest.mark.parametrize(("dialect", "name"), [("openai", "openai"), ("anthropic", "anthropic"),
                                              ("gemini", "gcp.gemini"), ("bedrock", "aws.bedrock")])
def test_gen_ai_provider_name_comes_from_the_dialect_unless_the_provider_names_one(dialect: str, name: str) -> None:
    from types import SimpleNamespace

    from router.telemetry_spans import provider_name

    assert provider_name(SimpleNamespace(dialect=dialect, telemetry_name="")) == name  # type: ignore[arg-type]  # a stand-in
    assert provider_name(SimpleNamespace(dialect=dialect, telemetry_name="gcp.vertex_ai")) == \
        "gcp.vertex_ai"  # type: ignore[arg-type]  # a stand-in

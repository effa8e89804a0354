"""Spans over the wire (needs the ``otel`` extra): a local OTLP/HTTP receiver (POST /v1/traces,
protobuf, decoded with opentelemetry-proto) receiving what a running gateway exports, configured by
the ``telemetry:`` section or by the standard ``OTEL_*`` environment variables, YAML beside env."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import start_gateway
from tests.serving import free_port, serve_process, stop, wait_healthy
from tests.test_telemetry import CLIENT_KEY, SECRETS, Upstream, chat, write_config


class Receiver:
    """An OTLP/HTTP collector on loopback: keeps each export's headers and decoded spans."""

    def __init__(self) -> None:
        self.exports: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self.traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.exports.append(({k.lower(): v for k, v in request.headers.items()}, message))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) of every span received."""
        out = []
        for _, message in self.exports:
            for rs in message.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                out += [(resource, span) for ss in rs.scope_spans for span in ss.spans]
        return out

    async def wait(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.spans()) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    await up.start()
    try:
        yield up
    finally:
        await up.close()


def attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") != "array_value" else \
            [getattr(x, x.WhichOneof("value")) for x in v.array_value.values]
    return out


async def test_the_yaml_sends_spans_over_otlp_http_with_its_headers(tmp_path: Path, receiver: Receiver,
                                                                    upstream: Upstream) -> None:
    config = tmp_path / "routes.d"
    write_config(config, upstream.port, f"""
telemetry:
  enabled: true
  service_name: gateway-under-test
  otlp: {{protocol: http/protobuf, endpoint: "{receiver.url}/v1/traces", headers: {{x-api-key: otlp-secret}},
          timeout: 5s}}
""")
    h = await start_gateway(config)
    try:
        assert (await chat(h, headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}))[0] \
            == 200
        async with await h.request("GET", "/admin/config", headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as r:
            view = (await r.json())["telemetry"]
        assert view["headers"] == {"x-api-key": "***"} and view["endpoint"] == f"{receiver.url}/v1/traces"
        assert "otlp-secret" not in str(view)
    finally:
        await h.close()  # the batch is flushed at shutdown
    await receiver.wait(2)
    spans = receiver.spans()
    assert {resource["service.name"] for resource, _ in spans} == {"gateway-under-test"}
    assert {headers.get("x-api-key") for headers, _ in receiver.exports} == {"otlp-secret"}
    server = next(span for _, span in spans if span.kind == span.SPAN_KIND_SERVER)
    client = next(span for _, span in spans if span.kind == span.SPAN_KIND_CLIENT)
    assert server.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert server.parent_span_id.hex() == "00f067aa0ba902b7"
    assert client.parent_span_id == server.span_id
    attrs = attributes(server)
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.usage.output_tokens"] == 3
    assert attrs["router.key"] == "ci"
    wire = b"".join(m.SerializeToString() for _, m in receiver.exports)
    for secret in SECRETS:
        assert secret.encode() not in wire


async def test_the_standard_environment_variables_configure_the_export(tmp_path: Path, receiver: Receiver,
                                                                       upstream: Upstream) -> None:
    config = tmp_path / "routes.d"
    write_config(config, upstream.port, "telemetry: {enabled: true}\n")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "from-env",
           "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=team%20one,authorization=Basic abc", "OTEL_TRACES_EXPORTER": "otlp",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    h = await start_gateway(config, env=env)
    try:
        assert h.gateway.telemetry.public()["endpoint"] == f"{receiver.url}/v1/traces"  # /v1/traces appended
        assert (await chat(h, stream=True))[0] == 200
    finally:
        await h.close()
    await receiver.wait(2)
    assert {resource["service.name"] for resource, _ in receiver.spans()} == {"from-env"}
    headers = receiver.exports[0][0]
    assert headers["x-tenant"] == "team one" and headers["authorization"] == "Basic abc"


async def test_the_yaml_wins_over_the_environment_and_otel_sdk_disabled_wins_over_both(
        tmp_path: Path, receiver: Receiver, upstream: Upstream) -> None:
    config = tmp_path / "routes.d"
    endpoint = f"{receiver.url}/v1/traces"
    write_config(config, upstream.port, f'telemetry: {{enabled: true, otlp: {{endpoint: "{endpoint}"}}}}\n')
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{free_port()}/v1/traces"}
    h = await start_gateway(config, env=env)
    try:
        assert (await chat(h))[0] == 200
    finally:
        await h.close()
    await receiver.wait(2)
    assert len(receiver.spans()) == 2
    for disabled in ({"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}):
        h = await start_gateway(config, env=disabled)
        try:
            assert h.gateway.telemetry.on is False
            assert h.gateway.telemetry.public()["enabled"] is False
        finally:
            await h.close()


async def test_a_running_router_serve_exports_its_spans(tmp_path: Path, receiver: Receiver, upstream: Upstream,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole process: ``router serve`` configured by the environment, its spans flushed at SIGTERM."""
    config = tmp_path / "routes.d"
    write_config(config, upstream.port, "telemetry: {enabled: true}\n")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver.url}/v1/traces")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "served")
    port = free_port()
    proc = serve_process(config, port)
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, proc)
        import aiohttp

        async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", headers={
                "Authorization": f"Bearer {CLIENT_KEY}"}, json={"model": "m", "messages": [
                    {"role": "user", "content": "hi"}]}) as r:
            assert r.status == 200
        await asyncio.to_thread(stop, proc)
    finally:
        stop(proc)
    await receiver.wait(3)  # /healthz (some of them) and the chat request
    names = {span.name for _, span in receiver.spans()}
    assert {"chat m", "chat model-a"} <= names
    assert {resource["service.name"] for resource, _ in receiver.spans()} == {"served"}


async def test_otlp_over_grpc(tmp_path: Path, upstream: Upstream) -> None:
    """The same spans to a gRPC collector (a TraceService on loopback), with the YAML's headers as metadata."""
    grpc = pytest.importorskip("grpc")
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc")
    from concurrent.futures import ThreadPoolExecutor

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    received: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
            received.append((dict(context.invocation_metadata()), request))
            return ExportTraceServiceResponse()

    server = grpc.server(ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        config = tmp_path / "routes.d"
        write_config(config, upstream.port, f"""
telemetry:
  enabled: true
  otlp: {{protocol: grpc, endpoint: "http://127.0.0.1:{port}", headers: {{x-tenant: grpc-team}}}}
""")
        h = await start_gateway(config)
        try:
            assert (await chat(h))[0] == 200
        finally:
            await h.close()
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        server.stop(None)
    spans = [span for _, m in received for rs in m.resource_spans for ss in rs.scope_spans for span in ss.spans]
    assert sorted(span.name for span in spans) == ["chat m", "chat model-a"]
    assert received[0][0]["x-tenant"] == "grpc-team"


async def test_the_console_exporter_prints_the_spans(tmp_path: Path, upstream: Upstream,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``OTEL_TRACES_EXPORTER=console``: the spans as JSON on stdout (at the latest when the gateway stops)."""
    config = tmp_path / "routes.d"
    write_config(config, upstream.port, "telemetry: {enabled: true}\n")
    h = await start_gateway(config, env={"OTEL_TRACES_EXPORTER": "console"})
    try:
        assert h.gateway.telemetry.public()["exporter"] == "console"
        assert (await chat(h))[0] == 200
    finally:
        await h.close()
    out = capsys.readouterr().out
    assert '"name": "chat m"' in out and '"name": "chat model-a"' in out
    for secret in SECRETS:
        assert secret not in out

"""The OpenTelemetry SDK side of tracing (imported only when tracing is on: the ``otel`` extra).

A :class:`Pipeline` is a tracer provider with its exporter behind a batch processor (the export runs
in the processor's thread). ``emit`` turns one finished request into its spans: the SERVER span and
one CLIENT span per upstream attempt, with the ids the request already used (the client's parent
span, the ``traceparent`` each attempt sent upstream) and the times it recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from aiohttp import web
from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from router import __version__
from router.telemetry_content import content_attributes
from router.telemetry_settings import GRPC, Export

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    from router.exchange import Exchange
    from router.telemetry import AttemptTrace, Trace

# gen_ai.operation.name by client codec (the conventions' well-known values)
OPERATIONS = {"openai.chat": "chat", "anthropic.messages": "chat", "openai.responses": "chat", "ollama.chat": "chat",
              "openai.completions": "text_completion", "ollama.generate": "text_completion",
              "gemini": "generate_content"}
# gen_ai.provider.name by upstream codec (a provider's dialect); the provider's own name is router.provider
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}


class PresetIds:
    """Hands the SDK the ids the request already used: set just before each ``start_span`` (one
    event loop thread makes every span, so nothing comes between). The SDK's IdGenerator by its
    methods (the SDK only calls them; not a subclass: without the extra, mypy sees no such class)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_span_id(self) -> int:
        return self.span_id

    def generate_trace_id(self) -> int:
        return self.trace_id

    def is_trace_id_random(self) -> bool:
        return True


def _exporter(export: Export) -> SpanExporter:
    if export.exporter == "console":
        return ConsoleSpanExporter()
    headers = dict(export.headers)
    if export.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=export.endpoint, headers=headers, timeout=export.timeout,
                            insecure=export.endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=export.endpoint, headers=headers, timeout=export.timeout)


class Pipeline:
    """A tracer provider exporting to ``export``'s exporter (or ``override``, handed each span at once)."""

    def __init__(self, export: Export, override: SpanExporter | None = None) -> None:
        self.export, self.override = export, override
        self.ids = PresetIds()
        resource = Resource.create({"service.name": export.service_name, "service.version": __version__})
        self.provider = TracerProvider(resource=resource, id_generator=cast("IdGenerator", self.ids))
        processor = SimpleSpanProcessor(override) if override is not None else BatchSpanProcessor(_exporter(export))
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("router", __version__)

    def close(self) -> None:
        self.provider.shutdown()

    def emit(self, x: Exchange, trace: Trace, request: web.BaseRequest, route: str, status: int,
             latency: float) -> None:
        """The request's SERVER span, then each attempt's CLIENT span under it."""
        operation = OPERATIONS.get(x.codec.name, "chat") if x.codec is not None else None
        end = trace.wall(x.started + latency)
        server = self._server_span(x, trace, operation, request, route)
        server.set_attributes(_server_attributes(x, trace, operation, request, route, status))
        if status >= 500:
            server.set_status(Status(StatusCode.ERROR))
        parent = trace_api.set_span_in_context(server)
        for a in trace.attempts:
            self._client_span(x, trace, a, operation, parent, end)
        server.end(end_time=end)

    def _server_span(self, x: Exchange, trace: Trace, operation: str | None, request: web.BaseRequest,
                     route: str) -> trace_api.Span:
        context = None
        if trace.parent_id:
            remote = trace_api.SpanContext(trace.trace_id, trace.parent_id, is_remote=True,
                                           trace_flags=trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED),
                                           trace_state=trace_api.TraceState.from_header([trace.tracestate or ""]))
            context = trace_api.set_span_in_context(trace_api.NonRecordingSpan(remote))
        name = f"{operation} {x.client_model}" if operation and x.client_model else f"{request.method} {route}"
        ids = self.ids
        ids.trace_id, ids.span_id = trace.trace_id, trace.span_id
        span: trace_api.Span = self.tracer.start_span(name, context, SpanKind.SERVER, start_time=trace.wall(x.started))
        return span

    def _client_span(self, x: Exchange, trace: Trace, a: AttemptTrace, operation: str | None, parent: Any,
                     request_end: int) -> None:
        done = x.attempts[a.index] if a.index < len(x.attempts) else None
        outcome: int | str = done.outcome if done is not None else ("client_closed" if x.status == 499 else "aborted")
        end = trace.wall(a.started + done.latency) if done is not None else request_end
        self.ids.span_id = a.span_id
        span = self.tracer.start_span(f"{operation or 'chat'} {a.model}", parent, SpanKind.CLIENT,
                                      start_time=trace.wall(a.started))
        span.set_attributes(_client_attributes(x, trace, a, operation, outcome))
        if not (isinstance(outcome, int) and outcome < 400):
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=min(end, request_end))


def _server_attributes(x: Exchange, trace: Trace, operation: str | None, request: web.BaseRequest, route: str,
                       status: int) -> dict[str, Any]:
    out: dict[str, Any] = {"http.request.method": request.method, "http.route": route, "url.path": request.path,
                           "http.response.status_code": status, "router.request_id": x.request_id,
                           "router.route": route, "router.handler": x.handler}
    if request.remote:
        out["client.address"] = request.remote
    key = x.key
    if key is not None:
        out["router.key"] = key.name  # the key's name from the config, never the key
        if key.team:
            out["router.team"] = key.team
    if x.attempts:
        out["router.attempts"] = len(x.attempts)
        out["router.outcome"] = str(x.attempts[-1].outcome)
    if x.chain:
        out["router.fallback.chain"] = list(x.chain)
    if status >= 400:
        out["error.type"] = _error_type(x, status)
    if operation is not None:
        out.update(_genai(x, trace, operation))
        if trace.record_content:
            out.update(content_attributes(x.canonical, trace.events))
    return out


def _genai(x: Exchange, trace: Trace, operation: str) -> dict[str, Any]:
    """The GenAI attributes of the request as a whole (its answering provider and model, its usage)."""
    out: dict[str, Any] = {"gen_ai.operation.name": operation}
    provider, req, usage = x.provider, x.canonical, x.usage
    if x.client_model:
        out["gen_ai.request.model"] = x.client_model
    if provider is not None:
        out["gen_ai.provider.name"] = PROVIDERS.get(provider.dialect, provider.dialect)
        out["router.provider"] = provider.name
    if x.account is not None:
        out["router.account"] = x.account.email
    if x.upstream_model and x.ttfb is not None:
        out["gen_ai.response.model"] = x.upstream_model
    if req is not None:
        out.update(_request_parameters(req))
    if usage is not None:
        out["gen_ai.usage.input_tokens"] = usage.input_tokens
        out["gen_ai.usage.output_tokens"] = usage.output_tokens
    if trace.finish_reasons:
        out["gen_ai.response.finish_reasons"] = list(trace.finish_reasons)
    return out


def _request_parameters(req: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"router.stream": bool(req.stream)}
    for name, value in (("max_tokens", req.max_tokens), ("temperature", req.temperature), ("top_p", req.top_p),
                        ("top_k", req.top_k), ("seed", req.seed)):
        if value is not None:
            out[f"gen_ai.request.{name}"] = value
    if req.stop:
        out["gen_ai.request.stop_sequences"] = list(req.stop)
    if req.n is not None and req.n != 1:
        out["gen_ai.request.choice.count"] = req.n
    return out


def _client_attributes(x: Exchange, trace: Trace, a: AttemptTrace, operation: str | None,
                       outcome: int | str) -> dict[str, Any]:
    out: dict[str, Any] = {"gen_ai.operation.name": operation or "chat",
                           "gen_ai.provider.name": PROVIDERS.get(a.dialect, a.dialect), "gen_ai.request.model": a.model,
                           "router.provider": a.provider, "router.account": a.account, "router.attempt": a.number,
                           "router.outcome": str(outcome), "url.full": a.url}
    u = urlsplit(a.url)
    if u.hostname:
        out["server.address"] = u.hostname
        out["server.port"] = u.port or (443 if u.scheme == "https" else 80)
    if isinstance(outcome, int):
        out["http.response.status_code"] = outcome
    if not (isinstance(outcome, int) and outcome < 400):
        out["error.type"] = str(outcome)
    elif a is trace.attempts[-1]:  # the attempt that answered: the answer's model, usage and finish
        out.update({k: v for k, v in _genai(x, trace, operation or "chat").items()
                    if k.startswith(("gen_ai.response.", "gen_ai.usage."))})
    return out


def _error_type(x: Exchange, status: int) -> str:
    """A low-cardinality class: the last attempt's failure (``rate_limit``, ``timeout``, ``429``...),
    else the response's status code."""
    failed = [a.outcome for a in x.attempts if not (isinstance(a.outcome, int) and a.outcome < 400)]
    return str(failed[-1]) if failed else str(status)

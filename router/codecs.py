"""The contracts between the engine and the wire formats: API families, client codecs, upstream codecs.

Words, one per concept:

- **API family** (:class:`Family`): openai, anthropic, gemini, ollama. How errors are written, how a
  model list or one model is shown, and which paths and headers speak it (an error on a path no
  route matches is written in the path's family).
- **client codec** (:class:`ClientCodec`): one client endpoint's conversion: request body →
  :class:`~router.canonical.CanonicalRequest`, canonical events → response body or stream frames.
- **upstream codec** (:class:`UpstreamCodec`): one provider wire format (a provider's ``dialect:``
  in YAML): response body or stream events → canonical events, and its error bodies → a failure.

The N client codecs and M upstream codecs meet only in the canonical model (N + M, not N × M).
Optional capabilities are explicit attributes that are None when absent; nothing is probed by name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from router import failures
from router.canonical import CanonicalRequest, Event, ResponseContext, StreamError
from router.errors import GatewayError
from router.failures import ErrorReader, UpstreamFailure
from router.limit_headers import Status, openai_headers
from router.sse import SSEParser

if TYPE_CHECKING:
    from router.blobs import SharedBlobs
    from router.response_store import ResponseStore
    from router.signature_memory import SignatureMemory

JSON = dict[str, Any]


class StreamEncoder(Protocol):
    """Per request: canonical events → the client's stream frames (it holds the stream's state)."""

    def start(self) -> bytes:
        """Frames before the first event (may be empty)."""

    def feed(self, event: Event) -> bytes:
        """The frames for one event (may be empty)."""

    def finish(self) -> bytes:
        """The terminal frames."""

    def error(self, err: StreamError) -> bytes:
        """The family's mid-stream error form; also terminal."""


class Framing(Protocol):
    """Per attempt: an upstream stream's bytes as they arrive → (event name, data) pairs (SSE's, or AWS's
    binary event stream); raises ValueError when the bytes cannot be framed."""

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]: ...

    def close(self) -> list[tuple[str | None, bytes]]:
        """What the end of the stream completes."""


class StreamDecoder(Protocol):
    """Per attempt: an upstream's stream events (SSE name, data) → canonical events."""

    def feed(self, event: str | None, data: bytes) -> list[Event]:
        """Events for one upstream stream event; raises ValueError when it is malformed."""

    def finish(self) -> list[Event]:
        """What the end of the stream completes (e.g. a final Usage)."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model as a model list shows it."""

    id: str
    owner: str  # the provider that serves it ("gateway" when none does)
    created: int  # unix seconds (the config's load time: the gateway has no better date)


@dataclass(frozen=True, slots=True)
class Family:
    """An API family: its error body, its model list and model view, and how requests show it."""

    name: str
    error_body: Callable[[GatewayError], JSON]
    models_list: Callable[[Sequence[ModelEntry]], JSON]
    model_info: Callable[[ModelEntry], JSON]
    # paths whose errors are written in this family when no route says otherwise (404, 405)
    path_prefixes: tuple[str, ...] = ()
    # a model-list request carrying one of these headers or query parameters asks in this family
    # (one path, /v1/models, serves several families)
    marker_headers: tuple[str, ...] = ()
    marker_query: tuple[str, ...] = ()
    # the header its clients send their API key in, besides ``Authorization: Bearer``
    key_header: str | None = None
    # the rate-limit headers of a response to a key with limits (OpenAI's unless the family has its own)
    ratelimit_headers: Callable[[Status], dict[str, str]] = openai_headers


@dataclass(slots=True)
class Stores:
    """Server-side state some client codecs keep between requests (None: switched off).

    ``responses``: the OpenAI Responses store behind ``previous_response_id``; ``signatures``: the
    thought signatures OpenAI Chat clients drop on replay, by tool-call id.
    """

    responses: ResponseStore | None = None
    signatures: SignatureMemory | None = None
    # the shared state both copy their entries to (``state.backend: redis``); None: this process only
    remote: SharedBlobs | None = None


# (stores, request, client key name): bring in, from the shared state, what ``prepare`` will read
Fetch = Callable[[Stores, CanonicalRequest, "str | None"], Awaitable[None]]

# (stores, request, client key name) → the request with server-side state applied
Prepare = Callable[[Stores, CanonicalRequest, "str | None"], CanonicalRequest]
# (stores, request, response context, every event, client key name): keep the finished exchange
# (the shared store's write to await before the response ends, or None)
Remember = Callable[[Stores, CanonicalRequest, ResponseContext, list[Event], "str | None"], "Awaitable[Any] | None"]
# (stores, (tool-call id, signature) pairs, client key name) -> the same
RememberSignatures = Callable[[Stores, Iterable[tuple[str, str]], "str | None"], "Awaitable[Any] | None"]
# a request the codec answers without an upstream (the answer's body), else None
LocalAnswer = Callable[[CanonicalRequest], "JSON | None"]
# (request body, route parameters) → the family's token-count answer
CountTokens = Callable[[Any, Mapping[str, Any]], JSON]


@dataclass(frozen=True, slots=True)
class ClientCodec:
    """One client endpoint's conversion (openai.chat, anthropic.messages, gemini...).

    ``decode_request(body, params)`` gets the parsed JSON (any JSON value: check its type) and the
    route's parameters plus the query string, and raises :class:`router.errors.BadRequest` naming
    the field for anything malformed, nothing else. ``encode_response(events, ctx)`` builds the
    non-stream body from all events; ``stream_encoder(ctx)`` makes the per-request encoder.
    """

    name: str
    family: Family
    decode_request: Callable[[Any, Mapping[str, Any]], CanonicalRequest]
    encode_response: Callable[[list[Event], ResponseContext], JSON]
    stream_encoder: Callable[[ResponseContext], StreamEncoder]
    id_prefix: str = ""  # of the response ids the gateway makes up (chatcmpl-, msg_, resp_...)
    stream_media_type: str = "text/event-stream"
    # optional capabilities: None when the codec has no such thing
    prepare: Prepare | None = None  # apply server-side state before mapping (previous_response_id)
    fetch: Fetch | None = None  # read what prepare needs from the shared state (run only when shared)
    remember: Remember | None = None  # keep the finished exchange (the engine then keeps its events)
    remember_signatures: RememberSignatures | None = None  # keep tool-call signatures handed out
    count_tokens: CountTokens | None = None  # the family's count-tokens endpoint
    answer_locally: LocalAnswer | None = None  # requests with nothing to ask upstream (Ollama's load)


@dataclass(frozen=True, slots=True)
class UpstreamCodec:
    """One provider wire format: how its answers and stream events become canonical events, and what
    its error bodies say."""

    name: str  # what a provider's ``dialect:`` names
    decode_response: Callable[[Any], list[Event]]  # parsed JSON body → events; ValueError if malformed
    stream_decoder: Callable[[], StreamDecoder]
    filters: Mapping[str, Callable[..., Any]] = field(default_factory=dict)  # its template filters
    # parsed JSON error body (None when not JSON) → message, retry hint, quota scope
    error_details: ErrorReader = field(kw_only=True)
    # (the largest event in bytes) → the stream's framing: SSE unless the format says otherwise
    framing: Callable[[int], Framing] = field(default=SSEParser, kw_only=True)

    def parse_failure(self, status: int, headers: Mapping[str, str], body: bytes, secrets: tuple[str, ...] = ()
                      ) -> UpstreamFailure:
        """An error response of this upstream as a failed attempt, ``secrets`` redacted from its texts."""
        return failures.parse_failure(self.error_details, status, headers, body, secrets)


def _claiming(path: str, families: Sequence[Family]) -> Family | None:
    """The first family that claims the path by one of its prefixes."""
    return next((f for f in families if path.startswith(f.path_prefixes)), None)


def family_of_path(path: str, families: Sequence[Family]) -> Family:
    """The family whose paths these are (the first family when none claims them)."""
    return _claiming(path, families) or families[0]


def family_asking(path: str, headers: Mapping[str, str], query: Mapping[str, str], families: Sequence[Family]
                  ) -> Family:
    """Which family a request that several families share (``GET /v1/models``) speaks: its path's,
    else the first whose marker header or query parameter it carries, else the first family."""
    marked = (f for f in families
              if any(h in headers for h in f.marker_headers) or any(q in query for q in f.marker_query))
    return _claiming(path, families) or next(marked, families[0])

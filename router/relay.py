"""The stream relay: one upstream stream, as it arrives, to the client through its client codec.

read a chunk → frames (SSE, or the upstream codec's own framing) → the upstream codec's stream decoder →
canonical events → the client codec's stream encoder → one write per upstream read.

Only the framing and the stream decoder read what the upstream sent, so only their ValueError
means "the upstream sent a malformed stream": an attempt failure, retryable while nothing reached the
client, the client codec's error event after that. The encoder, the writes and the server-side hooks are
the gateway's own code: what they raise goes to the app's error boundary (logged with its traceback).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from router.canonical import Event, ResponseContext, StreamError, Usage
from router.codecs import StreamDecoder, StreamEncoder
from router.errors import kind_for_status
from router.exchange import Exchange, response_headers
from router.failures import UpstreamFailure
from router.idle import IdleTimer
from router.redact import redact
from router.snapshot import Provider

if TYPE_CHECKING:
    from router.engine import Engine

log = logging.getLogger("router.engine")  # the pipeline's log: its lines keep the engine's name


class MalformedStream(Exception):
    """The upstream's stream could not be framed or decoded; raised only around the parser and the
    decoder, so that nothing else's ValueError passes for the upstream's fault."""


class StreamRelay:
    """One attempt's stream, from the upstream's first byte to the client's last.

    Before the first event nothing is sent: a failure then is the attempt's (``UpstreamFailure``, for
    the attempt loop to retry). The first event sends the headers; a failure after that ends the
    stream with the client codec's error event.
    """

    __slots__ = ("encoder", "engine", "keep", "out", "request", "rctx", "x")

    def __init__(self, engine: Engine, x: Exchange, request: web.BaseRequest, rctx: ResponseContext) -> None:
        assert x.codec is not None  # set by the proxy endpoint before the engine runs
        self.engine, self.x, self.request, self.rctx = engine, x, request, rctx
        self.encoder: StreamEncoder = x.codec.stream_encoder(rctx)
        if x.trace is not None:  # its finish reasons (and content) for the request's spans
            self.encoder = x.trace.watch(self.encoder)
        self.out: web.StreamResponse | None = None  # set once the headers are going out
        self.keep: list[Event] | None = [] if engine.keeps_events(x) else None  # for a codec's ``remember``

    async def run(self, provider: Provider, content: aiohttp.StreamReader) -> web.StreamResponse | UpstreamFailure:
        """Relays the stream to its end; a stalled, cut or malformed upstream ends the attempt."""
        decoder = provider.codec.stream_decoder()
        parser = provider.codec.framing(self.x.snapshot.server.upstream_max_event_bytes)
        try:
            with IdleTimer(provider.timeouts.idle) as idle:
                while True:
                    chunk = await content.readany()
                    idle.touch()
                    try:
                        frames = parser.feed(chunk) if chunk else parser.close()
                    except ValueError as e:
                        raise MalformedStream(str(e)) from e
                    if frames:
                        ended = await self._relay_frames(frames, decoder, idle)
                        if ended is not None:
                            return ended
                    if not chunk:
                        break
            try:
                tail = decoder.finish()
            except ValueError as e:
                raise MalformedStream(str(e)) from e
        except ConnectionResetError:
            raise  # our own client went away (a write to it failed): not an upstream failure
        except TimeoutError:  # the IdleTimer's, or aiohttp's for the attempt's ``total``
            why = "upstream stream stalled (idle timeout)" if idle.fired else \
                f"upstream stream exceeded the total timeout of {provider.timeouts.total:g} s"
            return await self._failure("timeout", why)
        except aiohttp.ClientPayloadError:
            return await self._failure("reset", "upstream connection reset mid-stream")
        except aiohttp.ClientConnectionError:
            return await self._failure("reset", "upstream connection lost mid-stream")
        except MalformedStream as e:
            return await self._failure("malformed", f"upstream sent a malformed stream chunk: {str(e)[:200]}")
        return await self._finish(tail)

    async def _relay_frames(self, frames: list[tuple[str | None, bytes]], decoder: StreamDecoder,
                            idle: IdleTimer) -> web.StreamResponse | UpstreamFailure | None:
        """One upstream read's frames: decoded, encoded and written at once (None: the stream goes on;
        else the upstream's own error event ended it)."""
        encoder = self.encoder
        pending: list[bytes] = []  # one write per upstream read, however many events
        for name, data in frames:
            try:
                events = decoder.feed(name, data)
            except ValueError as e:
                await self._write(pending, idle)  # what came before the bad frame still goes out
                raise MalformedStream(str(e)) from e
            if not events:
                continue
            for ev in events:
                if isinstance(ev, StreamError):
                    return await self._upstream_error(ev, pending)
            if self.out is None:
                await self._start()
            if self.keep is not None:
                self.keep.extend(events)
            pending.extend([encoder.feed(ev) for ev in events])
        await self._write(pending, idle)
        return None

    async def _write(self, pending: list[bytes], idle: IdleTimer) -> None:
        if pending and self.out is not None:
            idle.pause()  # a slow client is not an idle upstream
            await self.out.write(b"".join(pending))
            idle.resume()

    async def _upstream_error(self, ev: StreamError, pending: list[bytes]) -> web.StreamResponse | UpstreamFailure:
        """The upstream reported an error in its stream: the attempt's failure before the first byte,
        else the client codec's error event after what this read already encoded."""
        x = self.x
        ev.message = redact(ev.message, (x.account.api_key,) if x.account else ())
        if self.out is None:
            return UpstreamFailure(ev.status, ev.message)
        x.encoder = None
        pending.append(self.encoder.error(ev))
        await self.out.write(b"".join(pending))
        x.error = ev.message
        return self.out

    async def _start(self) -> web.StreamResponse:
        """The headers and the encoder's opening frames, at the first event."""
        x = self.x
        assert x.codec is not None  # set by the proxy endpoint before the engine runs
        out = self.out = x.response = web.StreamResponse(status=200, headers=response_headers(x))
        x.encoder = self.encoder  # a shutdown that cuts the stream ends it with the encoder's error event
        out.content_type = x.codec.stream_media_type
        out.headers["Cache-Control"] = "no-cache"
        out.headers["X-Accel-Buffering"] = "no"
        await out.prepare(self.request)
        x.ttfb = time.monotonic() - x.started
        start = self.encoder.start()
        if start:
            await out.write(start)
        return out

    async def _finish(self, tail: list[Event]) -> web.StreamResponse:
        """The upstream ended its stream: what its end completes, the terminal frames, the end."""
        x, rctx, encoder, keep = self.x, self.rctx, self.encoder, self.keep
        out = self.out or await self._start()
        if keep is not None:
            keep.extend(tail)
        buf = b"".join([encoder.feed(ev) for ev in tail])
        x.usage = next((e for e in reversed(tail) if isinstance(e, Usage)), None)
        x.encoder = None
        last = buf + encoder.finish()
        # remembered before the last write: a client may send its follow-up (previous_response_id, a
        # replayed tool call) as soon as it has the end of the stream
        if rctx.signed_calls or keep is not None:
            await self.engine.keep_state(x, rctx, keep)
        await out.write(last)
        await out.write_eof()
        return out

    async def _failure(self, outcome: str, message: str) -> web.StreamResponse | UpstreamFailure:
        """A transport failure or a malformed stream: the attempt's, or the client's error event."""
        x, out = self.x, self.out
        if out is None:
            return UpstreamFailure(outcome, message)  # nothing reached the client yet: retryable
        status = 504 if outcome == "timeout" else 502
        method, url = x.upstream_target()
        log.warning("stream failed after the first byte: %s %s -> %s", method, url, outcome,
                    extra={"request_id": x.request_id, "upstream": url, "outcome": outcome, "detail": message})
        x.error, x.encoder = message, None
        await out.write(self.encoder.error(StreamError(status, kind_for_status(status), message)))
        return out

"""The request path's own connection to Redis: scripts written as they come, replies matched in order.

Admission (``RedisState.reserve_all``) is the one Redis call a request waits for. Through redis-py's
client each call takes a pooled connection, wraps itself in retry and timeout layers and parses on its
own: ~80 µs of CPU per call, as much as half of a whole request. A :class:`Lane` keeps one connection
(opened by redis-py, so TLS, unix sockets, AUTH and SELECT are redis-py's) and drives it directly:
``hiredis.pack_command`` writes each command at once; one reader task feeds every reply to
``hiredis.Reader`` and resolves the calls first in, first out. Requests admitted together pipeline on
the connection by themselves: ~15 µs each.

Faults keep the shape of redis-py's, so the shared state's accounting (``SharedState._guard``) is the
same: a call waits at most ``timeout`` (redis-py's ``TimeoutError``; its reply, if it comes, is
matched to it and dropped, so the order holds); a connection that fails or closes fails every waiting
call (``ConnectionError``) and the next call opens a new one; an error reply is a ``ResponseError``
(``NoScriptError`` for NOSCRIPT: ``script`` loads the script and tries once more). Waiting calls are
bounded (``MAX_WAITING``): past it a call fails at once, as if Redis were slow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

MAX_WAITING = 10_000  # calls written and not yet answered
READ_SIZE = 1 << 16


class _Link:
    """One open connection, the calls waiting for its replies (in order) and the task reading them."""

    __slots__ = ("conn", "reader", "waiting", "writer")

    def __init__(self, conn: AbstractConnection, writer: asyncio.StreamWriter) -> None:
        self.conn = conn
        self.writer = writer
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.reader: asyncio.Task[None] | None = None


class Lane:
    """One connection for the request path's scripts; see the module docstring."""

    def __init__(self, client: Redis, timeout: float) -> None:
        self._pool = client.connection_pool
        self.timeout = timeout
        self._link: _Link | None = None
        self._opening: asyncio.Task[_Link] | None = None
        self._closed = False

    async def script(self, source: str, sha: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA ``sha``; after a Redis restart (NOSCRIPT) the script is loaded and run once more."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.call("SCRIPT", "LOAD", source)
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    async def call(self, *args: Any) -> Any:
        """One command's reply (bytes, int, list); a redis-py ``RedisError`` on a fault."""
        link = self._link if self._link is not None else await self._open()
        if len(link.waiting) >= MAX_WAITING:
            raise RedisTimeoutError(f"more than {MAX_WAITING} commands waiting for Redis")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        link.waiting.append(future)
        link.writer.write(hiredis.pack_command(args))
        timer = loop.call_later(self.timeout, self._timed_out, link, future)
        try:
            reply = await future
        finally:
            timer.cancel()
        if isinstance(reply, hiredis.ReplyError):
            text = str(reply)
            raise NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)
        return reply

    async def _open(self) -> _Link:
        """The connection, opened once however many calls wait for it (bounded by redis-py's
        ``socket_connect_timeout``)."""
        if self._closed:
            raise RedisConnectionError("the state backend's connection is closed")
        if self._opening is None or self._opening.done():  # done: a caller that left before it ended
            self._opening = asyncio.get_running_loop().create_task(self._connect())
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done():
                self._opening = None

    async def _connect(self) -> _Link:
        conn = self._pool.connection_class(**self._pool.connection_kwargs)
        await conn.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        reader, writer = conn._reader, conn._writer
        if reader is None or writer is None:
            raise RedisConnectionError("the state backend's connection did not open")
        link = self._link = _Link(conn, writer)
        link.reader = asyncio.get_running_loop().create_task(self._read(link, reader))
        return link

    async def _read(self, link: _Link, reader: asyncio.StreamReader) -> None:
        """Every reply, in order, to the call that waits for it; a broken connection fails them all."""
        parser = hiredis.Reader()
        waiting = link.waiting
        error: BaseException = RedisConnectionError("Redis closed the connection")
        try:
            while data := await reader.read(READ_SIZE):
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    future = waiting.popleft()
                    if not future.done():  # a call that timed out: the connection is being dropped
                        future.set_result(reply)
        except (OSError, hiredis.ProtocolError, IndexError) as e:  # IndexError: a reply nobody asked for
            error = RedisConnectionError(f"the state backend's connection failed: {type(e).__name__}")
        except asyncio.CancelledError:
            error = RedisConnectionError("the state backend's connection is closed")
        self._drop(link, error)

    def _timed_out(self, link: _Link, future: asyncio.Future[Any]) -> None:
        """A call waited ``timeout``: like redis-py, give the connection up (a slow or silent Redis);
        the calls waiting on it fail too, and the next one opens another."""
        if not future.done():
            self._drop(link, RedisTimeoutError("Timeout reading from the state backend"))

    def _drop(self, link: _Link, error: BaseException) -> None:
        """Forget ``link`` (the next call opens another), fail every call waiting on it, close it."""
        if self._link is link:
            self._link = None
        while link.waiting:
            future = link.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        link.writer.close()
        reader = link.reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()

    async def close(self) -> None:
        self._closed = True
        link, self._link = self._link, None
        if link is None:
            return
        self._drop(link, RedisConnectionError("the state backend's connection is closed"))
        if link.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await link.reader

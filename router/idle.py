"""An idle timer for streams: one timer per stream instead of a timeout context per chunk."""

from __future__ import annotations

import asyncio
from types import TracebackType


class IdleTimer:
    """Cancels the current task when ``touch()`` was not called for ``idle`` seconds.

    Used as a context manager around a stream-reading loop; on expiry the CancelledError inside
    is turned into TimeoutError at exit. ``idle`` None (or 0) disables it.
    """

    __slots__ = ("idle", "fired", "_loop", "_task", "_last", "_handle", "_paused")

    def __init__(self, idle: float | None):
        self.idle = idle or None
        self.fired = False
        self._handle: asyncio.TimerHandle | None = None
        self._paused = False

    def __enter__(self) -> IdleTimer:
        if self.idle:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._last = self._loop.time()
            self._handle = self._loop.call_at(self._last + self.idle, self._check, self.idle)
        return self

    def touch(self) -> None:
        if self._handle is not None:
            self._last = self._loop.time()

    def pause(self) -> None:
        """No expiry until ``resume()`` (e.g. while writing to a slow client)."""
        self._paused = True

    def resume(self) -> None:
        """Expiry again, the clock restarting now."""
        self._paused = False
        self.touch()

    def _check(self, idle: float) -> None:
        """The timer's callback; ``idle`` is ``self.idle``, passed along because only a set one schedules it."""
        due = self._last + idle
        if self._paused:
            self._handle = self._loop.call_at(self._loop.time() + idle, self._check, idle)
        elif self._loop.time() >= due:
            self.fired = True
            self._handle = None
            if self._task is not None:
                self._task.cancel()
        else:
            self._handle = self._loop.call_at(due, self._check, idle)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        # our cancellation, and no one else's pending (uncancel() counts them): the stream was idle
        if self.fired and exc_type is asyncio.CancelledError and self._task is not None \
                and self._task.uncancel() == 0:
            raise TimeoutError("stream idle timeout") from None

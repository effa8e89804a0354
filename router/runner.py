"""The gateway process's lifecycle on aiohttp's low-level server: start-up, serving the bound
sockets, the shutdown grace and the cut, and driving the event loop until a signal stops it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from router import __version__
from router.app import Dispatcher
from router.drain import drain
from router.engine import Engine
from router.gateway import Gateway
from router.listen import BACKLOG
from router.listen import url as listen_url
from router.metrics import Metrics
from router.protocol import GatewayServer
from router.status.replicas import share_traffic

log = logging.getLogger("router.runner")


KEEPALIVE_TIMEOUT = 75.0  # seconds an idle client connection stays open (web.run_app's default)
CUT_WAIT = 0.3  # seconds requests cut at the end of the shutdown grace get to write their last bytes
CLOSE_WAIT = 0.1  # then aiohttp's own wait per connection still busy, before it closes them


def _hurry(hurry: asyncio.Event) -> None:
    if not hurry.is_set():
        log.info("shutdown: second signal, cutting what is still in flight now")
        hurry.set()


async def _flush_access_log(gateway: Gateway, every: float = 0.5) -> None:
    while True:
        await asyncio.sleep(every)
        gateway.access_log.flush()


SHARE_EVERY = 1.0  # seconds between a --workers child's writes of its metric values for the others


async def _share_metrics(metrics: Metrics, every: float = SHARE_EVERY) -> None:
    while True:
        await asyncio.sleep(every)
        metrics.share()


class GatewayRunner(web.BaseRunner):
    """Serves the gateway on aiohttp's low-level ``web.Server``: the Dispatcher is the handler.

    There is no ``web.Application`` in between: its router, middleware chain and request subclass
    cost ~5% of a proxied request's CPU, and our own route table already does their job. Start-up
    (``setup()``) loads the config and opens the upstream session; ``cleanup()`` stops listening,
    lets in-flight requests finish for ``shutdown_timeout`` seconds (the grace), cuts the rest
    (streams end with their codec's error event, other requests get a 503), then closes the gateway.
    """

    def __init__(self, gateway: Gateway, *, watch: bool = True, handle_signals: bool = False,
                 shutdown_timeout: float = 60.0):
        # aiohttp's own shutdown wait comes after ours (see shutdown()): a short one for stragglers
        super().__init__(handle_signals=handle_signals, shutdown_timeout=CLOSE_WAIT)
        self.grace = shutdown_timeout
        self.handle_signals = handle_signals
        self.gateway = gateway
        self.dispatcher = Dispatcher(gateway, Metrics(gateway))
        self.watch = watch
        self._tasks: list[asyncio.Task[None]] = []

    async def _make_server(self) -> web.Server:
        gateway = self.gateway
        try:
            await gateway.start()
        except BaseException:
            await gateway.close()  # a config that does not load: no session or simulator left open
            raise
        assert gateway.session is not None
        self.dispatcher.engine = Engine(gateway.store, gateway.session, gateway.stores,
                                        self.dispatcher.ids, gateway.renders, gateway.limiter, gateway.budgets,
                                        gateway.tokens)
        self._tasks.append(asyncio.create_task(_flush_access_log(gateway)))
        self._tasks.append(asyncio.create_task(share_traffic(gateway, self.dispatcher.metrics.traffic)))  # state: redis
        if gateway.worker_dir is not None:
            self.dispatcher.metrics.share()  # the other workers' scrapes count this one from the start
            self._tasks.append(asyncio.create_task(_share_metrics(self.dispatcher.metrics)))
        if self.watch:
            from router.watch import watch_config

            self._tasks.append(asyncio.create_task(watch_config(gateway)))
        return GatewayServer(self.dispatcher.__call__, access_log=None, handler_cancellation=True,
                             keepalive_timeout=KEEPALIVE_TIMEOUT)

    async def shutdown(self) -> None:
        """Called by ``cleanup()`` once the listener and the idle connections are closed: the grace,
        then the cut, and a log line saying what became of the requests in flight. A second SIGINT or
        SIGTERM ends the grace at once (``cleanup()`` removes these handlers when it is done)."""
        hurry = asyncio.Event()
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
                    loop.add_signal_handler(sig, _hurry, hurry)
        log.info("%s", await drain(self.dispatcher.inflight, self.grace, CUT_WAIT, hurry))

    async def _cleanup_server(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.gateway.access_log.flush()
        self.dispatcher.metrics.share()  # the requests that finished in the grace count after exit
        await self.gateway.close()


async def serve(gateway: Gateway, sockets: list[socket.socket], *, shutdown_timeout: float,
                announce: bool = True) -> None:
    """``router serve``'s main coroutine: accept on the already bound ``sockets`` until cancelled,
    then drain and close.

    The sockets are bound before this runs (``listen.bind``), so "listening" is logged only once
    the gateway really serves them (``announce``: a ``--workers`` child leaves that to its parent).
    SIGINT/SIGTERM raise ``web.GracefulExit`` out of the event loop; :func:`run` then cancels this
    coroutine, whose ``finally`` stops listening and lets in-flight requests finish.
    """
    runner = GatewayRunner(gateway, handle_signals=True, shutdown_timeout=shutdown_timeout)
    try:
        await runner.setup()
        for sock in sockets:
            await web.SockSite(runner, sock, backlog=BACKLOG).start()
        if announce:
            log.info("router %s listening on %s (config %s)", __version__,
                     ", ".join(listen_url(s) for s in sockets), gateway.config_dir)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run(main: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop) -> None:
    """Drive ``main`` on ``loop`` until it ends or a signal stops it, then cancel what is left."""
    task = loop.create_task(main)
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(task)
        finally:
            rest = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in rest:
                t.cancel()
            if rest:
                loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            for t in rest:  # what a leftover task raised on its way out is reported, not dropped
                if not t.cancelled() and t.exception() is not None:
                    loop.call_exception_handler({"message": "task failed during shutdown",
                                                 "exception": t.exception(), "task": t})
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

"""Hot reload triggers: file changes in the config dir (debounced) and SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import stat
from pathlib import Path

from watchfiles import awatch

from router.gateway import Gateway
from router.worker_reload import reload_published

log = logging.getLogger("router.watch")


async def watch_config(gateway: Gateway) -> None:
    """Reload on every burst of changes; a Kubernetes ``..data`` symlink swap counts as a change.

    watchfiles groups the events of one burst (a ``git pull`` touching five files) into a single
    set, so one burst is one reload. SIGHUP forces a reload too.
    """
    loop = asyncio.get_running_loop()
    hup = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP
        loop.add_signal_handler(signal.SIGHUP, hup.set)
    if gateway.worker_dir is not None:  # a --workers child: siblings may SIGHUP it from now on
        gateway.worker_dir.publish_status(gateway, 0.0)
    debounce_ms = max(10, int(gateway.current.server.reload_debounce * 1000))
    stop = asyncio.Event()
    files = asyncio.create_task(_watch_files(gateway, debounce_ms, stop))
    try:
        while True:
            await hup.wait()
            hup.clear()
            log.info("SIGHUP: reloading config")
            await _reload(gateway, "sighup")
    finally:
        stop.set()
        files.cancel()
        await asyncio.gather(files, return_exceptions=True)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)


async def _watch_files(gateway: Gateway, debounce_ms: int, stop: asyncio.Event) -> None:
    """Watch the config dir; when the dir itself goes away (``rm -rf`` and re-create by a branch
    switch or a deploy), its watch is dead: wait for the dir to be back, reload, and watch it anew."""
    while not stop.is_set():
        identity = _identity(gateway.config_dir)
        if identity is not None:
            async for changes in awatch(gateway.config_dir, debounce=debounce_ms, step=20, stop_event=stop,
                                        recursive=True, rust_timeout=1000):
                names = sorted({c[1].rsplit("/", 1)[-1] for c in changes})
                log.info("config dir changed (%s): reloading", ", ".join(names[:5]))
                await _reload(gateway, "watch")
                if _identity(gateway.config_dir) != identity:
                    log.warning("config dir %s was removed or replaced: watching for it", gateway.config_dir)
                    break
            else:
                return  # stopped
        while _identity(gateway.config_dir) is None and not stop.is_set():
            with contextlib.suppress(TimeoutError):  # a poll: look for the dir again
                await asyncio.wait_for(stop.wait(), DIR_POLL)
        if not stop.is_set():
            log.info("config dir %s is back: reloading", gateway.config_dir)
            await _reload(gateway, "watch")


DIR_POLL = 0.5  # seconds between looks for a config dir that went away


def _identity(directory: Path) -> tuple[int, int] | None:
    """(device, inode) of the dir, None when it is gone: a re-created dir is a new one to watch."""
    try:
        st = directory.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


async def _reload(gateway: Gateway, reason: str) -> None:
    """A reload that fails unexpectedly is logged; the watcher itself must never die."""
    try:
        await reload_published(gateway, reason)
    except Exception:  # a task boundary: log (ruff's BLE001 accepts a logged exception) and keep watching
        log.exception("reload (%s) failed unexpectedly; keeping the current config", reason)

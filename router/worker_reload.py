"""Reloads under ``router serve --workers N``: every reload a worker runs is published in the shared
directory (``router.worker_dir``), and ``POST /admin/reload`` on one worker reloads them all.

The worker that receives ``POST /admin/reload`` sends SIGHUP to each sibling (only to pids that the
parent listed and that are still its children, see ``WorkerDir.sibling``), reloads itself, then waits
at most ``RELOAD_WAIT`` seconds for each sibling's status to show a reload asked for after the
request. The times compared are ``time.monotonic()``: one clock (CLOCK_MONOTONIC) for every process
on the machine, so a wall-clock step cannot make an old reload look new.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.gateway import Gateway
    from router.worker_dir import WorkerDir, WorkerStatus

RELOAD_WAIT = 5.0  # seconds POST /admin/reload waits for the other workers' reloads
POLL = 0.02  # seconds between looks at their status files


async def reload_published(gateway: Gateway, reason: str) -> bool:
    """``gateway.reload(reason)``, then (a --workers child) its status written for the others."""
    asked = time.monotonic()
    ok = await gateway.reload(reason)
    if gateway.worker_dir is not None:
        gateway.worker_dir.publish_status(gateway, asked)
    return ok


async def reload_every_worker(gateway: Gateway, reason: str) -> tuple[bool, list[dict[str, Any]] | None]:
    """Reload this worker and, under --workers, every other one: this worker's result, and one entry
    per worker (``answered: false`` for one that did not report a reload in time), None without
    --workers."""
    wd = gateway.worker_dir
    if wd is None:
        return await gateway.reload(reason), None
    fanout = _Fanout(wd)
    fanout.signal_ready()  # first, so the siblings reload while this worker does
    ok = await reload_published(gateway, reason)
    await fanout.wait(RELOAD_WAIT)
    entries: list[dict[str, Any]] = []
    for i, status in enumerate(wd.statuses()):
        if i == wd.worker:
            entries.append({**_own(gateway, i), "answered": True})
        elif i in fanout.answers:
            entries.append({**fanout.answers[i].view(), "answered": True})
        else:
            entries.append({**(status.view() if status else {"worker": i}), "ok": False, "answered": False,
                            "detail": fanout.silent.get(i, f"no reload reported within {RELOAD_WAIT:g} s")})
    return ok, entries


def answer_status(ok: bool, entries: list[dict[str, Any]] | None) -> int:
    """200 when every worker reloaded, 422 when a reload was rejected, 504 when a worker did not answer."""
    if not ok or any(e.get("answered") and not e.get("ok") for e in entries or ()):
        return 422
    return 504 if any(not e.get("answered") for e in entries or ()) else 200


def workers_view(gateway: Gateway) -> dict[str, Any]:
    """``{"workers": [...]}`` for /admin/config under --workers: each worker's generation and last
    reload as it last published them (this worker's own as it is now), so workers that disagree show."""
    wd = gateway.worker_dir
    if wd is None:
        return {}
    return {"workers": [_own(gateway, i) if i == wd.worker else (s.view() if s else {"worker": i, "generation": None})
                        for i, s in enumerate(wd.statuses())]}


def _own(gateway: Gateway, worker: int) -> dict[str, Any]:
    last = gateway.last_reload
    return {"worker": worker, "pid": os.getpid(), "generation": gateway.generation,
            "ok": last.ok if last else True, "errors": [e.as_dict() for e in last.errors] if last else [],
            "reason": last.reason if last else None, "at": last.at if last else None}


class _Fanout:
    """One POST /admin/reload's SIGHUPs to the siblings, and their answers."""

    def __init__(self, wd: WorkerDir):
        self.wd = wd
        self.asked = time.monotonic()  # a sibling's reload answers when it was asked for after this
        self.signalled: dict[int, int] = {}  # worker -> pid
        self.silent: dict[int, str] = {}  # worker -> why it was not signalled
        self.answers: dict[int, WorkerStatus] = {}

    def signal_ready(self) -> None:
        """SIGHUP to each sibling not signalled yet that has published a status: its SIGHUP handler is
        in place then (a sibling still starting is signalled once it has, within the wait)."""
        for i, status in enumerate(self.wd.statuses()):
            if i == self.wd.worker or i in self.signalled:
                continue
            pid = self.wd.sibling(i)
            if status is None or pid is None or status.pid != pid:
                self.silent[i] = "not running (or still starting)"
                continue
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                self.silent[i] = "exited"
                continue
            self.signalled[i] = pid
            self.silent.pop(i, None)

    def collect(self) -> None:
        for i, pid in self.signalled.items():
            status = self.wd.status(i)
            if i not in self.answers and status is not None and status.pid == pid and status.asked >= self.asked:
                self.answers[i] = status

    async def wait(self, timeout: float) -> None:
        """Until every sibling answered, or ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self.signal_ready()
            self.collect()
            if (not self.silent and len(self.answers) == len(self.signalled)) or time.monotonic() >= deadline:
                return
            await asyncio.sleep(POLL)

"""The private directory a ``router serve --workers N`` parent shares with its workers.

The parent creates it (``tempfile.mkdtemp``: mode 0700, so only this user can read or write it),
writes its own pid and its workers' pids into ``workers.json``, passes the path to every worker as
``--worker-dir`` and removes it when it exits. Each worker keeps two files in it:

- ``metrics-<i>.json``: the worker's latest metric values (``router.metrics_shared``);
- ``status-<i>.json``: its pid, config generation and last reload (result, errors, and when the
  reload was asked for), rewritten after every reload.

Every file is written whole under a temporary name and renamed over the old one (``os.replace`` is
atomic), so a reader sees the previous version or the new one, never half a file. Nothing is locked:
each file has one writer, its own worker's event loop, which writes its files in order.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from router.gateway import Gateway

WORKERS_FILE = "workers.json"


def create() -> Path:
    """The parent's new private directory (mode 0700)."""
    return Path(tempfile.mkdtemp(prefix="router-workers-"))


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` whole, then rename it into place: readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(obj))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The file's JSON, None when it is missing or unreadable (a worker that has not written yet)."""
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def announce_workers(directory: Path, pids: list[int]) -> None:
    """The parent's record of its workers: which pids a worker may signal (see ``WorkerDir.sibling``)."""
    write_json(directory / WORKERS_FILE, {"parent": os.getpid(), "pids": pids})


def _parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` from /proc (Linux); -1 when the process is gone, None without /proc."""
    if not Path("/proc/self/stat").exists():
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[1])


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """What ``status-<i>.json`` says about worker ``worker``."""

    worker: int
    pid: int
    generation: int
    asked: float  # time.monotonic() when its last reload was asked for (0: the start-up load)
    last_reload: dict[str, Any] | None

    def view(self) -> dict[str, Any]:
        """One entry of the ``workers`` list in /admin/config and POST /admin/reload answers."""
        last = self.last_reload or {}
        return {"worker": self.worker, "pid": self.pid, "generation": self.generation,
                "ok": bool(last.get("ok", True)), "errors": last.get("errors", []),
                "reason": last.get("reason"), "at": last.get("at")}


class WorkerDir:
    """One worker's side of the shared directory."""

    def __init__(self, path: Path, worker: int):
        self.path = path
        self.worker = worker

    def metrics_file(self, worker: int) -> Path:
        return self.path / f"metrics-{worker}.json"

    def status_file(self, worker: int) -> Path:
        return self.path / f"status-{worker}.json"

    # --- metrics ------------------------------------------------------------------------------

    def write_metrics(self, families: list[dict[str, Any]]) -> None:
        write_json(self.metrics_file(self.worker), {"worker": self.worker, "pid": os.getpid(),
                                                    "at": time.time(), "families": families})

    def others_metrics(self) -> list[tuple[int, list[dict[str, Any]]]]:
        """The other workers' latest metric values, by worker index; a worker that died keeps its
        last file, so its counts stay in the sums."""
        out = []
        for path in sorted(self.path.glob("metrics-*.json")):
            data = read_json(path)
            if isinstance(data, dict) and data.get("worker") != self.worker:
                out.append((int(data["worker"]), list(data["families"])))
        return sorted(out, key=lambda item: item[0])

    # --- reload status ------------------------------------------------------------------------

    def publish_status(self, gateway: Gateway, asked: float) -> None:
        """After each reload of this worker (``asked``: when it was asked for, time.monotonic())."""
        last = gateway.last_reload.as_dict() if gateway.last_reload is not None else None
        write_json(self.status_file(self.worker), {"worker": self.worker, "pid": os.getpid(),
                                                   "generation": gateway.generation, "asked": asked,
                                                   "last_reload": last})

    def status(self, worker: int) -> WorkerStatus | None:
        data = read_json(self.status_file(worker))
        if not isinstance(data, dict):
            return None
        return WorkerStatus(int(data["worker"]), int(data["pid"]), int(data["generation"]),
                            float(data["asked"]), data.get("last_reload"))

    def worker_pids(self) -> list[int]:
        """The parent's list of its workers' pids, by index (empty before the parent wrote it)."""
        data = read_json(self.path / WORKERS_FILE)
        if not isinstance(data, dict) or data.get("parent") != os.getppid():
            return []  # not our parent's list (or our parent is gone): signal no one
        return [int(p) for p in data["pids"]]

    def statuses(self) -> list[WorkerStatus | None]:
        """Every worker's status by index (None: not written yet); this worker's own too."""
        count = max(len(self.worker_pids()), self.worker + 1)
        return [self.status(i) for i in range(count)]

    def sibling(self, worker: int) -> int | None:
        """The pid of worker ``worker`` when it is one of our parent's live workers, else None.

        Only such a pid is ever signalled: it is in the parent's list (in a directory only this
        user can write) and, where /proc tells, its parent is still our parent (no reused pid).
        """
        pids = self.worker_pids()
        if worker == self.worker or not 0 <= worker < len(pids):
            return None
        pid = pids[worker]
        parent = _parent_of(pid)
        return pid if parent is None or parent == os.getppid() else None

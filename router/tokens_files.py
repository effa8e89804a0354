"""The token store in the workers' private directory (``--workers N`` with ``state.backend: memory``):
what :mod:`router.tokens_shared` shares, among one parent's workers.

Per token account (named by a hash of its key, never by a secret) in the directory
:mod:`router.worker_dir` describes (mode 0700, removed when the parent exits):

- ``token-<hash>.json``: the access token document, until when it may be used, and the latest rotated
  refresh token; mode 0600, written whole under a temporary name and renamed into place (readers see
  the old file or the new one), at most ``FILE_LIMIT`` bytes read;
- ``token-<hash>.lock``: an advisory ``flock`` held by the worker refreshing now (the kernel releases
  it if that worker dies).

The files are tiny and written once per refresh, never per request. An OS error raises
:class:`~router.tokens_shared.StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from pathlib import Path

import orjson

from router.tokens_shared import SharedTokens, StoreUnavailable

FILE_LIMIT = 256 * 1024  # bytes: two token documents are a few KiB; anything larger is not ours


class FileTokenStore:
    """:class:`~router.tokens_shared.TokenStore` in one directory the workers share."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.held: dict[str, int] = {}  # lock owner -> its open lock file

    def _path(self, key: str, suffix: str) -> Path:
        return self.directory / f"token-{hashlib.sha256(key.encode()).hexdigest()[:24]}.{suffix}"

    def _load(self, key: str) -> dict[str, object]:
        try:
            with self._path(key, "json").open("rb") as f:
                raw = f.read(FILE_LIMIT + 1)
        except FileNotFoundError:
            return {}
        except OSError:
            raise StoreUnavailable("worker directory") from None
        try:
            doc = orjson.loads(raw) if len(raw) <= FILE_LIMIT else None
        except orjson.JSONDecodeError:
            doc = None
        return doc if isinstance(doc, dict) else {}

    async def read(self, key: str) -> tuple[object, object]:
        doc = self._load(key)
        until = doc.get("access_until")
        fresh = isinstance(until, float | int) and until > time.time()
        return (doc.get("access") if fresh else None), doc.get("refresh")

    async def write(self, key: str, access: bytes, ttl_ms: int, refresh: bytes | None) -> None:
        doc = self._load(key)
        doc.update(access=access.decode(), access_until=time.time() + ttl_ms / 1000)
        if refresh is not None:
            doc["refresh"] = refresh.decode()
        path = self._path(key, "json")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(doc))
            os.replace(tmp, path)
        except OSError:
            raise StoreUnavailable("worker directory") from None

    async def lock(self, key: str, owner: str, ttl_ms: int) -> bool:
        """The account's lock without waiting (``ttl_ms`` unused: a dead holder's lock goes with it)."""
        try:
            fd = os.open(self._path(key, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            raise StoreUnavailable("worker directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another worker holds it
            os.close(fd)
            return False
        self.held[owner] = fd
        return True

    async def unlock(self, key: str, owner: str) -> None:
        fd = self.held.pop(owner, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    async def locked(self, key: str) -> bool:
        owner = f"probe-{os.getpid()}"
        if not await self.lock(key, owner, 0):
            return True
        await self.unlock(key, owner)
        return False


def worker_tokens(directory: Path) -> SharedTokens:
    """The shared side for a ``--workers`` child without a shared state: its workers' directory."""
    return SharedTokens(FileTokenStore(directory))

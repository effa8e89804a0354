"""Unguessable ids without a system call per id.

A Responses id is the key to a stored conversation, so ids come from the OS random source; reading
it for every id costs a system call (two per request), so it is read 4 KiB at a time and sliced.
"""

from __future__ import annotations

import os

BATCH = 4096


class IdGenerator:
    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def new(self, prefix: str = "", size: int = 12) -> str:
        """``prefix`` + ``2 * size`` hex characters of fresh OS randomness."""
        pos = self._pos
        if pos + size > len(self._buf):
            self._buf, pos = os.urandom(BATCH), 0
        self._pos = pos + size
        return prefix + self._buf[pos:pos + size].hex()

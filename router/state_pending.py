"""What a gateway wrote to its shared state while the backend could not take it, kept until it can.

Each kind is bounded (a long outage cannot grow it without end): cooldowns and counts by the number
of accounts and scopes, bindings and stored blobs by entries and bytes, oldest dropped first.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

MAX_BINDINGS = 10_000
MAX_BLOBS = 10_000
MAX_BLOB_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Blob:
    """A stored entry (a Responses conversation, a signature) and the bounds it is written with."""

    blob: bytes
    ttl: float
    max_items: int
    max_bytes: int


@dataclass(slots=True)
class Pending:
    # (account, scope) -> deadline (epoch ms), until a write of it succeeded
    cooldowns: dict[tuple[str, str], int] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)  # "req:<account>" / "fail:<account>"
    resets: set[str] = field(default_factory=set)  # accounts an operator reset here
    bindings: OrderedDict[str, str] = field(default_factory=OrderedDict)  # session -> account
    blobs: OrderedDict[tuple[str, str], Blob] = field(default_factory=OrderedDict)  # (kind, key) -> entry
    blob_bytes: int = 0

    def cool(self, key: str, scope: str, until_ms: int) -> None:
        self.cooldowns[(key, scope)] = max(until_ms, self.cooldowns.get((key, scope), 0))

    def written(self, sent: dict[tuple[str, str], int]) -> None:
        """Cooldowns a write succeeded for (a later, longer one stays pending)."""
        for item, until in sent.items():
            if self.cooldowns.get(item) == until:
                del self.cooldowns[item]

    def reset(self, key: str) -> None:
        self.cooldowns = {item: ms for item, ms in self.cooldowns.items() if item[0] != key}
        self.resets.add(key)

    def bind(self, session_key: str, account_key: str) -> None:
        self.bindings[session_key] = account_key
        self.bindings.move_to_end(session_key)
        while len(self.bindings) > MAX_BINDINGS:
            self.bindings.popitem(last=False)

    def keep_blobs(self, kind: str, items: list[tuple[str, bytes]], ttl: float, max_items: int,
                   max_bytes: int) -> None:
        for key, blob in items:
            old = self.blobs.pop((kind, key), None)
            self.blob_bytes -= len(old.blob) if old else 0
            self.blobs[(kind, key)] = Blob(blob, ttl, max_items, max_bytes)
            self.blob_bytes += len(blob)
        while self.blobs and (len(self.blobs) > MAX_BLOBS or self.blob_bytes > MAX_BLOB_BYTES):
            _, dropped = self.blobs.popitem(last=False)
            self.blob_bytes -= len(dropped.blob)

    def take_blobs(self) -> list[tuple[str, str, Blob]]:
        taken = [(kind, key, entry) for (kind, key), entry in self.blobs.items()]
        self.blobs.clear()
        self.blob_bytes = 0
        return taken

    def take_over(self, other: Pending) -> None:
        """Everything ``other`` still had to write (a reload replaced its backend by this one's)."""
        for (key, scope), until in other.cooldowns.items():
            self.cool(key, scope, until)
        self.counts.update(other.counts)
        self.resets |= other.resets
        for session, account in other.bindings.items():
            self.bind(session, account)
        for (kind, key), entry in other.blobs.items():
            self.keep_blobs(kind, [(key, entry.blob)], entry.ttl, entry.max_items, entry.max_bytes)
        other.cooldowns, other.counts, other.resets = {}, Counter(), set()
        other.bindings.clear()
        other.take_blobs()

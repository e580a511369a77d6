"""One lock per app name, kept only while someone holds it or waits for it.

A rollout of an app must never run beside another of the same app, even across a
delete and a re-create of its name: a lock is shared by everyone who asked for it
before it was released, and dropped only when the last of them is done, so the table
holds the names in use, not every name ever seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holding or waiting


class KeyedLocks:
    """``async with locks.hold(name):`` serialises work on ``name``."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def locked(self, name: str) -> bool:
        """Whether someone holds the lock of ``name`` now."""
        entry = self._entries.get(name)
        return entry is not None and entry.lock.locked()

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """Hold the lock of ``name`` for the block (waiting for it first)."""
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[name]

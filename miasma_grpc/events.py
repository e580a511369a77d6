"""Fan-out of port events to watchers: one shared ring buffer, no per-watcher queues.

Writers only append to the ring and wake waiting watchers (O(1), never
blocked by a watcher). Each watcher keeps its own cursor, the revision up to
which it has sent everything, and pulls what is newer: from the ring while
the ring still covers its cursor, from the SQLite log when it has fallen
behind (a slow or stalled reader costs nothing until it reads again). A
watcher behind the compacted log is told to re-list (``OutOfRange``); at
shutdown every watcher ends with ``Unavailable`` carrying its cursor.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

from miasma_grpc.domain.errors import OutOfRange, Unavailable
from miasma_grpc.domain.events import (
    EventKind,
    PortEvent,
    Progress,
    Retention,
    SnapshotComplete,
    WatchItem,
)
from miasma_grpc.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

RING_SIZE = 4096
CATCH_UP_PAGE = 512


class EventHub:
    """Publishes committed events to any number of watchers."""

    def __init__(
        self,
        store: SqliteStore,
        *,
        ring_size: int = RING_SIZE,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[asyncio.Event, float], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        # Injectable, so tests of heartbeats need no real seconds.
        self._clock = clock
        self._wait = wait or _wait
        self._ring: collections.deque[PortEvent] = collections.deque(maxlen=ring_size)
        self.revision = 0  # the last committed revision
        self._ring_floor = 0  # every event above this revision is in the ring
        self._changed = asyncio.Event()
        self._closed = False
        self.watchers = 0

    async def start(self) -> None:
        """Begin at the store's current revision and listen to its commits."""
        self.revision = self._ring_floor = await self.store.revision()
        self.store.subscribe(self.publish)

    def publish(self, revision: int, events: Sequence[PortEvent]) -> None:
        """Called by the store after each commit: append and wake the watchers."""
        for event in events:
            if len(self._ring) == self._ring.maxlen:
                self._ring_floor = self._ring[0].revision
            self._ring.append(event)
        self.revision = max(self.revision, revision)
        self._wake()

    def close(self) -> None:
        """End every watch with ``Unavailable`` (server shutdown)."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def compact_forever(self, retention: Retention, interval: float) -> None:
        """Apply ``retention`` to the log every ``interval`` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.store.compact_events(retention)
            except Exception:  # a failed pass must not end the server; the next one retries
                log.exception("event log compaction failed")

    async def watch(
        self, app: str | None, start_revision: int, *, heartbeat: float
    ) -> AsyncGenerator[WatchItem]:
        """Events of ``app`` (or all apps) after ``start_revision``; 0 starts with a snapshot.

        Yields a :class:`Progress` whenever ``heartbeat`` seconds pass without
        anything else being sent.
        """
        self.watchers += 1
        try:
            if start_revision == 0:
                revision, apps = await self.store.snapshot(app)
                for current in apps:
                    yield PortEvent(
                        revision,
                        current.name,
                        EventKind.SNAPSHOT,
                        new=current.bindings,
                        group=current.group,
                        routes=current.routes,
                    )
                yield SnapshotComplete(revision)
                cursor = revision
            else:
                await self._check_resumable(start_revision)
                cursor = start_revision
            last_sent = self._clock()
            while True:
                changed = self._changed  # taken before reading, so no wake-up is missed
                if self._closed:
                    raise Unavailable(
                        f"the server is shutting down: resume from revision {cursor}",
                        reason="SERVER_SHUTTING_DOWN",
                        metadata={"resume_revision": str(cursor)},
                    )
                batch, cursor = await self._after(cursor, app)
                for event in batch:
                    yield event
                    last_sent = self._clock()
                if batch:
                    continue
                wait = last_sent + heartbeat - self._clock()
                if wait > 0 and await self._wait(changed, wait):
                    continue
                yield Progress(cursor)
                last_sent = self._clock()
        finally:
            self.watchers -= 1

    async def _after(self, cursor: int, app: str | None) -> tuple[list[PortEvent], int]:
        """The next events after ``cursor`` and the cursor once they are sent."""
        if cursor >= self._ring_floor:
            # No await from here to the return: the ring and revision are read together.
            # Newest first, stopping at the cursor: a caught-up watcher looks at one event.
            batch: list[PortEvent] = []
            for event in reversed(self._ring):
                if event.revision <= cursor:
                    break
                if app is None or event.app == app:
                    batch.append(event)
            batch.reverse()
            return batch, max(cursor, self.revision)
        ring_floor = self._ring_floor
        # The floor and the events in one read: a compaction cannot slip in between.
        floor, batch = await self.store.read_log(after=cursor, app=app, limit=CATCH_UP_PAGE)
        if cursor < floor:
            raise _compacted(cursor, floor)
        if len(batch) == CATCH_UP_PAGE:
            return batch, batch[-1].revision
        # Everything up to the ring's floor was committed before this read: all sent.
        return batch, max([ring_floor, *(e.revision for e in batch)])

    async def _check_resumable(self, revision: int) -> None:
        floor = await self.store.events_floor()
        if revision < floor:
            raise _compacted(revision, floor)
        if revision > self.revision:
            # The database may be a moment ahead of what this hub has published (a read
            # between a commit and its notification): a committed revision is a valid start.
            committed = await self.store.revision()
            if revision > committed:
                raise OutOfRange(
                    f"revision {revision} is ahead of this server's revision {committed}",
                    reason="REVISION_AHEAD",
                    metadata={
                        "oldest_revision": str(floor),
                        "oldest_start_revision": str(floor),
                        "current_revision": str(committed),
                    },
                )


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``: True if it was set, False if time ran out."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


def _compacted(revision: int, floor: int) -> OutOfRange:
    """The error of a start below the log's floor (the oldest start still accepted)."""
    return OutOfRange(
        f"revision {revision} is older than the event log: the oldest start_revision it can "
        f"resume from is {floor}; list the apps again (start_revision 0)",
        metadata={"oldest_revision": str(floor), "oldest_start_revision": str(floor)},
    )

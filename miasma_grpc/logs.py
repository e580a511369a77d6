"""Reading an app's output: the last lines, then a follow that stays with the app.

Docker ends a container's log stream when the container stops, and a rollout or a
repair gives the app a new container. A follow therefore looks again at what the
app runs each time a stream ends, goes on with the new container (from its first
line) with a notice that says so, or, when it is the same container started again,
from just after the last line sent. It ends when the app is deleted, or when the
caller goes away. While Docker is unreachable it waits (with a notice) rather than
fail. A swarm service's stream already spans its tasks (docs/logs.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.errors import NotFound, RuntimeFailure, Unavailable
from miasma_grpc.domain.logs import LogLine, LogNotice, LogSource

RECHECK = 0.5  # seconds between looks at what an app runs while a follow waits for it
LogItem = LogLine | LogNotice


class AppLogs:
    """Serves the output of the apps of one :class:`AppManager`."""

    def __init__(self, manager: AppManager, *, recheck: float = RECHECK) -> None:
        self.manager = manager
        self.recheck = recheck
        self._closed = asyncio.Event()

    def close(self) -> None:
        """End every read with :class:`Unavailable` (server shutdown)."""
        self._closed.set()

    async def read(
        self, name: str, *, tail: int = 0, since: int | None = None, follow: bool = False
    ) -> AsyncGenerator[LogItem]:
        """The app's last ``tail`` lines (0: all) written at or after ``since`` (ns), then,
        with ``follow``, its new lines and notices; :class:`NotFound` for no such app, and
        :class:`Unavailable` when the server shuts down meanwhile."""
        items = self._read(name, tail=tail, since=since, follow=follow)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            while True:
                item = asyncio.ensure_future(anext(items))
                try:
                    await asyncio.wait((item, closed), return_when=asyncio.FIRST_COMPLETED)
                finally:  # shutting down, or the caller went away: stop the read first
                    if not item.done():
                        item.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await item
                if item.cancelled():
                    raise Unavailable("the server is shutting down; read the logs again")
                try:
                    line = item.result()
                except StopAsyncIteration:
                    return
                yield line
        finally:
            closed.cancel()
            await items.aclose()

    async def _read(
        self, name: str, *, tail: int, since: int | None, follow: bool
    ) -> AsyncGenerator[LogItem]:
        app = await self.manager.get(name)
        runtime = self.manager.runtime
        if not follow:
            source = await runtime.log_source(app)
            if source is not None:
                async for line in runtime.logs(source, tail=tail, since=since, follow=False):
                    yield line
            return
        follow_state = _Follow(tail=tail, since=since)
        while True:
            try:
                source = await runtime.log_source(app)
                if notice := follow_state.moved_to(source, name):
                    yield notice
                if source is not None and follow_state.should_read(source):
                    async for item in follow_state.read(runtime.logs, source):
                        yield item
            except Unavailable as exc:
                if notice := follow_state.away(str(exc)):
                    yield notice
            except RuntimeFailure:
                pass  # the container went between the look and the read: look again
            await asyncio.sleep(self.recheck)
            try:
                app = await self.manager.get(name)
            except NotFound:
                yield LogNotice(time.time_ns(), f"app {name!r} was deleted")
                return


class _Follow:
    """Where a follow stands: what it reads, and the time of the last line it sent."""

    def __init__(self, *, tail: int, since: int | None) -> None:
        self.tail, self.since = tail, since
        self.source: LogSource | None = None
        self.started = False  # a first source was read (later ones are read whole)
        self.last: int | None = None  # ns of the last line sent from ``source``
        self.waiting = False  # a "waits" notice was sent since the last line
        self.sources: set[str] = set()

    def moved_to(self, source: LogSource | None, name: str) -> LogNotice | None:
        """The notice to send when the app's output now comes from ``source``."""
        now = time.time_ns()
        if source is None:
            if self.waiting:
                return None
            self.waiting = True
            return LogNotice(now, f"app {name!r} has no container now; waiting for one")
        if self.source is not None and source.ident == self.source.ident:
            self.source = source
            return None
        had = self.source
        self.source, self.last, self.waiting = source, None, False
        if had is None:
            return None
        self.sources.add(source.ident[:12])
        return LogNotice(
            now,
            f"now following {source.ident[:12]}: the app's container {had.ident[:12]} "
            "was replaced (a rollout or a repair)",
            source.ident[:12],
        )

    def should_read(self, source: LogSource) -> bool:
        """Read on start, and again only when it runs (a stopped one has nothing new)."""
        return not self.started or source.running

    async def read(self, logs: _Logs, source: LogSource) -> AsyncIterator[LogItem]:
        """The lines of ``source`` not sent yet, following it until it stops."""
        if self.started:
            tail, since = 0, None if self.last is None else self.last + 1
        else:
            tail, since = self.tail, self.since
        self.started = True
        async for line in logs(source, tail=tail, since=since, follow=True):
            if self.sources and line.source not in self.sources:  # a new swarm task
                yield LogNotice(line.time, f"now also following task {line.source}", line.source)
            self.sources.add(line.source)
            self.last, self.waiting = line.time, False
            yield line

    def away(self, why: str) -> LogNotice | None:
        """The notice to send (once per gap) while Docker cannot be read."""
        if self.waiting:
            return None
        self.waiting = True
        return LogNotice(time.time_ns(), f"waiting for Docker: {why}")


class _Logs(Protocol):
    """The shape of :meth:`Runtime.logs`."""

    def __call__(
        self, source: LogSource, *, tail: int, since: int | None, follow: bool
    ) -> AsyncIterator[LogLine]: ...  # pragma: no cover

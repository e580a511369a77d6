"""Follows Docker's event stream: observed state within a second of Docker's change.

One subscription (the runtime's :meth:`~miasma_grpc.runtime.base.Runtime.changes`)
names the apps whose containers (or tasks) changed; each is looked at and
repaired at once (:meth:`Reconciler.repair`), not at the next periodic pass,
which stays as the safety net. Names arriving together are taken together.
When the stream breaks, or Docker is gone, every read says since when the
figures are unknown; on reconnection a full pass looks at everything before
reads are current again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.errors import RuntimeFailure, Unavailable
from miasma_grpc.reconcile import Reconciler
from miasma_grpc.store.sqlite import now

log = logging.getLogger(__name__)

GATHER = 0.05  # seconds to let the events of one change arrive before acting on them
FIRST_RETRY = 0.5  # seconds before re-subscribing; doubled up to MAX_RETRY
MAX_RETRY = 5.0
MAX_REPAIR_RETRY = 30.0  # seconds between repairs of an app that keeps failing
CHECK_AGAIN = 0.3  # seconds after an event's repair, a second look


class Observer:
    """Runs until cancelled: subscribe, resync, follow; on a break, say so and retry."""

    def __init__(
        self,
        manager: AppManager,
        reconciler: Reconciler,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.manager = manager
        self.reconciler = reconciler
        self.sleep = sleep  # injectable: tests need no real seconds
        self.clock = clock
        self._changed: set[str] = set()
        self._wake = asyncio.Event()
        self._following = False  # between a subscription and its break
        self._resync = False  # a full look is wanted (Docker answers pings again)
        self._checks: set[str] = set()  # apps to look at once more (no further check after)
        self._cooling: set[str] = set()  # apps whose repair failed: retried after a delay
        self._group: asyncio.TaskGroup  # set by run()
        self._retry_delay: dict[str, float] = {}
        self.subscriptions = 0

    def docker_is_back(self) -> None:
        """Pings answer again: if the stream still runs, look at everything once more (what
        happened meanwhile), then reads are current again."""
        if self._following:
            self._resync = True
            self._wake.set()

    async def run(self) -> None:
        """Follow Docker's changes until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group  # retries of failed repairs run here too
            group.create_task(self._repair_changed(), name="observer-repairs")
            retry = FIRST_RETRY
            while True:
                try:
                    await self._follow()
                except (Unavailable, RuntimeFailure) as exc:
                    log.info("not watching Docker (%s); retrying in %g s", exc.message, retry)
                except Exception:  # a surprise must not end the server: look again later
                    log.exception("watching Docker failed; retrying in %g s", retry)
                self._following = False
                self.manager.lose_sight(self.clock())
                await self.sleep(retry)
                retry = min(retry * 2, MAX_RETRY) if self.subscriptions == 0 else FIRST_RETRY
                self.subscriptions = 0

    async def _follow(self) -> None:
        async for name in self.manager.runtime.changes():
            if name:
                log.debug("Docker reports a change of app %s", name)
                self._changed.add(name)
                self._wake.set()
                continue
            # Subscribed: what happened before is read by one full look, then reads are current.
            self.subscriptions += 1
            self._following = True
            log.debug("following Docker's events")
            await self._look_at_everything()

    async def _look_at_everything(self) -> None:
        try:
            await self.reconciler.reconcile_all()
        except (Unavailable, RuntimeFailure) as exc:
            log.warning("could not look at Docker: %s", exc.message)
            raise
        self.manager.regain_sight()

    async def _repair_changed(self) -> None:
        while True:
            await self._wake.wait()
            await self.sleep(GATHER)  # the events of one change come in a burst
            self._wake.clear()
            if self._resync and self._following:
                self._resync = False
                # If Docker fails this look, the stream breaks too, and is taken up again.
                with contextlib.suppress(Unavailable, RuntimeFailure):
                    await self._look_at_everything()
            names, self._changed = self._changed, set()
            checks, self._checks = self._checks, set()
            async with asyncio.TaskGroup() as group:
                for name in sorted((names | checks) - self._cooling):
                    group.create_task(self._repair(name, check_again=name in names))

    async def _repair(self, name: str, *, check_again: bool) -> None:
        """Repair ``name``; after a failure, the events of the attempt itself (a container
        made and removed) must not set off the next one at once: retry after a backoff.

        Docker reports a death a moment before its listings show it: a repair set off by
        events is checked once more, ``CHECK_AGAIN`` seconds later.
        """
        if await self.reconciler.repair(name):
            self._retry_delay.pop(name, None)
            if check_again:
                self._spawn(self._later(name, CHECK_AGAIN, check=True))
            return
        # In a crash loop, the app's next start is due then (docs/design.md §4).
        delay = self.manager.restart_wait(name)
        if not delay:
            delay = self._retry_delay.get(name, FIRST_RETRY)
            self._retry_delay[name] = min(delay * 2, MAX_REPAIR_RETRY)
        log.debug("repair of app %s failed; retried in %g s", name, delay)
        self._cooling.add(name)
        self._spawn(self._later(name, delay, cooling=True))

    def _spawn(self, later: Coroutine[Any, Any, None]) -> None:
        """Run ``later`` in the observer's group (not when it is shutting down)."""
        try:
            self._group.create_task(later)
        except RuntimeError:  # the group is finishing: the server stops
            later.close()

    async def _later(
        self, name: str, delay: float, *, check: bool = False, cooling: bool = False
    ) -> None:
        """After ``delay`` seconds, look at ``name`` again: as a check (``check``: no further
        check after it), or as a change."""
        try:
            await self.sleep(delay)
        finally:
            if cooling:
                self._cooling.discard(name)
        # The sets are swapped out as they are taken: look them up now, not before the wait.
        (self._checks if check else self._changed).add(name)
        self._wake.set()

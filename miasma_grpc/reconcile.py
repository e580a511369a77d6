"""Drives Docker toward the desired state in SQLite, in the background.

At start-up it adopts labelled containers, recreates missing ones and
removes containers whose app no longer exists; afterwards it repeats that
periodically and whenever Docker becomes reachable again. It also keeps
the health status in step with Docker's reachability.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.errors import MiasmaError, NotFound

log = logging.getLogger(__name__)

PING_INTERVAL = 2.0
CONCURRENCY = 4


class Reconciler:
    """Background loop: ping Docker, report health, converge apps."""

    def __init__(
        self,
        manager: AppManager,
        on_reachability: Callable[[bool], Awaitable[None]],
        interval: float = 30.0,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.manager = manager
        self.on_reachability = on_reachability
        self.interval = interval
        self.sleep = sleep  # injectable: tests drive the loop without real seconds
        self.passes = 0
        self._limit = asyncio.Semaphore(CONCURRENCY)  # repairs at once, passes and events alike

    async def run(self) -> None:
        """Loop until cancelled."""
        reachable: bool | None = None
        since_pass = self.interval
        while True:
            info = await self.manager.runtime.info()
            if info.reachable != reachable:
                log.info("Docker is %s", "reachable" if info.reachable else "unreachable")
                await self.on_reachability(info.reachable)
                if info.reachable:
                    since_pass = self.interval  # converge now that Docker is back
                reachable = info.reachable
            if reachable and since_pass >= self.interval:
                try:
                    await self.reconcile_all()
                except Exception:  # a bad pass must not end the loop; the next one retries
                    log.exception("reconciliation pass failed")
                since_pass = 0.0
            await self.sleep(PING_INTERVAL)
            since_pass += PING_INTERVAL

    async def reconcile_all(self) -> None:
        """One pass over every app and every Miasma container.

        One listing of Docker tells which apps already run as stored; only the
        others (and apps with a rollout result owed or a failure reported) get
        a full convergence, so a pass over 10,000 quiet apps costs one call.
        """
        manager = self.manager
        apps = await manager.store.list_apps()
        survey = await manager.runtime.survey(apps)
        async with asyncio.TaskGroup() as group:
            for app in apps:
                observed = survey.in_sync.get(app.name)
                if observed is None or app.rollout_owed or app.name in manager.failures:
                    group.create_task(self.repair(app.name))
                elif not manager.locks.locked(app.name):  # a rollout reports its own state
                    manager.observed[app.name] = observed
        try:
            await self._remove_orphans(set(survey.found) - {app.name for app in apps})
        except MiasmaError as exc:
            log.warning("could not remove orphaned containers: %s", exc.message)
        self.passes += 1

    async def repair(self, name: str) -> bool:
        """Drive Docker to app ``name`` as stored (or remove what runs for it, if there is no
        such app any more). Whether the app now runs as asked; failures are logged, never
        raised: one app's trouble must not cancel others' repairs."""
        async with self._limit:
            log.debug("repairing app %s", name)
            try:
                await self.manager.converge(name)
                # Docker may report a death a moment before its listings do: look again.
                return self.manager.runs_as_asked(await self.manager.store.get_app(name))
            except NotFound:
                try:
                    await self._remove_orphans({name})
                    return True
                except MiasmaError as exc:
                    log.warning("could not remove the containers of app %s: %s", name, exc.message)
            except MiasmaError as exc:
                log.warning("could not converge app %s: %s", name, exc.message)
            except Exception:
                log.exception("unexpected error converging app %s", name)
            return False

    async def _remove_orphans(self, orphans: set[str]) -> None:
        for name in orphans:
            async with self.manager.locks.hold(name):
                try:
                    await self.manager.store.get_app(name)
                    continue  # created meanwhile
                except NotFound:
                    pass
                log.info("removing containers of deleted app %s", name)
                await self.manager.runtime.remove(name)

"""Whether an app listens where its users are sent (docs/design.md §4).

Docker says a container runs as soon as its process starts; that says nothing
of the app answering on its ports. After a rollout starts an app, its TCP
target ports are probed until each accepts a connection. While they do not,
reads show the phase "waiting for the app to listen on 3761"; once the
server's ready timeout has passed, the verdict "not listening on 3761 after
10 s" (and a NOT_LISTENING event). The probing goes on, slower, so the
verdict is lifted when the app listens after all. Apps that serve no port
(workers) or listen elsewhere are told apart from those that crashed: they
run, and say where they do not listen.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from miasma_grpc.domain.errors import RuntimeFailure, Unavailable
from miasma_grpc.domain.models import App, Protocol

log = logging.getLogger(__name__)

POLL = 0.1  # seconds between probes while the wait lasts
SLOW_POLL = 2.0  # seconds between probes after the verdict, doubled up to MAX_POLL
MAX_POLL = 30.0

Probe = Callable[[App], Awaitable[frozenset[int] | None]]
Verdict = Callable[[App, "Listening"], Awaitable[None]]


@dataclass(frozen=True)
class Listening:
    """The TCP target ports of an app that accept no connection yet, and whether the wait
    for them (``timeout`` seconds) is over."""

    ports: tuple[int, ...]
    timeout: float
    over: bool = False

    @property
    def phase(self) -> str:
        """What the rollout waits for, while it does."""
        if self.over:
            return ""
        return f"waiting for the app to listen on {_ports(self.ports)} (up to {self.timeout:g} s)"

    @property
    def verdict(self) -> str:
        """Why nothing answers, once the wait is over."""
        if not self.over:
            return ""
        return f"not listening on {_ports(self.ports)} after {self.timeout:g} s"


class Readiness:
    """Owns the listening watches of apps: one task per app being watched."""

    def __init__(
        self,
        probe: Probe,
        timeout: float,
        on_verdict: Verdict,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe = probe  # the runtime's deaf_ports
        self.timeout = timeout
        self.on_verdict = on_verdict
        self.clock = clock
        self.state: dict[str, Listening] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def watch(self, app: App) -> None:
        """Watch ``app``'s ports anew: a rollout (re)started it. The first probe is made at
        once, so an app that listens already (most do, by the end of a rollout) is never
        said to be waiting; the others are watched in the background."""
        self.forget(app.name)
        ports = tuple(sorted({b.target for b in app.bindings if b.protocol is Protocol.TCP}))
        if not ports or self.timeout <= 0:
            return
        started = self.clock()
        deaf = await self._probe(app, ports)
        if not deaf:  # it listens, or cannot be probed
            return
        self.state[app.name] = Listening(tuple(sorted(deaf)), self.timeout)
        self._tasks[app.name] = asyncio.create_task(
            self._watch(app, started + self.timeout),
            name=f"readiness-{app.name}",
            context=contextvars.Context(),  # not the request's: its verdict is no caller's change
        )

    def forget(self, name: str) -> None:
        """Stop watching ``name`` (stopped, deleted, or about to be rolled out again)."""
        self.state.pop(name, None)
        if (task := self._tasks.pop(name, None)) is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop every watch (the server stops)."""
        tasks = list(self._tasks.values())
        for name in list(self._tasks):
            self.forget(name)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _probe(self, app: App, ports: tuple[int, ...]) -> frozenset[int] | None:
        """The ports ``app`` accepts nothing on now (all of ``ports`` while Docker cannot
        say); None when the runtime cannot tell."""
        try:
            return await self.probe(app)
        except (Unavailable, RuntimeFailure) as exc:  # Docker away: ask again later
            log.debug("could not probe app %s: %s", app.name, exc.message)
            return frozenset(ports)

    async def _watch(self, app: App, deadline: float) -> None:
        pause = SLOW_POLL
        while True:
            await asyncio.sleep(POLL)
            deaf = await self._probe(app, self.state[app.name].ports)
            if not deaf:  # it listens now, or cannot be told: nothing to say
                self.state.pop(app.name, None)
                self._tasks.pop(app.name, None)
                return
            now = Listening(tuple(sorted(deaf)), self.timeout, self.clock() >= deadline)
            before = self.state[app.name]
            if now != before:
                self.state[app.name] = now
                if now.over and not before.over:
                    log.info("app %s is %s", app.name, now.verdict)
                    try:
                        await self.on_verdict(app, now)
                    except Exception:  # the watch goes on: the verdict is in reads anyway
                        log.exception("could not record that app %s does not listen", app.name)
            if now.over:
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_POLL)


def _ports(ports: tuple[int, ...]) -> str:
    return ", ".join(map(str, ports))

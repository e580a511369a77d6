"""Rollouts that tell the truth (docs/design.md §4), through the manager over the in-memory
runtime: the phase of a rollout under way, whether a started app listens, crash loops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from miasma_grpc import crashes, readiness
from miasma_grpc.apps import AppManager
from miasma_grpc.domain.errors import RuntimeFailure
from miasma_grpc.domain.events import EventKind
from miasma_grpc.domain.models import App, DesiredState, Observed, RolloutState
from miasma_grpc.runtime.base import say
from miasma_grpc.runtime.fake import FakeRuntime
from tests.integration.conftest import open_manager

WAIT = 0.3  # the ready timeout of these managers, seconds


class SlowRuntime(FakeRuntime):
    """Says it pulls, then holds every apply until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.said = asyncio.Event()

    async def apply(self, app: App) -> Observed:
        say(f"pulling {app.image}: 1.0 of 2.0 MB")
        self.said.set()
        await self.go.wait()
        return await super().apply(app)


@pytest.fixture
async def manager(tmp_path: Path, runtime: FakeRuntime) -> AsyncIterator[AppManager]:
    """A manager whose ready timeout is WAIT seconds."""
    store, manager = await open_manager(tmp_path / "m.db", runtime, ready_timeout=WAIT)
    yield manager
    await manager.close()
    await store.__aexit__(None, None, None)


async def kinds(manager: AppManager, name: str) -> list[EventKind]:
    return [e.kind for e in await manager.store.read_events(after=0, app=name, limit=100)]


async def test_reads_say_what_a_rollout_does_while_docker_works(tmp_path: Path) -> None:
    """The runtime's words are the app's phase while the rollout lasts, and go with it."""
    runtime = SlowRuntime()
    store, manager = await open_manager(tmp_path / "m.db", runtime)
    try:
        rollout = asyncio.create_task(manager.create("web", image="web:1"))
        await runtime.said.wait()
        during = manager.observed_state(await manager.get("web"))
        assert during.phase == "pulling web:1: 1.0 of 2.0 MB"
        assert during.rollout is RolloutState.IN_PROGRESS
        runtime.go.set()
        app = await rollout
        assert manager.observed_state(app).phase == ""
    finally:
        await manager.close()
        await store.__aexit__(None, None, None)


async def test_an_app_that_does_not_listen_is_said_so_and_an_event_records_it(
    manager: AppManager, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting (a phase) until the ready timeout, then the verdict in reads and an event;
    the app runs all along (it may be a worker); when it listens after all, it is lifted."""
    monkeypatch.setattr(readiness, "SLOW_POLL", 0.02)
    app = await manager.create("worker", image="w:1")
    port = app.bindings[0].target
    runtime.deaf["worker"] = frozenset({port})
    await manager.readiness.watch(app)  # as the create did, now that the fake does not listen
    waiting = manager.observed_state(app)
    assert waiting.phase == f"waiting for the app to listen on {port} (up to {WAIT:g} s)"
    assert waiting.rollout is RolloutState.APPLIED
    assert not waiting.not_listening
    await asyncio.sleep(WAIT + 0.3)
    verdict = manager.observed_state(app)
    assert verdict.not_listening == (port,)
    assert verdict.last_error == f"not listening on {port} after {WAIT:g} s"
    assert (verdict.phase, verdict.running, verdict.rollout) == ("", 1, RolloutState.APPLIED)
    events = await manager.store.read_events(after=0, app="worker", limit=100)
    assert events[-1].kind is EventKind.NOT_LISTENING
    assert events[-1].message == verdict.last_error
    runtime.deaf["worker"] = frozenset()
    await asyncio.sleep(0.2)
    assert manager.observed_state(app) == replace(verdict, last_error="", not_listening=())


async def test_an_app_that_listens_has_nothing_to_say(manager: AppManager) -> None:
    """The watch ends at its first probe: no phase, no verdict, no event."""
    app = await manager.create("web", image="web:1")
    await asyncio.sleep(0.05)
    state = manager.observed_state(app)
    assert (state.phase, state.not_listening, state.last_error) == ("", (), "")
    assert EventKind.NOT_LISTENING not in await kinds(manager, "web")


async def test_a_runtime_that_cannot_tell_says_nothing(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """Where ports cannot be probed (a swarm), there is no waiting and no verdict."""
    runtime.deaf["web"] = None
    app = await manager.create("web", image="web:1")
    await asyncio.sleep(WAIT + 0.1)
    assert "web" not in manager.readiness.state
    assert manager.observed_state(app).phase == ""


async def test_stopping_an_app_ends_its_watch(manager: AppManager, runtime: FakeRuntime) -> None:
    """A stopped app is not said to be deaf."""
    app = await manager.create("web", image="web:1")
    runtime.deaf["web"] = frozenset({app.bindings[0].target})
    await manager.readiness.watch(app)
    await manager.set_desired_state("web", DesiredState.STOPPED)
    assert "web" not in manager.readiness.state
    await asyncio.sleep(WAIT + 0.1)
    assert EventKind.NOT_LISTENING not in await kinds(manager, "web")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_app_that_keeps_exiting_is_started_later_and_later(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """Two starts at once, then 1 s, 2 s… apart; meanwhile FAILED with the crash loop, its
    exit and last output, in reads and (once) in an event. A user's restart starts afresh."""
    clock = Clock()
    manager.crashes = crashes.CrashLoops(clock)
    await manager.create("crash", image="c:1")
    runtime.exits["crash"] = "not running: Exited (3) 1 second ago; its last output: boom"
    applies = runtime.applies
    await manager.converge("crash")
    await manager.converge("crash")
    assert runtime.applies == applies + 2  # started again at once, twice
    with pytest.raises(RuntimeFailure) as loop:
        await manager.converge("crash")
    assert loop.value.reason == "CRASH_LOOP"
    assert runtime.applies == applies + 2
    assert manager.restart_wait("crash") == 1.0
    state = manager.observed_state(await manager.get("crash"))
    assert state.rollout is RolloutState.FAILED
    assert state.last_error.startswith("crash loop: started again 2 times")
    assert "next start in 1 s; not running: Exited (3)" in state.last_error
    assert state.last_error.endswith("boom")
    clock.now += 1
    await manager.converge("crash")
    assert runtime.applies == applies + 3
    assert manager.restart_wait("crash") == 2.0  # the next one waits longer
    with pytest.raises(RuntimeFailure):
        await manager.converge("crash")
    assert (await kinds(manager, "crash")).count(EventKind.ROLLOUT_FAILED) == 2  # per wait
    await manager.restart("crash")  # the user's: counted afresh
    assert manager.restart_wait("crash") == 0
    clock.now += crashes.CALM + 1
    assert manager.crashes.starts("crash") == 0


async def test_a_loop_is_over_once_the_app_stays_up(manager: AppManager) -> None:
    """Starts more than CALM seconds apart are no loop."""
    clock = Clock()
    manager.crashes = crashes.CrashLoops(clock)
    for _ in range(5):
        manager.crashes.starting("web")
        clock.now += crashes.CALM + 1
    assert manager.crashes.starts("web") == 0
    assert manager.restart_wait("web") == 0


async def test_a_repair_that_finds_the_app_as_it_should_be_is_no_rollout(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """A check of an app that runs as stored (the repair Docker's events set off after
    every change) leaves it APPLIED in reads, not IN_PROGRESS; a repair that starts it
    again is a rollout while it works."""
    app = await manager.create("web", image="web:1")
    seen: list[RolloutState | None] = []
    real_apply = runtime.apply

    async def watched_apply(app: App) -> Observed:
        seen.append(manager.observed_state(await manager.get(app.name)).rollout)
        return await real_apply(app)

    runtime.apply = watched_apply  # type: ignore[method-assign]
    await manager.converge("web")
    runtime.exits["web"] = "not running: Exited (1)"
    await manager.converge("web")
    assert seen == [RolloutState.APPLIED, RolloutState.IN_PROGRESS]
    assert manager.observed_state(app).rollout is not RolloutState.IN_PROGRESS

"""The observer in-process, over the real manager and store and the in-memory runtime's
event stream: changes repaired at once, a broken stream said in every read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.models import Binding, DesiredState
from miasma_grpc.observer import FIRST_RETRY, Observer
from miasma_grpc.reconcile import Reconciler
from miasma_grpc.runtime.fake import Deployed, FakeRuntime
from tests.polling import until

SLEPT: list[float] = []


async def no_wait(seconds: float) -> None:
    """An injected sleep: no real seconds (the delays asked for are noted), but the loop
    turns."""
    SLEPT.append(seconds)
    await asyncio.sleep(0)


@pytest.fixture
async def observer(manager: AppManager) -> AsyncIterator[Observer]:
    """An observer following the fake runtime, running until the test ends."""
    SLEPT.clear()
    observer = Observer(manager, Reconciler(manager, _ignore), sleep=no_wait)
    task = asyncio.create_task(observer.run())
    await until(lambda: observer.subscriptions > 0 and manager.blind_since is None, "subscribed")
    yield observer
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_reads_are_unknown_until_the_first_full_look(manager: AppManager) -> None:
    """A manager that has not looked at Docker yet says so in every read."""
    app = await manager.create("web", image="img:1")
    assert manager.observed_state(app).unknown_since is not None


async def test_a_change_reported_by_docker_is_repaired_at_once(
    manager: AppManager, runtime: FakeRuntime, observer: Observer
) -> None:
    """A container removed by hand: its event leads to a repair, not the periodic pass."""
    await manager.create("web", image="img:1")
    del runtime.deployed["web"]
    runtime.events.put_nowait("web")
    await until(lambda: "web" in runtime.deployed, "web is running again")
    app = await manager.store.get_app("web")
    assert manager.observed_state(app).unknown_since is None


async def test_an_event_of_an_app_that_is_gone_removes_what_runs(
    manager: AppManager, runtime: FakeRuntime, observer: Observer
) -> None:
    """Containers of no app (deleted meanwhile, or made by hand) go at their first event."""
    runtime.deployed["ghost"] = Deployed("img:1", (), (Binding(3999, 3000),), {},
                                         DesiredState.RUNNING)  # fmt: skip
    runtime.events.put_nowait("ghost")
    await until(lambda: "ghost" not in runtime.deployed, "the ghost is removed")
    assert "ghost" in runtime.removed


async def test_a_broken_stream_is_said_in_every_read_until_it_is_back(
    manager: AppManager, runtime: FakeRuntime, observer: Observer
) -> None:
    """The stream breaks: reads carry unknown_since; subscribed again and looked at in full:
    reads are current, and what changed meanwhile is repaired."""
    app = await manager.create("web", image="img:1")
    runtime.reachable = False
    runtime.events.put_nowait(None)  # the stream ends
    await until(lambda: manager.blind_since is not None, "reads say unknown")
    for _ in range(50):  # Docker stays away for a while: reads keep saying so
        await asyncio.sleep(0)
    assert manager.observed_state(app).unknown_since == manager.blind_since
    del runtime.deployed["web"]  # meanwhile, while nobody watched
    runtime.reachable = True
    await until(lambda: manager.blind_since is None, "reads are current again")
    assert "web" in runtime.deployed
    assert observer.subscriptions >= 1


async def _ignore(up: bool) -> None:
    """A reachability callback that does nothing."""


async def test_a_repair_that_fails_is_tried_again_after_a_backoff(
    manager: AppManager, runtime: FakeRuntime, observer: Observer
) -> None:
    """Docker refuses the first repair (say, a port still taken): no new event comes, yet
    the app is repaired by a later try, not only at the next periodic pass."""
    await manager.create("web", image="img:1")
    del runtime.deployed["web"]
    runtime.arm("refuse")
    runtime.events.put_nowait("web")
    await until(lambda: "web" in runtime.deployed, "a later try to repair it")
    assert runtime.refusals == 1  # the first try was refused ...
    assert FIRST_RETRY in SLEPT  # ... and the next one waited for the backoff

"""The reconciler in-process, over the real manager and store and the in-memory runtime,
driven by an injected sleep: no real seconds pass."""

from __future__ import annotations

import asyncio

import pytest

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.models import Binding, DesiredState
from miasma_grpc.reconcile import PING_INTERVAL, Reconciler
from miasma_grpc.runtime.fake import Deployed, FakeRuntime


class Clock:
    """An injected sleep: each call is one tick of the loop; the test decides when to go on."""

    def __init__(self) -> None:
        self.slept = 0.0
        self.ticks: asyncio.Queue[None] = asyncio.Queue()
        self.go = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.slept += seconds
        await self.ticks.put(None)
        await self.go.wait()
        self.go.clear()

    async def tick(self) -> None:
        """Wait for the loop to sleep once, then let it go on."""
        await self.ticks.get()
        self.go.set()


async def test_a_pass_converges_what_differs_and_removes_orphans(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """Apps Docker lost are applied again; a deployment of no app is removed."""
    await manager.create("web", image="img:1")
    await manager.create("db", image="img:1", desired_state=DesiredState.STOPPED)
    del runtime.deployed["web"]  # removed by hand
    runtime.deployed["ghost"] = Deployed(
        "img:1", (), (Binding(3999, 3000),), {}, DesiredState.RUNNING
    )
    reconciler = Reconciler(manager, _ignore, interval=30)
    await reconciler.reconcile_all()
    assert set(runtime.deployed) == {"web", "db"}
    assert runtime.removed == ["ghost"]
    assert reconciler.passes == 1


async def test_one_apps_surprise_does_not_cancel_the_others(
    manager: AppManager, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error converging one app is logged; the other apps still converge."""
    for name in ("a", "b", "c"):
        await manager.create(name, image="img:1")
    runtime.deployed.clear()
    apply = runtime.apply

    async def apply_but_b(app: object) -> object:
        if getattr(app, "name", "") == "b":
            raise ZeroDivisionError("a bug")
        return await apply(app)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime, "apply", apply_but_b)
    await Reconciler(manager, _ignore).reconcile_all()
    assert set(runtime.deployed) == {"a", "c"}


async def test_docker_coming_back_is_reported_and_converged_at_once(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """Unreachable: health is told, nothing converges. Back: health is told and a pass runs
    at the next ping, not after the 30 s interval."""
    await manager.create("web", image="img:1")
    runtime.deployed.clear()
    runtime.reachable = False
    heard: list[bool] = []

    async def reachability(up: bool) -> None:
        heard.append(up)

    clock = Clock()
    reconciler = Reconciler(manager, reachability, interval=30, sleep=clock.sleep)
    loop = asyncio.create_task(reconciler.run())
    await clock.tick()
    assert (heard, reconciler.passes) == ([False], 0)
    runtime.reachable = True
    await clock.tick()
    await clock.tick()  # the pass ran before this sleep
    assert heard == [False, True]
    assert reconciler.passes == 1
    assert "web" in runtime.deployed
    for _ in range(3):
        await clock.tick()
    assert reconciler.passes == 1  # the next one is due after the interval
    assert clock.slept == 6 * PING_INTERVAL
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)


async def _ignore(up: bool) -> None:
    """A reachability callback that does nothing."""

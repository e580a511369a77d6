"""Rollouts owed while Docker was away, through the real AppManager and SQLite store, with
the in-memory runtime: cases the state machine found, pinned down as examples."""

from __future__ import annotations

from pathlib import Path

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.allocator import PortLedger, RandomTargets
from miasma_grpc.domain.events import EventKind
from miasma_grpc.domain.models import DesiredState, Port, PortRange
from miasma_grpc.domain.ports import PortEdit
from miasma_grpc.runtime.fake import FakeRuntime
from miasma_grpc.runtime.hostports import NoHostPorts
from miasma_grpc.store.sqlite import SqliteStore


async def test_an_edit_of_a_stop_still_owed_keeps_the_stop_owed(tmp_path: Path) -> None:
    """Stopped while Docker was away, then edited: the stop is still owed, so when Docker
    returns the reconciler stops the app and logs the result."""
    runtime = FakeRuntime()
    async with SqliteStore(tmp_path / "m.db", PortLedger(PortRange(3001, 3999))) as store:
        manager = AppManager(store, runtime, RandomTargets(PortRange(3000, 3999)), NoHostPorts())
        await manager.create("api", image="img:1")
        runtime.arm("unavailable")
        stopped = await manager.set_desired_state("api", DesiredState.STOPPED)
        assert stopped.rollout_owed
        assert runtime.deployed["api"].desired_state == "running"
        edited = await manager.edit("api", ports=PortEdit(add_published=(Port(3500),)))
        assert edited.app.rollout_owed, "the edit of a stopped app hid the stop still owed"
        before = await store.revision()
        await manager.converge("api")
        assert runtime.deployed["api"].desired_state is DesiredState.STOPPED
        events = await store.read_events(after=before, app="api", limit=10)
        assert [e.kind for e in events] == [EventKind.ROLLOUT_APPLIED]
        assert not (await store.get_app("api")).rollout_owed


async def test_pending_is_reported_while_docker_is_away(tmp_path: Path) -> None:
    """A change made while Docker is away is kept and reported as pending."""
    runtime = FakeRuntime()
    async with SqliteStore(tmp_path / "m.db", PortLedger(PortRange(3001, 3999))) as store:
        manager = AppManager(store, runtime, RandomTargets(PortRange(3000, 3999)), NoHostPorts())
        await manager.create("api", image="img:1")
        runtime.arm("unavailable")
        app = await manager.update("api", image="img:2")
        assert app.image == "img:2"
        assert manager.observed_state(app).last_error.startswith("pending:")
        runtime.arm("unavailable")
        await manager.converge("api")  # still away: reported, not raised
        assert runtime.deployed["api"].image == "img:1"
        await manager.converge("api")  # back
        assert runtime.deployed["api"].image == "img:2"
        assert not manager.observed_state(await store.get_app("api")).last_error

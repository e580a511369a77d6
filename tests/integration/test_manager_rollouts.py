"""The manager through a real SQLite store and the in-memory runtime: rollouts owed while
Docker was away, and refusals that must change nothing (cases found by the state machine
and by an outside review, pinned down as examples)."""

from __future__ import annotations

from pathlib import Path

import pytest

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.errors import InvalidArgument, RuntimeFailure
from miasma_grpc.domain.events import EventKind
from miasma_grpc.domain.models import DesiredState, Port, RolloutState
from miasma_grpc.domain.ports import PortEdit
from miasma_grpc.runtime.fake import FakeRuntime
from tests.integration.conftest import open_manager


async def test_an_edit_of_a_stop_still_owed_keeps_the_stop_owed(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """Stopped while Docker was away, then edited: the stop is still owed, so when Docker
    returns the reconciler stops the app and logs the result."""
    store = manager.store
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


async def test_pending_is_reported_while_docker_is_away(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """A change made while Docker is away is kept, reported as pending, applied on return."""
    await manager.create("api", image="img:1")
    runtime.arm("unavailable")
    app = await manager.update("api", image="img:2")
    assert app.image == "img:2"
    assert manager.observed_state(app).rollout is RolloutState.PENDING
    runtime.arm("unavailable")
    await manager.converge("api")  # still away: reported, not raised
    assert runtime.deployed["api"].image == "img:1"
    await manager.converge("api")  # back
    assert runtime.deployed["api"].image == "img:2"
    settled = manager.observed_state(await manager.store.get_app("api"))
    assert (settled.rollout, settled.last_error) == (RolloutState.APPLIED, "")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"env": {"X": "a\x00b"}}, "app.env[X]"),
        ({"constraints": ["node.labels.zone==a\x00"]}, "app.constraints[0]"),
        ({"command": ["sh", "-c", "\x00"]}, "app.command"),
        ({"stop_grace": -1.0}, "app.stop_grace"),
    ],
)
async def test_a_string_docker_cannot_take_is_refused_and_changes_nothing(
    manager: AppManager, runtime: FakeRuntime, change: dict[str, object], field: str
) -> None:
    """A NUL in an env value (or a constraint) is INVALID_ARGUMENT naming the field, before
    Docker is asked: no rollout, no new revision or etag."""
    before = await manager.create("api", image="img:1")
    deployed = runtime.deployed["api"]
    with pytest.raises(InvalidArgument) as error:
        await manager.update("api", **change)  # type: ignore[arg-type]
    assert [v.field for v in error.value.violations] == [field]
    after = await manager.store.get_app("api")
    assert (after.revision, after.etag, after.env) == (before.revision, before.etag, before.env)
    assert runtime.deployed["api"] is deployed


async def test_the_lock_table_keeps_no_name_it_is_done_with(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """Failed, refused and validate-only creates, edits and deletes leave no lock behind."""
    await manager.create("kept", image="img:1")
    await manager.create("dry", image="img:1", validate_only=True)
    runtime.arm("refuse")
    with pytest.raises(RuntimeFailure):
        await manager.create("refused", image="img:1")
    with pytest.raises(InvalidArgument):
        await manager.create("bad", image="img:1", env={"PORT": "1"})
    await manager.edit("kept", ports=PortEdit(add_published=(Port(3500),)))
    await manager.delete("kept")
    assert len(manager.locks) == 0


async def test_a_failure_that_keeps_coming_back_is_logged_once(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """The reconciler retries a refused app every pass; Docker words each refusal anew (new
    IDs), but the cause is the same: one ROLLOUT_FAILED event, not one per pass."""
    await manager.create("api", image="img:1")
    runtime.arm("unavailable")
    await manager.update("api", image="img:2")  # owed: the reconciler will try it
    before = await manager.store.revision()
    messages = set()
    for _ in range(3):
        runtime.arm("refuse")
        with pytest.raises(RuntimeFailure) as error:
            await manager.converge("api")
        messages.add(error.value.message)
    assert len(messages) == 3
    events = await manager.store.read_events(after=before, app="api", limit=10)
    assert [e.kind for e in events] == [EventKind.ROLLOUT_FAILED]
    failed = manager.observed_state(await manager.store.get_app("api"))
    assert failed.rollout is RolloutState.FAILED
    assert failed.last_error in messages


async def test_a_retried_request_is_not_applied_twice(manager: AppManager) -> None:
    """Same request_id again (the answer was lost): no second change, no error; the app as
    it is comes back. Also after the server restarts."""
    created = await manager.create("api", image="img:1", request_id="c-1")
    again = await manager.create("api", image="img:1", request_id="c-1")
    assert again.revision == created.revision  # not ALREADY_EXISTS, nothing new
    moved = await manager.edit("api", ports=PortEdit(add_published=(Port(3500),)), request_id="e-1")
    back = await manager.edit(
        "api", ports=PortEdit(remove_published=(Port(3500),)), request_id="e-2"
    )
    retried = await manager.edit(  # without the ID this is PORT_NOT_HELD
        "api", ports=PortEdit(remove_published=(Port(3500),)), request_id="e-2"
    )
    assert (retried.app.revision, retried.changes) == (back.app.revision, ())
    assert moved.app.revision < back.app.revision
    updated = await manager.update("api", image="img:2", request_id="u-1")
    assert (await manager.update("api", image="img:3", request_id="u-1")).image == "img:2"
    assert updated.image == "img:2"
    with pytest.raises(InvalidArgument) as error:
        await manager.create("other", image="img:1", request_id="c-1")
    assert error.value.violations[0].field == "request_id"
    with pytest.raises(InvalidArgument):
        await manager.edit("api", request_id="x" * 129)


async def test_request_ids_survive_a_restart(tmp_path: Path) -> None:
    """The IDs are written with their change: a retry after a restart is still a retry."""
    runtime = FakeRuntime()
    store, manager = await open_manager(tmp_path / "m.db", runtime)
    await manager.create("api", image="img:1", request_id="c-1")
    await store.__aexit__(None, None, None)
    store, manager = await open_manager(tmp_path / "m.db", runtime)
    assert (await manager.create("api", image="img:1", request_id="c-1")).name == "api"
    await store.__aexit__(None, None, None)


async def test_an_app_that_exits_at_once_is_created_and_said_failed_with_why(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """Rolled out, but its process exited at once: the app stays (to be fixed and started
    again), its rollout is FAILED with Docker's words in GetApp, and the rollout event says
    so for every watcher, not ROLLOUT_APPLIED."""
    why = "not running: Restarting (3) 1 second ago; its last output: boom"
    runtime.exits["crash"] = why
    app = await manager.create("crash", image="img:1")
    events = await manager.store.read_events(after=0, app="crash", limit=10)
    assert [(e.kind, e.message) for e in events] == [
        (EventKind.ASSIGNED, ""),
        (EventKind.ROLLOUT_FAILED, why),
    ]
    observed = manager.observed_state(app)
    assert (observed.rollout, observed.last_error) == (RolloutState.FAILED, why)
    assert not app.rollout_owed  # rolled out: nothing for the reconciler to finish
    del runtime.exits["crash"]
    fixed = await manager.update("crash", command=["fixed"])
    assert manager.observed_state(fixed).rollout is RolloutState.APPLIED

"""Volumes through the real AppManager and a real SQLite file, with the in-memory runtime.

What Docker does with the mounts is tested on the real engine (tests/e2e/test_volumes.py);
here: what is stored, what is refused (and that a refusal changes nothing), who holds a
volume, what deletion keeps, and the swarm node an app's data is pinned to.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.errors import FailedPrecondition, InvalidArgument, Unavailable
from miasma_grpc.domain.models import Port, Volume
from miasma_grpc.domain.ports import PortEdit
from miasma_grpc.domain.volumes import VolumeEdit
from miasma_grpc.runtime.fake import FakeRuntime
from tests.integration.conftest import open_manager

PG = "/var/lib/postgresql/data"
IMAGES = {"postgres:15": [PG], "web:1": []}


@pytest.fixture
def runtime() -> FakeRuntime:
    """The in-memory runtime; postgres:15 declares VOLUME /var/lib/postgresql/data."""
    return FakeRuntime(images=IMAGES)


async def test_volumes_and_grace_are_stored_and_survive_a_restart(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    """Create with volumes and a grace period; a new store on the file reads them back."""
    store, manager = await open_manager(tmp_path / "m.db", runtime)
    created = await manager.create(
        "db", image="postgres:15", volumes=[Volume("pgdata", PG + "/")], stop_grace=30
    )
    assert created.volumes == (Volume("pgdata", PG),)
    assert (created.stop_grace, len(created.uid)) == (30, 6)
    await store.__aexit__(None, None, None)
    store, manager = await open_manager(tmp_path / "m.db", runtime)
    again = await manager.store.get_app("db")
    assert (again.volumes, again.stop_grace, again.uid) == (created.volumes, 30, created.uid)
    await store.__aexit__(None, None, None)


async def test_image_volume_is_made_once_per_app(manager: AppManager, runtime: FakeRuntime) -> None:
    """The image's VOLUME gets a volume named after the app's uid, kept across rollouts."""
    app = await manager.create("db", image="postgres:15")
    name = f"miasma-db-{app.uid}-var-lib-postgresql-data"
    assert [m.volume.source for m in runtime.deployed["db"].mounts] == [name]
    await manager.edit("db", ports=PortEdit(add_published=(Port(3500),)))
    await manager.update("db", env={"X": "1"})
    assert [m.volume.source for m in runtime.deployed["db"].mounts] == [name]
    assert list(runtime.volumes) == [name]


async def test_an_edit_of_ports_and_volumes_is_atomic(manager: AppManager) -> None:
    """A bad volume in a combined edit refuses the whole edit: the ports stay as they were."""
    before = await manager.create("db", image="postgres:15")
    with pytest.raises(InvalidArgument) as error:
        await manager.edit(
            "db",
            ports=PortEdit(add_published=(Port(3500),)),
            volumes=VolumeEdit(add=(Volume("pgdata", "relative"),)),
        )
    assert error.value.violations[0].field == "add_volumes[0].target"
    assert await manager.store.get_app("db") == before
    result = await manager.edit(
        "db",
        ports=PortEdit(add_published=(Port(3500),)),
        volumes=VolumeEdit(add=(Volume("pgdata", PG),)),
    )
    assert result.app.bindings[0].published == 3500
    assert result.app.volumes == (Volume("pgdata", PG),)


async def test_validate_only_edit_changes_nothing(manager: AppManager) -> None:
    """A dry run returns the planned volumes and leaves the app as it was."""
    before = await manager.create("db", image="postgres:15")
    planned = await manager.edit(
        "db", volumes=VolumeEdit(add=(Volume("pgdata", PG),)), validate_only=True
    )
    assert planned.app.volumes == (Volume("pgdata", PG),)
    assert await manager.store.get_app("db") == before


async def test_a_writable_volume_cannot_be_mounted_by_a_second_app(manager: AppManager) -> None:
    """FAILED_PRECONDITION naming the holder, on create, edit and update; nothing changes."""
    await manager.create("db", image="postgres:15", volumes=[Volume("pgdata", PG)])
    with pytest.raises(FailedPrecondition, match="'db'") as error:
        await manager.create("copy", image="web:1", volumes=[Volume("pgdata", "/data")])
    assert error.value.resource == "apps/db"
    web = await manager.create("web", image="web:1")
    with pytest.raises(FailedPrecondition):
        await manager.edit("web", volumes=VolumeEdit(add=(Volume("pgdata", "/d", True),)))
    with pytest.raises(FailedPrecondition):
        await manager.update("web", volumes=[Volume("pgdata", "/d")])
    assert await manager.store.get_app("web") == web
    assert [a.name for a in await manager.store.list_apps()] == ["db", "web"]


async def test_bind_mounts_are_refused_unless_allowed(tmp_path: Path, runtime: FakeRuntime) -> None:
    """Host paths need --allow-bind-mounts."""
    store, manager = await open_manager(tmp_path / "a.db", runtime)
    with pytest.raises(FailedPrecondition, match="allow-bind-mounts"):
        await manager.create("web", image="web:1", volumes=[Volume("/srv", "/srv")])
    await store.__aexit__(None, None, None)
    store, manager = await open_manager(tmp_path / "b.db", runtime, allow_bind_mounts=True)
    app = await manager.create("web", image="web:1", volumes=[Volume("/srv", "/srv")])
    assert app.volumes[0].bind
    await store.__aexit__(None, None, None)


async def test_stop_grace_out_of_bounds_is_refused(manager: AppManager) -> None:
    """A negative or huge grace period names app.stop_grace."""
    for grace in (-1, 3601):
        with pytest.raises(InvalidArgument) as error:
            await manager.create("db", image="web:1", stop_grace=grace)
        assert error.value.violations[0].field == "app.stop_grace"


async def test_delete_keeps_volumes_unless_asked(manager: AppManager, runtime: FakeRuntime) -> None:
    """Without delete_volumes the data stays, listed with no app; a new app of the name
    starts with volumes of its own."""
    first = await manager.create("db", image="postgres:15", volumes=[Volume("pgdata", "/extra")])
    _, deleted = await manager.delete("db")
    assert deleted == ()
    listed = {info.name: holders for info, holders in await manager.list_volumes()}
    leftover = f"miasma-db-{first.uid}-var-lib-postgresql-data"
    assert listed == {leftover: (), "pgdata": ()}
    second = await manager.create("db", image="postgres:15")
    assert second.uid != first.uid
    listed = {info.name: holders for info, holders in await manager.list_volumes()}
    assert listed[leftover] == ()
    assert listed[f"miasma-db-{second.uid}-var-lib-postgresql-data"] == ("db",)


async def test_delete_with_volumes_keeps_what_another_app_mounts(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """delete_volumes removes the app's image volume and own volumes, not a shared one."""
    db = await manager.create(
        "db", image="postgres:15",
        volumes=[Volume("assets", "/assets", read_only=True), Volume("own1", "/own")],
    )  # fmt: skip
    await manager.create("web", image="web:1", volumes=[Volume("assets", "/a", read_only=True)])
    _, deleted = await manager.delete("db", delete_volumes=True)
    assert set(deleted) == {f"miasma-db-{db.uid}-var-lib-postgresql-data", "own1"}
    assert set(runtime.volumes) == {"assets"}


async def test_delete_with_volumes_needs_docker_and_changes_nothing_without(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """Docker away: UNAVAILABLE, and the app is still there."""
    await manager.create("db", image="postgres:15")
    runtime.arm("unavailable")
    with pytest.raises(Unavailable):
        await manager.delete("db", delete_volumes=True)
    assert (await manager.store.get_app("db")).name == "db"


async def test_delete_volume_refuses_a_mounted_one(manager: AppManager) -> None:
    """A volume an app mounts is FAILED_PRECONDITION naming the app; a leftover goes."""
    db = await manager.create("db", image="postgres:15")
    name = f"miasma-db-{db.uid}-var-lib-postgresql-data"
    with pytest.raises(FailedPrecondition, match="'db'"):
        await manager.delete_volume(name)
    await manager.delete("db")
    assert (await manager.delete_volume(name)).name == name
    assert await manager.list_volumes() == []


async def test_an_app_with_data_is_pinned_to_its_first_node(tmp_path: Path) -> None:
    """The node the runtime reports is recorded once and kept across restarts of the store."""
    runtime = FakeRuntime(images=IMAGES, node="node-a")
    store, manager = await open_manager(tmp_path / "m.db", runtime)
    await manager.create("db", image="postgres:15")
    await manager.create("web", image="web:1")
    assert (await manager.store.get_app("db")).node == "node-a"
    assert (await manager.store.get_app("web")).node == ""  # no data: free to move
    runtime.node = "node-b"
    await manager.edit("db", ports=PortEdit(add_published=(Port(3500),)))
    await store.__aexit__(None, None, None)
    store, manager = await open_manager(tmp_path / "m.db", runtime)
    assert (await manager.store.get_app("db")).node == "node-a"
    await store.__aexit__(None, None, None)


async def test_delete_volume_refuses_names_that_are_not_volume_names(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """A path-like or empty name never reaches Docker's API (``volumes/../containers/x``)."""
    for name in ("", "../containers/x", "a/b", "x"):
        with pytest.raises(InvalidArgument) as error:
            await manager.delete_volume(name)
        assert error.value.violations[0].field == "name"

"""Renaming an app (Miasma's `apps:edit --name`): everything it has moves with it, through
the manager over a real SQLite file and the in-memory runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.errors import Aborted, AlreadyExists, InvalidArgument, NotFound
from miasma_grpc.domain.events import EventKind
from miasma_grpc.domain.models import Port, Volume
from miasma_grpc.domain.ports import PortEdit
from miasma_grpc.runtime.fake import FakeRuntime
from tests.integration.conftest import open_manager


@pytest.fixture
def runtime() -> FakeRuntime:
    """Its image declares a VOLUME: the app gets a volume of its own for it."""
    return FakeRuntime(images={"pg:15": ["/var/lib/postgresql/data"]})


async def test_a_renamed_app_keeps_its_ports_volumes_and_env(
    manager: AppManager, runtime: FakeRuntime, tmp_path: Path
) -> None:
    """Same bindings (and ledger), same volumes (its image's one keeps its name, so its
    data), same env; the old name is gone from the store and from Docker; watchers see
    RELEASED then ASSIGNED at one revision."""
    created = await manager.create(
        "db", image="pg:15", env={"A": "1"}, ports=PortEdit(add_published=(Port(5432),)),
        volumes=[Volume("extra", "/extra")],
    )  # fmt: skip
    made_before = set(runtime.volumes)
    renamed = await manager.rename("db", "postgres")
    assert renamed.name == "postgres"
    assert (renamed.bindings, renamed.env, renamed.volumes, renamed.uid) == (
        created.bindings, created.env, created.volumes, created.uid,
    )  # fmt: skip
    assert manager.ledger.holder(Port(5432)) == "postgres"
    assert set(runtime.volumes) == made_before  # no new, empty volume for the image's path
    assert {m.volume.source for m in runtime.deployed["postgres"].mounts} == made_before
    assert "db" in runtime.removed
    assert "db" not in runtime.deployed
    with pytest.raises(NotFound):
        await manager.get("db")
    released, assigned, applied = (await manager.store.read_events(
        after=created.revision, app=None, limit=10))[-3:]  # fmt: skip
    assert (released.kind, released.app) == (EventKind.RELEASED, "db")
    assert (assigned.kind, assigned.app) == (EventKind.ASSIGNED, "postgres")
    assert released.revision + 1 == assigned.revision == renamed.revision
    assert assigned.message == "renamed from 'db'"
    assert applied.kind is EventKind.ROLLOUT_APPLIED
    listing = dict((info.name, holders) for info, holders in await manager.list_volumes())
    assert all(holders == ("postgres",) for holders in listing.values())
    await manager.store.__aexit__(None, None, None)
    store, reopened = await open_manager(tmp_path / "m.db", runtime)
    try:
        assert await reopened.get("postgres") == (await manager.get("postgres"))
        assert reopened.ledger.holder(Port(5432)) == "postgres"
    finally:
        await store.__aexit__(None, None, None)


async def test_deleting_a_renamed_app_with_its_volumes_deletes_its_image_volume(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """The image's volume, made under the first name, is still the app's own."""
    await manager.create("db", image="pg:15")
    [made] = runtime.volumes
    await manager.rename("db", "postgres")
    _, deleted = await manager.delete("postgres", delete_volumes=True)
    assert deleted == (made,)


@pytest.mark.parametrize(
    ("new_name", "error", "field"),
    [("Bad_Name", InvalidArgument, "new_app_id"), ("db", InvalidArgument, "new_app_id"),
     ("", InvalidArgument, "new_app_id"), ("web", AlreadyExists, None)],
)  # fmt: skip
async def test_a_bad_rename_is_refused_and_changes_nothing(
    manager: AppManager, new_name: str, error: type[Exception], field: str | None
) -> None:
    """A malformed name, the same name, a name taken: refused, both apps as they were."""
    db = await manager.create("db", image="pg:15")
    web = await manager.create("web", image="web:1")
    with pytest.raises(error) as refused:
        await manager.rename("db", new_name)
    if field:
        assert refused.value.violations[0].field == field  # type: ignore[attr-defined]
    assert (await manager.get("db"), await manager.get("web")) == (db, web)


async def test_a_stale_etag_or_a_dry_run_changes_nothing(manager: AppManager) -> None:
    """ABORTED on an old etag; validate_only shows the app under its new name only."""
    db = await manager.create("db", image="pg:15")
    with pytest.raises(Aborted):
        await manager.rename("db", "postgres", etag='W/"0"')
    shown = await manager.rename("db", "postgres", validate_only=True)
    assert shown.name == "postgres"
    assert await manager.get("db") == db
    with pytest.raises(NotFound):
        await manager.get("postgres")

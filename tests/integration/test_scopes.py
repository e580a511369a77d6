"""Roles limited to apps (``apps``/``groups`` in the access file), over real gRPC with the
real access check and request parsing, the real manager and SQLite store, and the
in-memory runtime: a scoped identity names, sees and changes only its apps, and a
refusal changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from miasma.v1 import apps_pb2, apps_pb2_grpc

from miasma_grpc.access import AccessFile, token_hash
from miasma_grpc.api.auth import Access
from miasma_grpc.api.parsing import ParseRequests
from miasma_grpc.apps import AppManager
from miasma_grpc.runtime.fake import FakeRuntime
from tests.integration.conftest import serving

ACCESS = f"""
[[token]]
name = "ops"
role = "admin"
sha256 = "{token_hash("ops-token")}"

[[token]]
name = "ci"
role = "deployer"
sha256 = "{token_hash("ci-token")}"
apps = ["web-*"]
groups = ["staging"]

[[token]]
name = "router"
role = "viewer"
sha256 = "{token_hash("router-token")}"
groups = ["prod"]

[[token]]
name = "janitor"
role = "admin"
sha256 = "{token_hash("janitor-token")}"
apps = ["web-*"]
"""

Call = Callable[..., Awaitable[Any]]


@pytest.fixture
def runtime() -> FakeRuntime:
    """Fake Docker, where postgres:15 declares a VOLUME."""
    return FakeRuntime(images={"postgres:15": ["/var/lib/postgresql/data"]})


@pytest.fixture
async def channel(manager: AppManager, tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to an in-process server with the access file above."""
    (tmp_path / "access.toml").write_text(ACCESS)
    access = Access(AccessFile(tmp_path / "access.toml"), manager.store.record_audit)
    async with (
        serving(manager, [access, ParseRequests()]) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened,
    ):
        yield opened


def as_(channel: grpc.aio.Channel, token: str) -> apps_pb2_grpc.AppServiceAsyncStub:
    """A stub whose calls carry ``token``."""
    stub = apps_pb2_grpc.AppServiceStub(channel)

    class Authorized:
        def __getattr__(self, method: str) -> Call:
            call = getattr(stub, method)
            return lambda request, **kw: call(
                request, metadata=(("authorization", f"Bearer {token}"),), **kw
            )

    return Authorized()  # type: ignore[return-value]


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def create(stub: apps_pb2_grpc.AppServiceAsyncStub, name: str, group: str = "") -> None:
    await stub.CreateApp(
        apps_pb2.CreateAppRequest(app_id=name, app=apps_pb2.App(image="postgres:15", group=group))
    )


async def names(stub: apps_pb2_grpc.AppServiceAsyncStub, page_size: int = 0) -> list[str]:
    """Every app ListApps gives ``stub``'s caller, page by page."""
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListApps(apps_pb2.ListAppsRequest(page_size=page_size, page_token=token))
        seen += [a.name.removeprefix("apps/") for a in page.apps]
        if not page.next_page_token:
            return seen
        token = page.next_page_token


async def test_a_scoped_deployer_touches_only_its_apps(channel: grpc.aio.Channel) -> None:
    """ci (deployer; apps web-*, group staging) creates and changes web-* apps and apps it
    puts in staging; anything else is PERMISSION_DENIED APP_OUT_OF_SCOPE, said the same
    whether the app exists or not, and nothing changes; lists leave the rest out."""
    ops, ci = as_(channel, "ops-token"), as_(channel, "ci-token")
    for name, group in [("db", "prod"), ("cache", ""), ("web-old", "prod")]:
        await create(ops, name, group)
    await create(ci, "web-1")
    await create(ci, "worker", "staging")
    await ci.EditApp(apps_pb2.EditAppRequest(name="apps/worker", set_env={"A": "1"}))

    before = (await ops.GetApp(apps_pb2.GetAppRequest(name="apps/db"))).app
    calls: list[Awaitable[Any]] = [
        ci.GetApp(apps_pb2.GetAppRequest(name="apps/db")),
        ci.GetApp(apps_pb2.GetAppRequest(name="apps/nothing-here")),
        ci.EditApp(apps_pb2.EditAppRequest(name="apps/db", set_env={"A": "1"})),
        ci.StopApp(apps_pb2.StopAppRequest(name="apps/db")),
        ci.CreateApp(apps_pb2.CreateAppRequest(app_id="api", app=apps_pb2.App(image="i"))),
        ci.CreateApp(apps_pb2.CreateAppRequest(
            app_id="api", app=apps_pb2.App(image="i", group="prod"), validate_only=True)),
        # out of scope after the change: moving an app away, or renaming it away
        ci.EditApp(apps_pb2.EditAppRequest(name="apps/worker", group="prod")),
        ci.RenameApp(apps_pb2.RenameAppRequest(name="apps/web-1", new_app_id="api")),
    ]  # fmt: skip
    for call in calls:
        error = await refused(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
        assert "ci may not touch app" in (error.details() or "")
        assert "limited to apps web-* and group staging" in (error.details() or "")
    after = (await ops.GetApp(apps_pb2.GetAppRequest(name="apps/db"))).app
    assert after.etag == before.etag
    assert await names(ops) == ["cache", "db", "web-1", "web-old", "worker"]
    # web-old is in prod, but its name is in scope; pages of one skip what is not
    assert await names(ci, page_size=1) == ["web-1", "web-old", "worker"]
    worker = (await ops.GetApp(apps_pb2.GetAppRequest(name="apps/worker"))).app
    assert worker.group == "staging"
    # a rename within the scope is fine
    await ci.RenameApp(apps_pb2.RenameAppRequest(name="apps/web-1", new_app_id="web-2"))
    records = (await ops.ListAuditRecords(apps_pb2.ListAuditRecordsRequest())).records
    refusals = [r for r in records if r.identity == "ci" and "APP_OUT_OF_SCOPE" in r.result]
    assert len(refusals) == 8


async def test_a_scoped_viewer_sees_only_its_apps_events(channel: grpc.aio.Channel) -> None:
    """router (viewer; group prod) gets the snapshot and live events of prod apps only,
    deletions included (the event carries the app's group then); naming another app's
    stream is refused."""
    ops, router = as_(channel, "ops-token"), as_(channel, "router-token")
    await create(ops, "db", "prod")
    await create(ops, "cache")
    stream = router.WatchPortEvents(apps_pb2.WatchPortEventsRequest(name="apps/-"))
    events: list[tuple[str, int]] = []

    async def read() -> None:
        async for item in stream:
            if item.HasField("event"):
                events.append((item.event.app, item.event.kind))
                assert item.event.group == "prod"
            if (item.event.app, item.event.kind) == ("apps/api", apps_pb2.PORT_EVENT_KIND_RELEASED):
                return

    reader = asyncio.create_task(read())
    await create(ops, "other")
    await create(ops, "api", "prod")
    await ops.DeleteApp(apps_pb2.DeleteAppRequest(name="apps/api"))
    await asyncio.wait_for(reader, 10)
    stream.cancel()
    apps = {app for app, _ in events}
    assert apps == {"apps/db", "apps/api"}
    assert (("apps/db", apps_pb2.PORT_EVENT_KIND_SNAPSHOT)) in events
    error = await refused(
        _first(router.WatchPortEvents(apps_pb2.WatchPortEventsRequest(name="apps/cache")))
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    who = await router.GetCaller(apps_pb2.GetCallerRequest())
    assert (list(who.app_patterns), list(who.groups)) == ([], ["prod"])


async def _first(stream: Any) -> Any:
    async for item in stream:
        return item
    return None


async def test_a_scoped_admin_deletes_only_its_apps_and_their_volumes(
    channel: grpc.aio.Channel,
) -> None:
    """janitor (admin; apps web-*) lists and deletes the volumes of web-* apps only, and
    reads the audit records of those apps only."""
    ops, janitor = as_(channel, "ops-token"), as_(channel, "janitor-token")
    await create(ops, "web-1")
    await create(ops, "db")
    await ops.DeleteApp(apps_pb2.DeleteAppRequest(name="apps/web-1"))  # volumes stay
    await ops.DeleteApp(apps_pb2.DeleteAppRequest(name="apps/db"))
    listed = (await janitor.ListVolumes(apps_pb2.ListVolumesRequest())).volumes
    assert [v.created_for for v in listed] == ["apps/web-1"]
    everything = (await ops.ListVolumes(apps_pb2.ListVolumesRequest())).volumes
    db_volume = next(v.name for v in everything if v.created_for == "apps/db")
    error = await refused(janitor.DeleteVolume(apps_pb2.DeleteVolumeRequest(name=db_volume)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    await janitor.DeleteVolume(apps_pb2.DeleteVolumeRequest(name=listed[0].name))
    assert len((await ops.ListVolumes(apps_pb2.ListVolumesRequest())).volumes) == 1
    records = (await janitor.ListAuditRecords(apps_pb2.ListAuditRecordsRequest())).records
    assert {r.app for r in records} <= {"apps/web-1", ""}
    assert any(r.method == "DeleteApp" and r.app == "apps/web-1" for r in records)

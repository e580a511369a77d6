"""Routes in the contract (docs/routing.md), over real gRPC, the real manager and SQLite
store, and the in-memory runtime: set, replace, remove, refusals naming the field or the
app, the events a router follows, and routes kept through restarts and renames."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from miasma.v1 import apps_pb2, apps_pb2_grpc

from miasma_grpc.domain.models import Route as DomainRoute
from miasma_grpc.runtime.fake import FakeRuntime
from tests.integration.conftest import open_manager

if TYPE_CHECKING:
    Stub = apps_pb2_grpc.AppServiceAsyncStub
Route = apps_pb2.Route


async def create(stub: Stub, name: str, *routes: apps_pb2.Route) -> apps_pb2.App:
    request = apps_pb2.CreateAppRequest(
        app_id=name, app=apps_pb2.App(image="img", routes=list(routes))
    )
    return (await stub.CreateApp(request)).app


async def edit(stub: Stub, name: str, **fields: object) -> apps_pb2.App:
    return (await stub.EditApp(apps_pb2.EditAppRequest(name=f"apps/{name}", **fields))).app  # type: ignore[arg-type]


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def shown(app: apps_pb2.App) -> list[tuple[str, str, int, bool]]:
    return [(r.host, r.path_prefix, r.slot, r.tls) for r in app.routes]


async def test_routes_are_set_replaced_and_removed(stub: Stub) -> None:
    """Hosts are lower-cased, a trailing '/' dropped; a route to the same host and path
    replaces the one there; remove by host and path; routes change nothing in Docker
    (no new revision applied by a rollout) and each change is a ROUTES_CHANGED event
    carrying the routes and the bindings."""
    app = await create(stub, "web", Route(host="Web.Localhost"))
    assert shown(app) == [("web.localhost", "", 0, False)]
    two = [apps_pb2.Port(number=8081), apps_pb2.Port(number=8082)]
    app = await edit(stub, "web", add_published_ports=two,
                     add_routes=[Route(host="web.localhost", path_prefix="/api/", slot=1),
                                 Route(host="web.localhost", tls=True)])  # fmt: skip
    assert shown(app) == [("web.localhost", "", 0, True), ("web.localhost", "/api", 1, False)]
    app = await edit(stub, "web", remove_routes=[Route(host="web.localhost", path_prefix="/api")])
    assert shown(app) == [("web.localhost", "", 0, True)]
    events = stub.WatchPortEvents(
        apps_pb2.WatchPortEventsRequest(name="apps/web", start_revision=1)
    )
    kinds = []
    async for item in events:
        kinds.append((item.event.kind, len(item.event.routes)))
        if len(kinds) == 4:  # the create's rollout, the port edit and its rollout, routes
            break
    events.cancel()
    routes_changed = [n for kind, n in kinds if kind == apps_pb2.PORT_EVENT_KIND_ROUTES_CHANGED]
    assert routes_changed == [1]  # the last edit; the one before was a port change too
    assert (apps_pb2.PORT_EVENT_KIND_CHANGED, 2) in kinds


@pytest.mark.parametrize(
    ("route", "field"),
    [
        (Route(host=""), "add_routes[0].host"),
        (Route(host="http://web.localhost"), "add_routes[0].host"),
        (Route(host="web.localhost:8080"), "add_routes[0].host"),
        (Route(host="-web.localhost"), "add_routes[0].host"),
        (Route(host="web.localhost", path_prefix="api"), "add_routes[0].path_prefix"),
        (Route(host="web.localhost", path_prefix="/a/../b"), "add_routes[0].path_prefix"),
        (Route(host="web.localhost", path_prefix="/a*"), "add_routes[0].path_prefix"),
        (Route(host="web.localhost", slot=-1), "add_routes[0].slot"),
    ],
)
async def test_a_bad_route_is_invalid_naming_the_field_and_changes_nothing(
    stub: Stub, route: apps_pb2.Route, field: str
) -> None:
    before = await create(stub, "web")
    error = await refused(edit(stub, "web", add_routes=[route]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"{field}: ")
    after = (await stub.GetApp(apps_pb2.GetAppRequest(name="apps/web"))).app
    assert after.etag == before.etag


async def test_a_host_and_path_belong_to_one_app(stub: Stub) -> None:
    """Another app's host and path is ALREADY_EXISTS naming it, at create and at edit; the
    same host with another path is fine; once the app is deleted the host is free."""
    await create(stub, "web", Route(host="web.localhost"))
    error = await refused(create(stub, "web2", Route(host="web.localhost")))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "routed to app 'web'" in (error.details() or "")
    await create(stub, "api", Route(host="web.localhost", path_prefix="/api"))
    error = await refused(edit(stub, "api", add_routes=[Route(host="web.localhost")]))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    await stub.DeleteApp(apps_pb2.DeleteAppRequest(name="apps/web"))
    app = await edit(stub, "api", add_routes=[Route(host="web.localhost")])
    assert len(app.routes) == 2


async def test_a_route_needs_its_port(stub: Stub) -> None:
    """A route to a slot the app lacks, or a port edit that takes away a routed slot, is
    FAILED_PRECONDITION ROUTE_WITHOUT_PORT; a UDP slot is INVALID_ARGUMENT."""
    await create(stub, "web", Route(host="web.localhost"))
    error = await refused(edit(stub, "web", add_routes=[Route(host="b.localhost", slot=1)]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    two = [apps_pb2.Port(number=8081), apps_pb2.Port(number=8082)]
    app = await edit(stub, "web", add_published_ports=two,
                     add_routes=[Route(host="b.localhost", slot=1)])  # fmt: skip
    assert len(app.routes) == 2
    error = await refused(edit(stub, "web", remove_published_ports=[apps_pb2.Port(number=8082)]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "b.localhost" in (error.details() or "")
    udp = apps_pb2.Port(number=5353, protocol=apps_pb2.PROTOCOL_UDP)
    await edit(stub, "web", add_published_ports=[udp])
    error = await refused(edit(stub, "web", add_routes=[Route(host="c.localhost", slot=2)]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_routes_outlive_a_restart_and_follow_a_rename(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    """Routes are stored with the app (and its events): a new server over the same file
    has them; a rename keeps them under the new name."""
    store, manager = await open_manager(tmp_path / "r.db", runtime)
    try:
        await manager.create("web", image="img", routes=[DomainRoute("web.localhost")])
        await manager.rename("web", "site")
    finally:
        await store.__aexit__(None, None, None)
    store, manager = await open_manager(tmp_path / "r.db", runtime)
    try:
        app = await manager.get("site")
        assert [str(r) for r in app.routes] == ["web.localhost"]
        events = await store.read_events(after=0, app="site", limit=10)
        assert events[0].routes == app.routes
    finally:
        await store.__aexit__(None, None, None)

"""The route controller against a real server (in-process, real gRPC socket, real store,
in-memory runtime): the table it gives the proxy follows the events, switches an app's
upstream only once its rollout is applied, and resumes a broken stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from miasma.v1 import apps_pb2_grpc

from miasma_grpc.api.registry import add_app_service
from miasma_grpc.api.servicer import AppServicer
from miasma_grpc.apps import AppManager
from miasma_grpc.config import Settings
from miasma_grpc.domain.models import Port, Route
from miasma_grpc.domain.ports import PortEdit
from miasma_grpc.domain.routes import RouteEdit
from miasma_grpc.events import EventHub
from miasma_grpc.router.caddy import CaddyRoute
from miasma_grpc.router.controller import RouteController, Table, route_id
from miasma_grpc.router.dns import Upstream
from miasma_grpc.runtime.fake import FakeRuntime
from tests.polling import until


class Server:
    """An in-process server over ``manager`` that can be stopped and started again."""

    def __init__(self, manager: AppManager) -> None:
        self.manager = manager
        self.port = 0
        self.server: grpc.aio.Server | None = None
        self.hub: EventHub | None = None

    async def start(self) -> None:
        self.hub = EventHub(self.manager.store)
        await self.hub.start()
        self.server = grpc.aio.server()
        add_app_service(AppServicer(self.manager, self.hub, Settings()), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    async def stop(self) -> None:
        assert self.hub is not None
        assert self.server is not None
        self.hub.close()
        await self.server.stop(None)


@pytest.fixture
async def server(manager: AppManager) -> AsyncIterator[Server]:
    running = Server(manager)
    await running.start()
    yield running
    await running.stop()


class Seen:
    """The tables the controller applied."""

    def __init__(self) -> None:
        self.tables: list[Table] = []

    async def apply(self, table: Table) -> None:
        self.tables.append(table)

    @property
    def last(self) -> Table:
        return self.tables[-1]


@pytest.fixture
async def controller(server: Server) -> AsyncIterator[tuple[RouteController, Seen]]:
    seen = Seen()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        following = RouteController(apps_pb2_grpc.AppServiceStub(channel), seen.apply)
        task = asyncio.create_task(following.run())
        yield following, seen
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def upstream(table: Table, host: str, path: str = "") -> int | None:
    found = table.upstreams.get(route_id(host, path))
    return found.port if found else None


async def test_the_table_follows_applied_rollouts_only(
    manager: AppManager, runtime: FakeRuntime, controller: tuple[RouteController, Seen]
) -> None:
    """A route is served at the app's port once created; a port edit whose rollout is
    pending (Docker away) changes nothing for the proxy; once applied, the upstream is
    the new port; a deleted app's routes go."""
    _, seen = controller
    app = await manager.create("web", image="img", routes=[Route("web.localhost")])
    first = app.bindings[0].published
    await until(
        lambda: bool(seen.tables) and upstream(seen.last, "web.localhost") == first,
        "the first port",
    )
    assert seen.last.routes == (CaddyRoute(route_id("web.localhost", ""), "web.localhost"),)
    runtime.arm("unavailable")
    moved = await manager.edit("web", ports=PortEdit(add_published=(Port(8081),)))
    assert moved.app.rollout_owed
    await asyncio.sleep(0.2)  # the CHANGED event has been sent by now
    assert upstream(seen.last, "web.localhost") == first  # the old container still serves
    await manager.converge("web")
    await until(lambda: upstream(seen.last, "web.localhost") == 8081, "the new port")
    await manager.edit("web", routes=RouteEdit(add=(Route("web.localhost", "/api", tls=True),)))
    await until(lambda: len(seen.last.routes) == 2, "the second route")
    assert upstream(seen.last, "web.localhost", "/api") == 8081
    await manager.delete("web")
    await until(lambda: seen.last == Table((), {}), "no route")


async def test_a_broken_stream_is_resumed_and_a_restart_starts_from_a_snapshot(
    manager: AppManager, server: Server, controller: tuple[RouteController, Seen]
) -> None:
    """The server goes away and comes back: the controller resumes after the last revision
    it saw, and what changed meanwhile reaches the table."""
    following, seen = controller
    await manager.create("web", image="img", routes=[Route("web.localhost")])
    await until(lambda: bool(seen.tables) and len(seen.last.upstreams) == 1, "web")
    revision = following.revision
    await server.stop()
    await manager.create("api", image="img", routes=[Route("api.localhost")])
    await server.start()
    await until(lambda: upstream(seen.last, "api.localhost") is not None, "api", 15)
    assert following.revision > revision
    assert isinstance(seen.last.upstreams[route_id("web.localhost", "")], Upstream)

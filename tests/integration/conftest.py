"""What the integration tests of the manager share: a real SQLite store on a temporary file
and the in-memory runtime at the Docker edge (``miasma_grpc.runtime.fake``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from miasma.v1 import apps_pb2_grpc

from miasma_grpc.api.handlers import Interceptor
from miasma_grpc.api.registry import add_app_service
from miasma_grpc.api.servicer import AppServicer
from miasma_grpc.apps import AppManager
from miasma_grpc.config import Settings
from miasma_grpc.domain.allocator import PortLedger, RandomTargets
from miasma_grpc.domain.models import PortRange
from miasma_grpc.events import EventHub
from miasma_grpc.runtime.fake import FakeRuntime
from miasma_grpc.runtime.hostports import NoHostPorts
from miasma_grpc.store.sqlite import SqliteStore


async def open_manager(
    path: Path, runtime: FakeRuntime, *, allow_bind_mounts: bool = False, ready_timeout: float = 0
) -> tuple[SqliteStore, AppManager]:
    """A store on ``path`` (entered: the caller exits it) and a manager over it and ``runtime``."""
    store = await SqliteStore(path, PortLedger(PortRange(3001, 3999))).__aenter__()
    manager = AppManager(
        store, runtime, RandomTargets(PortRange(3000, 3999)), NoHostPorts(),
        instance="miasma", allow_bind_mounts=allow_bind_mounts, ready_timeout=ready_timeout,
    )  # fmt: skip
    return store, manager


@pytest.fixture
def runtime() -> FakeRuntime:
    """The in-memory runtime (a test module may override it)."""
    return FakeRuntime()


@pytest.fixture
async def manager(tmp_path: Path, runtime: FakeRuntime) -> AsyncIterator[AppManager]:
    """A manager on a fresh database file, over ``runtime``."""
    store, manager = await open_manager(tmp_path / "m.db", runtime)
    yield manager
    await store.__aexit__(None, None, None)


@contextlib.asynccontextmanager
async def serving(
    manager: AppManager, interceptors: Sequence[Interceptor] = ()
) -> AsyncIterator[int]:
    """The real servicer over ``manager`` on a loopback port (yielded), behind
    ``interceptors``; stopped on exit."""
    hub = EventHub(manager.store)
    await hub.start()
    server = grpc.aio.server(interceptors=list(interceptors))
    add_app_service(AppServicer(manager, hub, Settings()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        hub.close()
        await server.stop(None)


@pytest.fixture
async def stub(manager: AppManager) -> AsyncIterator[apps_pb2_grpc.AppServiceAsyncStub]:
    """An AppService stub on an in-process server over ``manager`` (and ``runtime``)."""
    async with serving(manager) as port, grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield apps_pb2_grpc.AppServiceStub(ch)

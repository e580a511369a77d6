"""Shared fixtures: a real Docker engine (provisioned when none is reachable),
the locally built test image, and real server processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from miasma.v1 import apps_pb2_grpc

from scripts import engine, swarm
from tests import docker_cli
from tests.certs import Authority
from tests.engines import throwaway_engine
from tests.registry import running_registry
from tests.server import ServerProcess

ENGINE_DIR = Path(os.environ.get("MIASMA_TEST_ENGINE_DIR", "/tmp/miasma-test-engine"))

HTTPD_COMMAND = engine.HTTPD_COMMAND  # busybox httpd on every PORT_<n>; tests import it here
VOLUME_IMAGE = "miasma-test/busybox-volume:latest"
# The swarm engine's networks come from a pool of their own: the worker's veth takes
# 10.214.N.0/24 and docker_gwbridge 10.215.N.0/24 (scripts/swarm.sh).
SWARM_ADDRESS_POOL = "base=10.217.0.0/16,size=24"
# For VOLUME_IMAGE: writes a random token into /data the first time it starts, serves /data
# on every PORT_<n>, exits at once on SIGTERM. The same token after a change: same data.
DATA_SCRIPT = (
    "trap 'exit 0' TERM INT; "
    "[ -s /data/index.html ] || cat /proc/sys/kernel/random/uuid > /data/index.html; "
    "for p in $(env | sed -n 's/^PORT_[0-9]*=//p'); do httpd -p $p -h /data; done; "
    "while :; do sleep 1 & wait $!; done"
)
DATA_COMMAND = ["sh", "-c", DATA_SCRIPT]


def skips_fail() -> bool:
    """Under ``CI=true`` a skipped test is a failure: CI must run everything."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Turn a skip into a failure under ``CI=true`` (xfails stay as they are)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]  # pluggy's Result
    if report.skipped and not hasattr(report, "wasxfail") and skips_fail():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where nothing may be skipped: {reason}"


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """A reachable Docker engine: the environment's, or a private one started for the run."""
    host = engine.ensure_engine(ENGINE_DIR)
    yield host
    engine.stop_engine(ENGINE_DIR)


@pytest.fixture(scope="session")
def test_image(docker_host: str) -> str:
    """A busybox image imported from a local root filesystem (no registry needed)."""
    return engine.ensure_test_image(docker_host)


@pytest.fixture(scope="session")
def volume_image(docker_host: str, test_image: str) -> str:
    """The test image with ``VOLUME /data``, as postgres declares its data directory."""
    return docker_cli.build(docker_host, VOLUME_IMAGE, f"FROM {test_image}\nVOLUME /data\n")


@pytest.fixture(scope="session")
def swarm_host() -> Iterator[str]:
    """A throw-away engine of the run's own, made a single-node swarm manager, with the test
    images: it runs wherever the tests run (a system engine is never turned into a swarm)."""
    with throwaway_engine(address_pool=SWARM_ADDRESS_POOL) as own:
        engine.ensure_test_image(own.host)
        docker_cli.build(own.host, VOLUME_IMAGE, f"FROM {engine.TEST_IMAGE}\nVOLUME /data\n")
        swarm.init_swarm(own.host)
        try:
            yield own.host
        finally:
            swarm.leave_swarm(own.host)  # before the engine stops, so its bridges go too


@pytest.fixture
def instance() -> str:
    """A fresh Miasma instance name, so tests never touch each other's containers."""
    return f"mt{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_server(
    tmp_path: Path, docker_host: str, instance: str
) -> Iterator[Callable[..., ServerProcess]]:
    """Factory for server processes on this test's database; all are stopped and cleaned up."""
    servers: list[ServerProcess] = []

    def make(**kwargs: object) -> ServerProcess:
        settings: dict[str, object] = {"docker_host": docker_host} | kwargs
        server = ServerProcess(
            db_path=tmp_path / "miasma.db",
            instance=instance,
            **settings,  # type: ignore[arg-type]
        )
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
    for host in {server.docker_host for server in servers}:
        docker_cli.remove_instance(host, instance)


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[apps_pb2_grpc.AppServiceStub]:
    """An AppService stub on the test module's ``server`` fixture."""
    channel, app_stub = server.stub()
    with channel:
        yield app_stub


@pytest.fixture(scope="session")
def postgres_image(docker_host: str) -> str:
    """A PostgreSQL 15 image built from Debian's packages (scripts/postgres-image.sh)."""
    return engine.ensure_postgres_image(docker_host)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a Docker registry on loopback (tests/registry.py)."""
    with running_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    """A throw-away CA with its files in the test's folder."""
    return Authority(tmp_path)

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
from tests.server import ServerProcess

ENGINE_DIR = Path(os.environ.get("MIASMA_TEST_ENGINE_DIR", "/tmp/miasma-test-engine"))

HTTPD_COMMAND = engine.HTTPD_COMMAND  # busybox httpd on every PORT_<n>; tests import it here
VOLUME_IMAGE = "miasma-test/busybox-volume:latest"
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
def swarm_host(docker_host: str) -> Iterator[str]:
    """The test engine as a single-node swarm manager (only our private engine is changed)."""
    if docker_host != engine.private_host(ENGINE_DIR):
        pytest.skip(
            f"the Docker engine at {docker_host} is not this test run's private engine, and "
            "turning someone's engine into a swarm manager is not ours to do: unset DOCKER_HOST"
        )
    swarm.init_swarm(docker_host)
    yield docker_host
    swarm.leave_swarm(docker_host)  # before the engine stops, so its bridges go too


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
        server = ServerProcess(
            db_path=tmp_path / "miasma.db",
            docker_host=docker_host,
            instance=instance,
            **kwargs,  # type: ignore[arg-type]
        )
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
    docker_cli.remove_instance(docker_host, instance)


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

"""The instance's Docker network on the real engine: made once under concurrent first
rollouts, made again when removed by hand, and kept unique when duplicates appear."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiodocker
import pytest
from miasma_client import AsyncMiasmaClient, MiasmaClient

from tests.conftest import HTTPD_COMMAND
from tests.docker_cli import containers, docker, http_get
from tests.polling import wait_for
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

RANGE = "26001-26999"


def networks_named(host: str, name: str) -> list[str]:
    """IDs of the networks called exactly ``name``."""
    listed = docker(host, "network", "ls", "--no-trunc", "--filter", f"name={name}",
                    "--format", "{{json .}}")  # fmt: skip
    return [n["ID"] for n in map(json.loads, listed.splitlines()) if n["Name"] == name]


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A container-runtime server on a fresh instance, reconciling every second."""
    return make_server(published_range=RANGE, extra_args=["--reconcile-interval", "1"])


async def test_ten_concurrent_first_creates_make_one_network(
    server: ServerProcess, test_image: str
) -> None:
    """Ten CreateApp at once on an instance with no network yet: all ten run, one network."""
    async with AsyncMiasmaClient(server.address, timeout=120) as client:
        created = await asyncio.gather(
            *(client.create_app(f"app{i}", test_image, command=HTTPD_COMMAND) for i in range(10))
        )
    assert len(created) == 10
    assert len(networks_named(server.docker_host, server.instance)) == 1
    running = [c for c in containers(server.docker_host, server.instance) if c.running]
    assert len(running) == 10


def test_a_network_removed_by_hand_is_made_again(server: ServerProcess, test_image: str) -> None:
    """Miasma stopped, its containers and network removed by hand, Miasma started: every app
    runs again (the README's drift repair), on a new network."""
    with MiasmaClient(server.address) as client:
        for i in range(4):
            client.create_app(f"app{i}", test_image, command=HTTPD_COMMAND,
                              published_ports=[26100 + i])  # fmt: skip
    server.stop()
    ids = [c.id for c in containers(server.docker_host, server.instance)]
    docker(server.docker_host, "rm", "-f", *ids)
    docker(server.docker_host, "network", "rm", server.instance)
    server.start()
    wait_for(
        lambda: len([c for c in containers(server.docker_host, server.instance) if c.running]) == 4,
        "every app to run again",
    )
    assert [http_get(26100 + i).strip() for i in range(4)] == ["miasma-test"] * 4
    assert len(networks_named(server.docker_host, server.instance)) == 1


async def test_a_duplicate_network_is_removed_and_apps_still_start(
    server: ServerProcess, test_image: str
) -> None:
    """Two networks of the instance's name (Docker 20.10 allows it without CheckDuplicate):
    the next rollout removes the unused one and the app starts."""
    async with aiodocker.Docker(url=server.docker_host) as engine:
        for _ in range(2):
            await engine.networks.create(
                {"Name": server.instance, "Driver": "bridge", "CheckDuplicate": False}
            )
    assert len(networks_named(server.docker_host, server.instance)) == 2
    async with AsyncMiasmaClient(server.address, timeout=120) as client:
        app = await client.create_app("web", test_image, command=HTTPD_COMMAND,
                                      published_ports=[26200])  # fmt: skip
    assert app.observed.running == 1
    assert http_get(26200).strip() == "miasma-test"
    assert len(networks_named(server.docker_host, server.instance)) == 1

"""The swarm runtime against the real test swarm, below the API: versioned updates."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from miasma_grpc.domain.models import App, Binding, DesiredState
from miasma_grpc.runtime.swarm import DockerSwarmRuntime
from tests.docker_cli import docker, remove_instance, the_service

pytestmark = pytest.mark.docker


@pytest.fixture
async def runtime(swarm_host: str) -> AsyncIterator[DockerSwarmRuntime]:
    """A swarm runtime with an instance of its own."""
    instance = f"mt{uuid.uuid4().hex[:8]}"
    async with DockerSwarmRuntime(swarm_host, instance=instance) as opened:
        yield opened
    remove_instance(swarm_host, instance)


async def test_update_out_of_sequence_is_retried_at_the_new_version(
    runtime: DockerSwarmRuntime, swarm_host: str, test_image: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An update built on a version someone else changed meanwhile is re-read and applied."""
    app = App("web", test_image, (Binding(19501, 3500),), desired_state=DesiredState.STOPPED)
    await runtime.apply(app)
    [stale] = await runtime._services("web")
    name = f"{runtime.instance}-web"
    docker(swarm_host, "service", "update", "--detach", "--label-add", "touched=yes", name)
    moved = App("web", test_image, (Binding(19502, 3500),), desired_state=DesiredState.STOPPED)
    with caplog.at_level("INFO", logger="miasma_grpc.runtime.swarm"):
        await runtime._update(stale, runtime._spec(moved, (), stale))
    assert "changed under us" in caplog.text  # Docker said "out of sequence" once
    assert the_service(swarm_host, runtime.instance, "web").ports == [
        (19502, 3500, "tcp", "ingress")
    ]
    raw = json.loads(docker(swarm_host, "service", "inspect", name))[0]
    assert raw["Version"]["Index"] > stale["Version"]["Index"] + 1

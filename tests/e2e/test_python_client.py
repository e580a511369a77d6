"""The typed Python client, blocking and async, against the real server and Docker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from miasma.v1 import apps_pb2
from miasma_client import AppStatus, AsyncMiasmaClient, MiasmaClient, MiasmaError, app_status

from tests.conftest import HTTPD_COMMAND
from tests.docker_cli import http_get, the_container
from tests.server import ServerProcess

pytestmark = pytest.mark.docker


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose auto published ports come from 16001-16999."""
    return make_server(published_range="16001-16999")


def test_blocking_client_creates_edits_and_reads_back(
    server: ServerProcess, test_image: str
) -> None:
    """create_app, edit_ports with CLI spellings, get_app: Docker runs what the client reports."""
    with MiasmaClient(server.address) as client:
        app = client.create_app("web", test_image, command=HTTPD_COMMAND)
        assert app_status(app) is AppStatus.RUNNING
        reply = client.edit_ports("web", add_published=["8091,8092"], add_target=[8091])
        assert [(c.slot, c.new_binding.published_port) for c in reply.changes] == [
            (0, 8091),
            (1, 8092),
        ]
        pairs = [(b.published_port, b.target_port) for b in client.get_app("web").bindings]
    assert pairs[0] == (8091, 8091)
    container = the_container(server.docker_host, server.instance, "web")
    assert container.published == {f"{target}/tcp": published for published, target in pairs}
    assert http_get(8092).strip() == "miasma-test"


def test_errors_carry_code_reason_fields_and_holder(server: ServerProcess, test_image: str) -> None:
    """Refusals raise MiasmaError with the gRPC code, Miasma's reason and the offending field."""
    with MiasmaClient(server.address) as client:
        client.create_app("db", test_image, published_ports=["8093"], stopped=True)
        client.create_app("web", test_image, stopped=True)
        with pytest.raises(MiasmaError) as held:
            client.edit_ports("web", add_published=[8093])
        assert held.value.code is grpc.StatusCode.ALREADY_EXISTS
        assert held.value.resource == "apps/db"
        with pytest.raises(MiasmaError) as bad:
            client.edit_ports("web", add_published=[70000])
        assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in bad.value.violations] == ["add_published_ports[0]"]
        with pytest.raises(MiasmaError) as missing:
            client.get_app("nope")
        assert (missing.value.code, missing.value.reason) == (
            grpc.StatusCode.NOT_FOUND,
            "APP_NOT_FOUND",
        )
        assert [b.published_port for b in client.get_app("db").bindings] == [8093]


def test_validate_only_previews_without_changing(server: ServerProcess, test_image: str) -> None:
    """A dry-run edit returns the plan; the stored app keeps its ports."""
    with MiasmaClient(server.address) as client:
        before = client.create_app("web", test_image, stopped=True).bindings[0].published_port
        plan = client.edit_ports("web", add_published=["8094/udp"], validate_only=True)
        assert plan.app.bindings[0].protocol == apps_pb2.PROTOCOL_UDP
        assert [b.published_port for b in client.get_app("web").bindings] == [before]


async def test_async_client_pages_through_apps_and_edits(
    server: ServerProcess, test_image: str
) -> None:
    """AsyncMiasmaClient lists every app across pages and edits like the blocking one."""
    async with AsyncMiasmaClient(server.address) as client:
        names = [f"app-{i}" for i in range(5)]
        for name in names:
            await client.create_app(name, test_image, stopped=True)
        assert [a.name async for a in client.iter_apps(page_size=2)] == [f"apps/{n}" for n in names]
        reply = await client.edit_ports("app-3", add_published=["8095"])
        assert reply.app.bindings[0].published_port == 8095
        with pytest.raises(MiasmaError) as missing:
            await client.start_app("nope")
        assert missing.value.code is grpc.StatusCode.NOT_FOUND
        started = await client.start_app("app-3")
        assert app_status(await client.wait_settled(started.name)) is AppStatus.RUNNING
    assert the_container(server.docker_host, server.instance, "app-3").published == {
        f"{reply.app.bindings[0].target_port}/tcp": 8095
    }


def test_unreachable_server_is_unavailable_without_reason() -> None:
    """A closed port raises MiasmaError(UNAVAILABLE) quickly, with no server reason."""
    with MiasmaClient("127.0.0.1:1", timeout=10) as client, pytest.raises(MiasmaError) as error:
        client.server_info()
    assert (error.value.code, error.value.reason) == (grpc.StatusCode.UNAVAILABLE, "")


def test_blocking_watch_sees_an_edit_after_the_snapshot(
    server: ServerProcess, test_image: str
) -> None:
    """The blocking watch iterator yields the snapshot, its marker, then the edit."""
    with MiasmaClient(server.address) as client:
        client.create_app("web", test_image, stopped=True)
        stream = client.watch_port_events("web")
        kinds = [next(stream).WhichOneof("payload") for _ in range(2)]
        reply = client.edit_ports("web", add_published=[8096])
        event = next(m for m in stream if m.HasField("event")).event
        stream.close()
    assert kinds == ["event", "snapshot_complete"]
    assert event.kind == apps_pb2.PORT_EVENT_KIND_CHANGED
    assert event.revision == reply.app.revision
    assert [b.published_port for b in event.new_bindings] == [8096]


def test_publish_mode_only_on_added_published_ports(server: ServerProcess, test_image: str) -> None:
    """A mode on a removed port is refused naming its field; on an added one it is stored."""
    with MiasmaClient(server.address) as client:
        client.create_app("web", test_image, stopped=True, published_ports=["8097/host"])
        assert client.get_app("web").bindings[0].publish_mode == apps_pb2.PUBLISH_MODE_HOST
        with pytest.raises(MiasmaError) as bad:
            client.edit_ports("web", remove_published=["8097/host"])
    assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in bad.value.violations] == ["remove_published_ports[0].mode"]


def test_the_client_readme_example_runs_and_prints_what_it_says(server: ServerProcess) -> None:
    """clients/python/README.md's example, run as a user would (its own process), prints the
    lines the README shows after it."""
    readme = (Path(__file__).resolve().parents[2] / "clients/python/README.md").read_text()
    [code] = re.findall(r"<!-- tested: [^>]*-->\n```python\n(.*?)```", readme, re.S)
    [expected] = re.findall(r"\nprints\n\n```\n(.*?)```", readme, re.S)
    code = code.replace("127.0.0.1:50051", server.address)
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == expected.splitlines()

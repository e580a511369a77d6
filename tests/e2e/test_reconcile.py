"""Start-up reconciliation against a real engine: adopt, recreate, remove orphans."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from miasma.v1 import apps_pb2

from tests.conftest import HTTPD_COMMAND
from tests.docker_cli import containers, docker, http_get, the_container
from tests.e2e.test_faults import IDLE
from tests.polling import eventually, wait_for
from tests.server import ServerProcess

pytestmark = pytest.mark.docker


def test_restart_recreates_missing_containers_and_removes_orphans(
    make_server: Callable[..., ServerProcess], test_image: str
) -> None:
    """After a restart, a container removed by hand comes back on the same ports and a
    labelled container of an unknown app is removed."""
    server = make_server(published_range="16001-16999")
    channel, stub = server.stub()
    with channel:
        app = stub.CreateApp(
            apps_pb2.CreateAppRequest(
                app_id="phoenix",
                app=apps_pb2.App(image=test_image, command=HTTPD_COMMAND),
                published_ports=[apps_pb2.Port(number=8181)],
            )
        ).app
    before = the_container(server.docker_host, server.instance, "phoenix")
    server.stop()

    docker(server.docker_host, "rm", "-f", before.name)
    docker(
        server.docker_host, "run", "-d", "--name", f"{server.instance}-orphan",
        "--label", f"io.miasma.instance={server.instance}", "--label", "io.miasma.app=orphan",
        test_image, *IDLE,
    )  # fmt: skip

    server.start()
    server.wait_health(serving=True)
    wait_for(lambda: bool(containers(server.docker_host, server.instance, "phoenix")), "phoenix")
    wait_for(lambda: not containers(server.docker_host, server.instance, "orphan"), "no orphan")
    after = the_container(server.docker_host, server.instance, "phoenix")
    assert after.published == before.published
    assert after.env["PORT"] == str(app.bindings[0].target_port)
    assert http_get(8181).strip() == "miasma-test"


def test_a_new_publish_address_rebinds_running_apps(
    make_server: Callable[..., ServerProcess], test_image: str
) -> None:
    """--publish-address changed between two starts: the app's container is made again on
    the new address (it was never applied before: not part of the container's spec)."""
    server = make_server(published_range="16001-16999")
    channel, stub = server.stub()
    with channel:
        stub.CreateApp(
            apps_pb2.CreateAppRequest(
                app_id="web",
                app=apps_pb2.App(image=test_image, command=HTTPD_COMMAND),
                published_ports=[apps_pb2.Port(number=8182)],
            )
        )

    def host_ip() -> str:
        name = the_container(server.docker_host, server.instance, "web").name
        bindings = docker(server.docker_host, "inspect", "-f",
                          "{{json .HostConfig.PortBindings}}", name)  # fmt: skip
        return str(next(iter(json.loads(bindings).values()))[0]["HostIp"])

    assert host_ip() == "127.0.0.1"
    server.stop()
    server.extra_args = [*server.extra_args, "--publish-address", "127.0.0.2"]
    server.start()

    def rebound() -> None:  # a moment with no container: the old one holds the port
        assert host_ip() == "127.0.0.2"

    eventually(rebound, "the container to be published on 127.0.0.2")
    assert http_get(8182, address="127.0.0.2").strip() == "miasma-test"

"""`miasma apps:upgrade` against a real registry (Debian's docker-registry on loopback,
tests/registry.py): a new image pushed under the same tag is pulled and rolled out; the
same image is not (no new container); what runs is checked with HTTP and docker inspect."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.docker_cli import build, docker, http_get, the_container
from tests.e2e.test_cli import Cli
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

PORT = 29501


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose auto published ports come from 29502-29599."""
    return make_server(published_range="29502-29599")


def image_id(host: str, reference: str) -> str:
    """The ID of ``reference`` on the engine."""
    return docker(host, "image", "inspect", "-f", "{{.Id}}", reference).strip()


def test_upgrade_rolls_out_a_new_image_of_the_tag_and_only_then(
    server: ServerProcess, registry: str, test_image: str, tmp_path: Path
) -> None:
    host = server.docker_host
    reference = f"{registry}/upgrade/web:1"
    build(host, reference, f"FROM {test_image}\nRUN echo v1 > /www/index.html\n")
    first = image_id(host, reference)
    docker(host, "push", reference)
    cli = Cli(server, tmp_path / "config", test_image)
    cli.run(["apps:create", "web", "-i", reference, "-p", str(PORT)])
    assert http_get(PORT).strip() == "v1"
    before = the_container(host, server.instance, "web").id

    assert "is up to date" in cli.run("apps:upgrade -a web").stdout
    assert the_container(host, server.instance, "web").id == before

    # v2 pushed under the same tag from elsewhere: this engine's tag still names v1.
    build(host, reference, f"FROM {test_image}\nRUN echo v2 > /www/index.html\n")
    second = image_id(host, reference)
    docker(host, "push", reference)
    docker(host, "tag", first, reference)

    upgraded = cli.run("apps:upgrade -a web").stdout
    assert f"Upgraded web to {second}" in upgraded
    assert http_get(PORT).strip() == "v2"
    container = the_container(host, server.instance, "web")
    assert container.id != before
    shown = json.loads(cli.run("apps:show -a web --json").stdout)
    assert (shown["image"], shown["image_digest"]) == (reference, second)

    assert "is up to date" in cli.run("apps:upgrade -a web").stdout
    assert the_container(host, server.instance, "web").id == container.id
    cli.run("apps:restart -a web")  # a restart keeps the upgraded image
    assert http_get(PORT).strip() == "v2"


def test_upgrade_of_an_image_no_registry_has_fails_and_changes_nothing(
    server: ServerProcess, registry: str, test_image: str, tmp_path: Path
) -> None:
    cli = Cli(server, tmp_path / "config", test_image)
    cli.create("local")  # the test image exists on the engine only
    before = the_container(server.docker_host, server.instance, "local").id
    failed = cli.run("apps:upgrade -a local", ok=False)
    assert failed.returncode == 5
    assert "could not be pulled" in failed.stderr
    assert the_container(server.docker_host, server.instance, "local").id == before

"""``miasma env``, ``env:set``, ``env:unset``, ``env:edit`` and ``apps:update -e`` as a user
runs them (the CLI as a subprocess, $EDITOR a script), checked in ``docker inspect``."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import HTTPD_COMMAND
from tests.docker_cli import docker, the_container
from tests.e2e.test_cli import Cli
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

# $EDITOR for env:edit: drops GREETING, empties nothing, changes EMPTY, adds a spaced value.
EDITOR = """\
import pathlib, sys
path = pathlib.Path(sys.argv[1])
lines = [l for l in path.read_text().splitlines() if not l.startswith("GREETING=")]
lines = [l.replace("EMPTY=\\"\\"", "EMPTY=filled") for l in lines]
path.write_text("\\n".join(lines + ['QUOTED="a b # c"', ""]))
"""


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose auto published ports come from 26001-26999."""
    return make_server(published_range="26001-26999")


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path, test_image: str) -> Cli:
    """The CLI pointed at this test's server."""
    return Cli(server, tmp_path / "config", test_image)


def user_env(cli: Cli, app: str) -> dict[str, str]:
    """The app's container's env, but PATH and Miasma's PORT variables."""
    env = the_container(cli.server.docker_host, cli.server.instance, app).env
    return {k: v for k, v in env.items() if k != "PATH" and not k.startswith("PORT")}


def test_env_commands_change_one_variable_at_a_time(cli: Cli, tmp_path: Path) -> None:
    cli.run(["apps:create", "web", "-i", cli.image, "-e", "GREETING=hello", "-e", "EMPTY=",
             "--", *HTTPD_COMMAND])  # fmt: skip
    cli.run(["env:set", "-a", "web", "NEW=1", "SPACED=two words"])
    assert user_env(cli, "web") == {"GREETING": "hello", "EMPTY": "", "NEW": "1",
                                    "SPACED": "two words"}  # fmt: skip
    assert cli.run("env -a web").stdout == 'EMPTY=""\nGREETING=hello\nNEW=1\nSPACED="two words"\n'

    cli.run("env:unset -a web NEW")
    cli.run("apps:update -a web -e EXTRA=2")  # sets EXTRA, keeps the others
    assert user_env(cli, "web") == {"GREETING": "hello", "EMPTY": "", "SPACED": "two words",
                                    "EXTRA": "2"}  # fmt: skip

    bad = cli.run(["env:set", "-a", "web", "BAD KEY=1"], ok=False)
    assert bad.returncode != 0
    assert "BAD KEY" in bad.stderr
    assert "EXTRA" in user_env(cli, "web")

    editor = tmp_path / "editor.py"
    editor.write_text(f"#!{sys.executable}\n{EDITOR}")
    editor.chmod(editor.stat().st_mode | stat.S_IXUSR)
    edited = cli.run("env:edit -a web", env={"EDITOR": str(editor)})
    assert "set EMPTY, QUOTED; unset GREETING" in edited.stdout
    assert user_env(cli, "web") == {"EMPTY": "filled", "SPACED": "two words", "EXTRA": "2",
                                    "QUOTED": "a b # c"}  # fmt: skip
    assert json.loads(cli.run("env -a web --json").stdout)["QUOTED"] == "a b # c"


def command_of(host: str, target: str, kind: str = "container") -> list[str]:
    """``Config.Cmd`` of a container (or an image)."""
    return list(json.loads(docker(host, kind, "inspect", "-f", "{{json .Config.Cmd}}", target)))


def test_update_goes_back_to_the_images_command(cli: Cli) -> None:
    cli.run(["apps:create", "web", "-i", cli.image, "--", *HTTPD_COMMAND])
    host, instance = cli.server.docker_host, cli.server.instance
    assert command_of(host, the_container(host, instance, "web").name) == HTTPD_COMMAND
    cli.run("apps:update -a web --default-command")
    container = the_container(host, instance, "web").name
    assert command_of(host, container) == command_of(host, cli.image, "image")
    assert json.loads(cli.run("apps:show -a web --json").stdout)["command"] == []

"""The README's walkthrough and grpcurl recipes, run as written against a real server.

Blocks marked ``<!-- tested: tests/e2e/test_readme.py … -->`` are parsed
here; only the address changes (the test server's instead of
``127.0.0.1:50051``), so the README cannot drift from what works.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from miasma_client import MiasmaClient

from tests.docker_cli import containers, http_get, the_container, volume_names
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent
DOCUMENTED_ADDRESS = "127.0.0.1:50051"


def readme_blocks() -> list[list[str]]:
    """The commands of each tested block, continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(
        r"<!-- tested: tests/e2e/test_readme\.py.*?-->\n```bash\n(.*?)```", text, re.S
    )
    return [block.replace("\\\n", " ").splitlines() for block in blocks]


def commands(block: list[str], program: str) -> Iterator[tuple[list[str], str]]:
    """(args, trailing comment) of each line that runs ``program``."""
    for line in block:
        args = shlex.split(line, comments=True)
        if args and args[0] == program:
            comment = line.rpartition("#")[2].strip() if "#" in line else ""
            yield args, comment


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server with the default published range, as `make run` has."""
    return make_server(published_range="3001-3999")


def run(
    args: list[str], server: ServerProcess, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run a documented command with the test server's address."""
    args = [a.replace(DOCUMENTED_ADDRESS, server.address) for a in args]
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=180, env=env,
        check=False, stdin=subprocess.DEVNULL,  # not a terminal: apps:delete does not ask
    )  # fmt: skip


def test_the_readme_has_its_tested_blocks() -> None:
    """The walkthrough, the database walkthrough and the grpcurl recipes are all marked."""
    walkthrough, database, recipes = readme_blocks()
    assert any(line.startswith("miasma apps:edit") for line in walkthrough)
    assert any(line.startswith("psql") for line in database)
    assert any(line.startswith("grpcurl") for line in recipes)


def test_first_app_walkthrough(server: ServerProcess, tmp_path: Path, test_image: str) -> None:
    """Each `miasma` line succeeds and each `curl` line answers; Docker shows each step."""
    walkthrough = readme_blocks()[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    for line in walkthrough:
        args = shlex.split(line, comments=True)
        if not args or args[0] == "export":
            continue
        if args[0] == "curl":
            port = int(args[1].rsplit(":", 1)[1].strip("/"))
            assert http_get(port).strip() == line.rpartition("-> ")[2].strip()
            continue
        result = run(args, server, env)
        assert result.returncode == 0, f"{line}: {result.stderr}"
        if "--add-target-ports 80" in line:
            assert the_container(server.docker_host, server.instance, "hello").published == {
                "80/tcp": 8081
            }
        if "--dry-run" in line:
            assert "8082" in result.stdout
            assert the_container(server.docker_host, server.instance, "hello").published == {
                "80/tcp": 8081
            }
    assert containers(server.docker_host, server.instance, "hello") == []


def test_database_walkthrough(server: ServerProcess, tmp_path: Path, postgres_image: str) -> None:
    """Postgres, edited as the seed page says: the row written before the edits comes back;
    at the end the app and its volume are gone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    run(["miasma", "connect", server.address], server, env)
    psql = shutil.which("psql")
    assert psql, "psql is installed with postgresql-15 by scripts/postgres-image.sh"
    for line in readme_blocks()[1]:
        args = shlex.split(line, comments=True)
        if not args:
            continue
        if args[0] == "psql":
            result = retry_psql([psql, *args[1:]], env)
            if "->" in line:
                assert result.stdout.strip() == line.rpartition("-> ")[2].strip()
            continue
        result = run(args, server, env)
        assert result.returncode == 0, f"{line}: {result.stderr}"
        if args[:2] == ["miasma", "volumes"]:
            assert f"{server.instance}-postgres-" in result.stdout
    assert containers(server.docker_host, server.instance, "postgres") == []
    assert volume_names(server.docker_host, server.instance) == []


def retry_psql(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run psql until the database answers (docker-proxy accepts before postgres listens)."""
    deadline = time.monotonic() + 30
    while True:
        result = subprocess.run(args, capture_output=True, text=True, timeout=30, env=env,
                                check=False)  # fmt: skip
        if result.returncode == 0 or time.monotonic() > deadline:
            assert result.returncode == 0, f"{args}: {result.stderr}"
            return result
        time.sleep(0.2)


def test_grpcurl_recipes(server: ServerProcess, test_image: str) -> None:
    """Every grpcurl recipe works through reflection; the failing one is a rich InvalidArgument."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
    outputs: dict[str, str] = {}
    for args, comment in commands(readme_blocks()[2], "grpcurl"):
        if comment.startswith("streams"):
            watch_with_grpcurl(args, server, env, test_image)
            continue
        result = run(args, server, env)
        if comment.startswith("fails"):
            assert result.returncode != 0
            assert "InvalidArgument" in result.stderr
            assert "add_published_ports[0]" in result.stderr
            continue
        assert result.returncode == 0, f"{args}: {result.stderr}"
        outputs[args[-1]] = result.stdout
        if args[-1].endswith("/GetApp"):
            app = json.loads(result.stdout)["app"]
            pairs = [(b["published_port"], b["target_port"]) for b in app["bindings"]]
            assert pairs == [(8082, 80)]
            assert app["volumes"] == [{"source": "webdata", "target": "/data"}]
            assert the_container(server.docker_host, server.instance, "web").published == {
                "80/tcp": 8082
            }
    volumes = json.loads(outputs["miasma.v1.AppService/ListVolumes"])["volumes"]
    assert [(v["name"], v["mounted_by"]) for v in volumes] == [("webdata", ["apps/web"])]
    assert json.loads(outputs["miasma.v1.AppService/DeleteApp"])["deleted_volumes"] == ["webdata"]
    assert volume_names(server.docker_host, server.instance) == []
    assert "miasma.v1.AppService" in outputs["list"]
    assert "grpc.health.v1.Health" in outputs["list"]
    assert json.loads(outputs["grpc.health.v1.Health/Check"]) == {"status": "SERVING"}
    assert containers(server.docker_host, server.instance, "web") == []


def watch_with_grpcurl(
    args: list[str], server: ServerProcess, env: dict[str, str], image: str
) -> None:
    """The streaming recipe prints the snapshot marker, then an app created meanwhile."""
    args = [a.replace(DOCUMENTED_ADDRESS, server.address) for a in args]
    watcher = subprocess.Popen(
        [str(BIN / args[0]), *args[1:]], stdout=subprocess.PIPE, text=True, env=env
    )
    assert watcher.stdout is not None
    try:
        lines = iter(watcher.stdout.readline, "")
        assert any("snapshot_complete" in line for line in lines)
        with MiasmaClient(server.address) as client:
            client.create_app("watched", image, stopped=True)
        assert any("PORT_EVENT_KIND_ASSIGNED" in line for line in lines)
    finally:
        watcher.terminate()
        watcher.wait(10)

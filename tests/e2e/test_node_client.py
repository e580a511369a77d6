"""The Node client (``clients/node``) against the real server, then its result in Docker."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.docker_cli import http_get, the_container
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"
PUBLISHED_RANGE = (17001, 17999)
NODE_TIMEOUT = 600


def free_port_in(low: int, high: int) -> int:
    """A port of ``low-high`` that nothing on this host listens on right now."""
    for port in random.sample(range(low, high + 1), 50):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # every address, as the busy-port check sees it
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {low}-{high}")


def test_node_client_suite_passes_and_leaves_its_app_published_in_docker(
    make_server: Callable[..., ServerProcess], test_image: str
) -> None:
    """`npm test` passes against the server; the app it kept serves on port P -> 80 in Docker."""
    if not (NODE_CLIENT / "node_modules").is_dir():
        pytest.fail(f"{NODE_CLIENT}/node_modules is missing: run `make check-protos` (npm ci)")
    low, high = PUBLISHED_RANGE
    server = make_server(published_range=f"{low}-{high}")
    port = free_port_in(low, high)
    app = "node-kept"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
    env |= {
        "MIASMA_SERVER": server.address,
        "MIASMA_TEST_IMAGE": test_image,
        "MIASMA_TEST_APP": app,
        "MIASMA_TEST_PUBLISHED_PORT": str(port),
    }

    result = subprocess.run(
        ["npm", "test"],
        cwd=NODE_CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )

    assert result.returncode == 0, (
        f"npm test failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
        f"server log:\n{server.log()}"
    )
    assert "# fail 0" in result.stdout
    assert re.search(r"^ok \d+ - logs:", result.stdout, re.MULTILINE), "the logs test did not run"
    container = the_container(server.docker_host, server.instance, app)
    assert container.published == {"80/tcp": port}
    assert container.env["PORT"] == "80"
    assert "miasma-test" in http_get(port)

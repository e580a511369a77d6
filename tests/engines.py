"""Throw-away private Docker engines for tests that must stop and restart their engine.

Such a test cannot use the shared test engine (other tests run on it), so it starts its
own with ``scripts/docker-engine.sh`` under a fresh directory, may stop and start it again
on the same directory (same socket, same containers), and removes it at the end with its
networks (their bridges would outlive the engine). Only an engine started here is ever
stopped here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scripts.engine import ENGINE_SCRIPT, private_host
from tests.docker_cli import docker

TIMEOUT = 180.0
# Docker's default pools (172.17-31/16, 192.168/20) are shared with every other engine on
# the host, and the networks of concurrent test engines can use them all up: throw-away
# engines take their networks from a pool of their own (Docker skips subnets in use).
ADDRESS_POOL = "base=10.216.0.0/16,size=24"


def can_start_engines() -> bool:
    """Whether this process may start a private dockerd (it needs root)."""
    return os.geteuid() == 0 and shutil.which("dockerd") is not None


def _script(*args: str, address_pool: str = ADDRESS_POOL) -> None:
    extra = os.environ.get("MIASMA_ENGINE_EXTRA_FLAGS", "")
    flags = f"{extra} --default-address-pool {address_pool}".strip()
    result = subprocess.run(
        ["bash", str(ENGINE_SCRIPT), *args],
        env={**os.environ, "MIASMA_ENGINE_EXTRA_FLAGS": flags},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"docker-engine.sh {' '.join(args)} exited with {result.returncode}: "
            f"{result.stderr[-3000:]}"
        )


@dataclass
class ThrowawayEngine:
    """A private dockerd (and containerd) whose state lives under ``workdir``."""

    workdir: Path
    address_pool: str = ADDRESS_POOL  # where its networks' subnets come from

    @property
    def host(self) -> str:
        """Its DOCKER_HOST (``unix://WORKDIR/docker.sock``), the same across restarts."""
        return private_host(self.workdir)

    def start(self) -> str:
        """Start the engine (again, after :meth:`stop`) and return its DOCKER_HOST."""
        _script("start", str(self.workdir), address_pool=self.address_pool)
        return self.host

    def stop(self) -> None:
        """Stop the engine; its containers, images and socket path stay for the next start."""
        _script("stop", str(self.workdir))

    def clear(self) -> None:
        """Remove every container and network: a network's bridge would outlive the engine."""
        ids = docker(self.host, "ps", "-aq").split()
        if ids:
            docker(self.host, "rm", "-f", *ids)
        docker(self.host, "network", "prune", "-f")


@contextmanager
def throwaway_engine(address_pool: str = ADDRESS_POOL) -> Iterator[ThrowawayEngine]:
    """A started throw-away engine, stopped and deleted on exit."""
    # Short path under /tmp: unix socket paths are limited to 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="miasma-throwaway-", dir="/tmp"))
    engine = ThrowawayEngine(workdir, address_pool)
    try:
        engine.start()
        yield engine
    finally:
        try:
            engine.start()  # the test may have left it stopped
            engine.clear()
        finally:
            engine.stop()
            shutil.rmtree(engine.workdir, ignore_errors=True)

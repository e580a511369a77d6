"""``make run``: find or start a Docker engine, build the demo images (busybox, and the
PostgreSQL of the README's database walkthrough), then run the server.

Uses ``MIASMA_DOCKER_HOST``/``DOCKER_HOST`` or the system socket when an engine
answers there; otherwise starts a private engine under ``/tmp/miasma-engine``
(installing Debian's docker.io if needed), which keeps running after the
server stops so the next start is instant. With ``--router caddy``, installs Debian's
caddy if it is missing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from scripts import engine

ENGINE_DIR = Path(os.environ.get("MIASMA_ENGINE_DIR", "/tmp/miasma-engine"))


def wants_router(args: list[str], environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether the server is asked to run a router (``--router caddy``, MIASMA_ROUTER)."""
    for index, arg in enumerate(args):
        if arg.startswith("--router="):
            return bool(arg.partition("=")[2])
        if arg == "--router" and index + 1 < len(args):
            return bool(args[index + 1])
    return bool(environ.get("MIASMA_ROUTER"))


def main() -> None:
    """Resolve the engine, then replace this process with the server."""
    host = os.environ.get("MIASMA_DOCKER_HOST") or engine.ensure_engine(ENGINE_DIR)
    for build in (engine.ensure_test_image, engine.ensure_postgres_image):
        try:
            image = build(host)
            print(f"make run: Docker at {host}; demo image {image}", file=sys.stderr)
        except engine.EngineError as exc:
            print(f"make run: Docker at {host}; a demo image was not built: {exc}", file=sys.stderr)
    if wants_router(sys.argv[1:], os.environ):
        try:
            print(f"make run: router proxy {engine.ensure_caddy()}", file=sys.stderr)
        except engine.EngineError as exc:
            print(f"make run: caddy could not be installed: {exc}", file=sys.stderr)
    env = {**os.environ, "MIASMA_DOCKER_HOST": host}
    os.execve(sys.executable, [sys.executable, "-m", "miasma_grpc", *sys.argv[1:]], env)


if __name__ == "__main__":
    main()

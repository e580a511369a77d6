"""Provide a Docker engine and the busybox test image to the tests that need real Docker.

The docker-marked tests must run anywhere `make test` runs: on a developer machine that
already has Docker, and on a fresh CI machine with no engine running and no registry
reachable (nothing can be pulled). This module reuses an engine that already answers
(``MIASMA_TEST_DOCKER_HOST``, ``DOCKER_HOST`` or ``/var/run/docker.sock``) and otherwise
starts a private one with ``scripts/docker-engine.sh``, which keeps all of its state under
a work directory, installs the Debian packages it lacks, and builds the test image
locally from a static busybox. Only an engine started here is ever stopped here.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
ENGINE_SCRIPT = REPO_ROOT / "scripts" / "docker-engine.sh"
TEST_IMAGE = "miasma-test/busybox:latest"
SYSTEM_SOCKET = pathlib.Path("/var/run/docker.sock")

# Starting may install docker.io and busybox-static with apt-get first.
_START_TIMEOUT = 900.0
_IMAGE_TIMEOUT = 600.0
_STOP_TIMEOUT = 120.0

# Work directories whose engine this process started (and so may stop).
_started: set[pathlib.Path] = set()


class EngineError(RuntimeError):
    """The Docker engine or the test image could not be provided."""


def _docker_answers(docker_host: str) -> bool:
    """Return whether `docker info` succeeds against docker_host."""
    try:
        result = subprocess.run(
            ["docker", "-H", docker_host, "info"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def run_script(
    script: pathlib.Path, *args: str, timeout: float, error: type[Exception]
) -> subprocess.CompletedProcess[str]:
    """Run a bash script of ours; return it finished whatever its exit code (``error`` on
    a timeout)."""
    command = ["bash", str(script), *args]
    try:
        return subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise error(f"{' '.join(command)} timed out after {timeout:.0f}s") from exc


def output_lines(result: subprocess.CompletedProcess[str], error: type[Exception]) -> list[str]:
    """The non-empty stdout lines of a script that succeeded; ``error`` if it did not."""
    if result.returncode != 0:
        shown = " ".join(str(arg) for arg in result.args)
        raise error(f"{shown} exited with {result.returncode}:\n{result.stderr[-4000:]}")
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def _run_script(*args: str, timeout: float) -> str:
    """Run scripts/docker-engine.sh with args; return the last line it printed, or ""."""
    result = run_script(ENGINE_SCRIPT, *args, timeout=timeout, error=EngineError)
    lines = output_lines(result, EngineError)
    return lines[-1] if lines else ""


def private_host(workdir: pathlib.Path) -> str:
    """The DOCKER_HOST of the private engine under ``workdir``."""
    return f"unix://{workdir.resolve() / 'docker.sock'}"


def ensure_engine(workdir: pathlib.Path) -> str:
    """Return the DOCKER_HOST of a working engine, starting a private one in workdir if needed."""
    explicit = os.environ.get("MIASMA_TEST_DOCKER_HOST")
    if explicit:
        return explicit
    candidates: list[str] = []
    env_host = os.environ.get("DOCKER_HOST")
    if env_host:
        candidates.append(env_host)
    if SYSTEM_SOCKET.exists():
        candidates.append(f"unix://{SYSTEM_SOCKET}")
    for docker_host in candidates:
        if _docker_answers(docker_host):
            return docker_host

    workdir = workdir.resolve()
    private = private_host(workdir)
    if _docker_answers(private):
        return private  # left running by someone else: use it, never stop it
    docker_host = _run_script("start", str(workdir), timeout=_START_TIMEOUT)
    _started.add(workdir)
    if not docker_host.startswith("unix://"):
        raise EngineError(f"docker-engine.sh start printed {docker_host!r}, not a DOCKER_HOST")
    return docker_host


def stop_engine(workdir: pathlib.Path) -> None:
    """Stop the private engine in workdir if (and only if) ensure_engine started it."""
    workdir = workdir.resolve()
    if workdir not in _started:
        return
    _run_script("stop", str(workdir), timeout=_STOP_TIMEOUT)
    _started.discard(workdir)


# For the test image: busybox httpd on every PORT_<n> the app gets (one httpd per
# slot), serving /www; exits at once on SIGTERM (a trap runs when `wait` is interrupted,
# not only after a foreground `sleep` ends). Used by the tests and the benchmarks.
HTTPD_COMMAND = [
    "sh",
    "-c",
    "trap 'exit 0' TERM INT; "
    "for p in $(env | sed -n 's/^PORT_[0-9]*=//p'); do httpd -p $p -h /www; done; "
    "while :; do sleep 1 & wait $!; done",
]


def ensure_test_image(docker_host: str, tag: str = TEST_IMAGE) -> str:
    """Build the busybox test image on docker_host unless present, and return its tag."""
    built = _run_script("image", docker_host, tag, timeout=_IMAGE_TIMEOUT)
    if built != tag:
        raise EngineError(f"docker-engine.sh image printed {built!r}, expected {tag!r}")
    return tag


# The PostgreSQL 15 test image (Debian's postgresql-15 + static busybox, built locally by
# scripts/postgres-image.sh): postgres as PID 1 on ${PGPORT:-5432}, trust auth, data in
# the VOLUME /var/lib/postgresql/data, STOPSIGNAL SIGINT (fast shutdown).
POSTGRES_IMAGE = "miasma-test/postgres:15"
POSTGRES_SCRIPT = REPO_ROOT / "scripts" / "postgres-image.sh"
CADDY_SCRIPT = REPO_ROOT / "scripts" / "caddy.sh"
# Building may install postgresql-15 and busybox-static with apt-get first.
_POSTGRES_IMAGE_TIMEOUT = 900.0
_APT_TIMEOUT = 900.0  # seconds: an apt-get update and install


def ensure_postgres_image(docker_host: str, tag: str = POSTGRES_IMAGE) -> str:
    """Build the PostgreSQL test image on docker_host unless present, and return its tag."""
    result = run_script(
        POSTGRES_SCRIPT, docker_host, tag, timeout=_POSTGRES_IMAGE_TIMEOUT, error=EngineError
    )
    lines = output_lines(result, EngineError)
    built = lines[-1] if lines else ""
    if built != tag:
        raise EngineError(f"postgres-image.sh printed {built!r}, expected {tag!r}")
    return tag


def ensure_caddy() -> str:
    """The path of a ``caddy`` binary, Debian's package installed if none (scripts/caddy.sh)."""
    result = run_script(CADDY_SCRIPT, timeout=_APT_TIMEOUT, error=EngineError)
    lines = output_lines(result, EngineError)
    return lines[-1] if lines else ""

"""Independent checks of what Docker really runs, through the ``docker`` CLI.

Tests look at Docker with a different client than the server uses
(aiodocker), so a bug in one cannot hide behind the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


def docker(host: str, *args: str, check: bool = True, stdin: str | None = None) -> str:
    """Run ``docker -H host ARGS`` (``stdin`` as its input) and return its stdout."""
    result = subprocess.run(
        ["docker", "-H", host, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the legacy builder works offline
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def logs(host: str, container: str) -> str:
    """Everything ``container`` wrote, stdout then stderr (``docker logs`` keeps them apart)."""
    result = subprocess.run(
        ["docker", "-H", host, "logs", container],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout + result.stderr


def copy_image(source: str, destination: str, tag: str) -> None:
    """Copy image ``tag`` from one engine to another (``docker save | docker load``)."""
    saved = subprocess.run(
        ["docker", "-H", source, "save", tag], capture_output=True, timeout=120, check=True
    )
    subprocess.run(
        ["docker", "-H", destination, "load"], input=saved.stdout, capture_output=True,
        timeout=120, check=True,
    )  # fmt: skip


def build(host: str, tag: str, dockerfile: str) -> str:
    """Build ``tag`` from a Dockerfile whose base images are local (no registry); its tag."""
    docker(host, "build", "-q", "-t", tag, "-", stdin=dockerfile)
    return tag


@dataclass(frozen=True)
class Container:
    """The parts of ``docker inspect`` the tests look at."""

    name: str
    running: bool
    env: dict[str, str]
    published: dict[str, int]  # "8080/tcp" -> host port
    aliases: list[str]
    mounts: list[tuple[str, str, str, bool]]  # (type, volume name or host path, target, rw)
    id: str = ""


def containers(host: str, instance: str, app: str | None = None) -> list[Container]:
    """Containers of ``instance`` (optionally of one app), inspected."""
    filters = ["--filter", f"label=io.miasma.instance={instance}"]
    if app is not None:
        filters += ["--filter", f"label=io.miasma.app={app}"]
    ids = docker(host, "ps", "-aq", *filters).split()
    if not ids:
        return []
    # A container may go between the listing and the inspection: inspect what is left.
    inspected = json.loads(docker(host, "inspect", *ids, check=False) or "[]")
    return [_container(raw, instance) for raw in inspected]


def _container(raw: dict[str, Any], network: str) -> Container:
    env = dict(item.split("=", 1) for item in raw["Config"]["Env"])
    bindings = raw["HostConfig"]["PortBindings"] or {}
    published = {key: int(value[0]["HostPort"]) for key, value in bindings.items()}
    endpoint = raw["NetworkSettings"]["Networks"].get(network) or {}
    return Container(
        name=raw["Name"].lstrip("/"),
        running=bool(raw["State"]["Running"]),
        env=env,
        published=published,
        aliases=list(endpoint.get("Aliases") or []),
        mounts=sorted(
            (m["Type"], m.get("Name") or m["Source"], m["Destination"], bool(m["RW"]))
            for m in raw.get("Mounts") or []
        ),
        id=raw["Id"],
    )


def the_container(host: str, instance: str, app: str) -> Container:
    """The single running container of ``app`` (fails if there is not exactly one)."""
    found = [c for c in containers(host, instance, app) if c.running]
    assert len(found) == 1, f"expected one running container for {app}, found {found}"
    return found[0]


def remove_instance(host: str, instance: str) -> None:
    """Remove every service, container and the network of a test instance."""
    remove_services(host, instance)
    ids = docker(host, "ps", "-aq", "--filter", f"label=io.miasma.instance={instance}").split()
    if ids:
        docker(host, "rm", "-f", *ids, check=False)
    docker(host, "network", "rm", instance, f"{instance}-swarm", check=False)
    volumes = volume_names(host, instance)
    if volumes:
        docker(host, "volume", "rm", "-f", *volumes, check=False)


def volume_names(host: str, instance: str) -> list[str]:
    """The volumes Miasma made for ``instance`` (by its label), sorted."""
    listed = docker(host, "volume", "ls", "-q", "--filter", f"label=io.miasma.instance={instance}")
    return sorted(listed.split())


def http_get(port: int, timeout: float = 20.0, address: str = "127.0.0.1") -> str:
    """GET http://ADDRESS:PORT/, retrying until the app answers or the deadline passes."""
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{address}:{port}/", timeout=2) as reply:
                return str(reply.read().decode())
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            error = exc
            time.sleep(0.1)
    raise AssertionError(f"nothing answered on {address}:{port}: {error}")


@dataclass(frozen=True)
class Service:
    """The parts of ``docker service inspect`` the swarm tests look at."""

    name: str
    env: dict[str, str]
    ports: list[tuple[int, int, str, str]]  # (published, target, protocol, publish mode)
    constraints: list[str]
    replicas: int


def services(host: str, instance: str, app: str | None = None) -> list[Service]:
    """Services of ``instance`` (optionally of one app), inspected."""
    filters = ["--filter", f"label=io.miasma.instance={instance}"]
    if app is not None:
        filters += ["--filter", f"label=io.miasma.app={app}"]
    for _ in range(5):  # a service may go between the listing and the inspection: list again
        ids = docker(host, "service", "ls", "-q", *filters).split()
        if not ids:
            return []
        inspected = json.loads(docker(host, "service", "inspect", *ids, check=False) or "[]")
        if len(inspected) == len(ids):
            return [_service(raw) for raw in inspected]
    raise RuntimeError(f"services of {instance} kept changing while being inspected")


def _service(raw: dict[str, Any]) -> Service:
    spec = raw["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    return Service(
        name=spec["Name"],
        env=dict(item.split("=", 1) for item in container.get("Env") or []),
        ports=[
            (p["PublishedPort"], p["TargetPort"], p["Protocol"], p["PublishMode"])
            for p in spec.get("EndpointSpec", {}).get("Ports") or []
        ],
        constraints=list(spec["TaskTemplate"].get("Placement", {}).get("Constraints") or []),
        replicas=int(spec["Mode"]["Replicated"]["Replicas"]),
    )


def the_service(host: str, instance: str, app: str) -> Service:
    """The single service of ``app`` (fails if there is not exactly one)."""
    found = services(host, instance, app)
    assert len(found) == 1, f"expected one service for {app}, found {found}"
    return found[0]


def remove_services(host: str, instance: str) -> None:
    """Remove every service of a test instance (nothing when the engine is not in a swarm)."""
    ids = docker(
        host, "service", "ls", "-q", "--filter", f"label=io.miasma.instance={instance}", check=False
    )
    if ids.split():
        docker(host, "service", "rm", *ids.split(), check=False)

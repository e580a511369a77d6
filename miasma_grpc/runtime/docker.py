"""What both runtimes need from aiodocker: error translation and local images."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import aiodocker
import aiohttp

from miasma_grpc.domain.errors import RuntimeFailure, Unavailable
from miasma_grpc.domain.images import PulledImage
from miasma_grpc.runtime.base import say

UNREACHABLE = 900  # aiodocker's status for "could not connect to the engine"
# Everything a call to the engine may raise besides a refusal it answered with.
ENGINE_ERRORS = (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError)
PULL_TIMEOUT = 300.0
# How Docker says a published port is held by something else on the host.
PORT_BUSY_SIGNS = ("address already in use", "port is already allocated")


@asynccontextmanager
async def docker_errors(action: str) -> AsyncIterator[None]:
    """Translate aiodocker failures into Miasma's errors, once, at the edge."""
    try:
        yield
    except aiodocker.DockerError as exc:
        if exc.status == UNREACHABLE:
            raise Unavailable(
                f"Docker is unreachable while trying to {action}: {exc.message}"
            ) from exc
        busy = any(sign in exc.message for sign in PORT_BUSY_SIGNS)
        raise RuntimeFailure(
            f"Docker refused to {action}: {exc.message}",
            docker_status=exc.status,
            reason="PORT_BUSY_ON_HOST" if busy else None,
        ) from exc
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        raise Unavailable(f"Docker is unreachable while trying to {action}: {exc}") from exc


def image_unavailable(image: str, detail: str) -> RuntimeFailure:
    """The error for an image that is neither local nor pullable."""
    return RuntimeFailure(
        f"image {image!r} is not available locally and could not be pulled: {detail}",
        reason="IMAGE_PULL_FAILED",
        metadata={"image": image},
    )


async def ensure_image(
    docker: aiodocker.Docker, image: str, *, pull_timeout: float = PULL_TIMEOUT
) -> dict[str, Any]:
    """Use ``image`` if the engine has it, else pull it; :func:`image_unavailable` if neither
    (a pull that takes longer than ``pull_timeout`` seconds included).

    Returns what ``docker image inspect`` says of it.
    """
    try:
        async with docker_errors(f"inspect image {image!r}"):
            return dict(await docker.images.inspect(image))
    except RuntimeFailure:
        pass  # not present locally: pull it
    return await pull_image(docker, image, pull_timeout)


async def pull_image(docker: aiodocker.Docker, image: str, limit_s: float) -> dict[str, Any]:
    """Pull ``image`` (even if the engine has it); what ``docker image inspect`` then says
    of it. :func:`image_unavailable` when the pull fails or takes more than ``limit_s``."""
    limit = asyncio.timeout(limit_s)
    progress = PullProgress(image)
    say(progress.text())
    try:
        async with limit, docker_errors(f"pull image {image!r}"):
            async for message in docker.images.pull(image, stream=True):
                if progress.update(message):
                    say(progress.text())
    except RuntimeFailure as exc:
        raise image_unavailable(image, exc.message) from exc
    except TimeoutError as exc:
        if not limit.expired():
            raise
        raise image_unavailable(image, f"the pull took longer than {limit_s:g} s") from exc
    async with docker_errors(f"inspect image {image!r}"):
        return dict(await docker.images.inspect(image))


class PullProgress:
    """A pull's progress in words, from Docker's stream of per-layer messages
    (``{"id": layer, "status": "Downloading", "progressDetail": {"current", "total"}}``)."""

    DONE = frozenset({"Download complete", "Verifying Checksum", "Pull complete"})

    def __init__(self, image: str) -> None:
        self.image = image
        self.layers: dict[str, tuple[int, int]] = {}  # bytes fetched and to fetch, per layer

    def update(self, message: Mapping[str, Any]) -> bool:
        """Take one message; whether the figures changed."""
        layer, status = str(message.get("id", "")), message.get("status")
        detail = message.get("progressDetail") or {}
        before = self.layers.get(layer)
        if status == "Downloading" and detail.get("total"):
            self.layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
        elif status in self.DONE and before is not None:
            self.layers[layer] = (before[1], before[1])
        return self.layers.get(layer) != before

    def text(self) -> str:
        """The progress so far: "pulling web:2: 12.1 of 40.3 MB" (no figures at first)."""
        if not self.layers:
            return f"pulling {self.image}"
        done = sum(current for current, _ in self.layers.values())
        total = sum(size for _, size in self.layers.values())
        return f"pulling {self.image}: {done / 1e6:.1f} of {total / 1e6:.1f} MB"


def declared_volumes(image: Mapping[str, Any]) -> tuple[str, ...]:
    """The paths an image declares with ``VOLUME`` (from ``docker image inspect``)."""
    return tuple((image.get("Config") or {}).get("Volumes") or {})


class DockerClient:
    """Owns one aiodocker client for a runtime: open on enter, closed on exit."""

    def __init__(self, docker_host: str | None) -> None:
        self._docker_host = docker_host
        self._docker: aiodocker.Docker | None = None

    async def __aenter__(self) -> Self:
        self._docker = aiodocker.Docker(url=self._docker_host)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    @property
    def docker(self) -> aiodocker.Docker:
        """The aiodocker client (open between enter and exit)."""
        if self._docker is None:
            raise RuntimeError("runtime is not open")
        return self._docker

    async def image_id(self, image: str) -> str:
        """The ID of ``image`` on this engine now; "" when it has none."""
        try:
            async with docker_errors(f"inspect image {image!r}"):
                return str((await self.docker.images.inspect(image))["Id"])
        except RuntimeFailure as exc:
            if exc.docker_status == 404:
                return ""
            raise

    async def pull(self, image: str) -> PulledImage:
        """Pull ``image`` from its registry even if this engine has it (an upgrade);
        ``image_unavailable`` when the pull fails or takes longer than ``PULL_TIMEOUT``."""
        shown = await pull_image(self.docker, image, PULL_TIMEOUT)
        repo = image.split("@")[0].rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        digests = [str(d) for d in shown.get("RepoDigests") or [] if str(d).startswith(repo + "@")]
        return PulledImage(str(shown["Id"]), digests[0] if digests else "")

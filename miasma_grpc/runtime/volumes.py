"""Named volumes on the Docker edge, shared by both runtimes.

Volumes Miasma makes carry its labels (instance, the app they were made for,
and for an image's ``VOLUME`` paths the app's uid and the path), so they can
be listed and deleted after their app has gone. Docker creates a volume the
first time a container (or a swarm task, on its node) mounts it, with the
labels given in the mount; Miasma never deletes one unless asked.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from miasma_grpc.domain.errors import FailedPrecondition, NotFound, RuntimeFailure
from miasma_grpc.domain.models import App
from miasma_grpc.domain.volumes import Mount, VolumeInfo
from miasma_grpc.runtime.base import (
    LABEL_APP,
    LABEL_IMAGE_PATH,
    LABEL_MANAGED,
    LABEL_UID,
)
from miasma_grpc.runtime.docker import DockerClient, docker_errors

RELEASE_TIMEOUT = 30.0  # seconds a deleted app's containers get to let go of its volumes
RELEASE_POLL = 0.2


def mount_spec(mount: Mount, app: App, instance: str) -> dict[str, Any]:
    """The Docker ``Mount`` object of ``mount`` (container HostConfig and swarm ContainerSpec)."""
    volume = mount.volume
    spec: dict[str, Any] = {
        "Type": "bind" if volume.bind else "volume",
        "Source": volume.source,
        "Target": volume.target,
        "ReadOnly": volume.read_only,
    }
    if not volume.bind:
        labels = {LABEL_MANAGED: instance, LABEL_APP: app.name}
        if mount.image_path:  # (after a rename too: made for the app's first name)
            labels |= {LABEL_APP: app.volume_owner, LABEL_UID: app.uid}
            labels |= {LABEL_IMAGE_PATH: mount.image_path}
        # Applied when Docker creates the volume; an existing volume keeps its own.
        spec["VolumeOptions"] = {"Labels": labels}
    return spec


class DockerVolumes(DockerClient):
    """Lists and deletes the volumes of one Miasma instance (``self.instance``)."""

    instance: str

    async def check_mountable(self, mounts: Sequence[Mount]) -> None:
        """Refuse a named volume another Miasma instance made (its data is not ours to give
        out); a volume without Miasma's label (made by hand) may be mounted."""
        for mount in mounts:
            if mount.volume.bind or mount.image_path:
                continue
            name = mount.volume.source
            try:
                async with docker_errors(f"inspect volume {name!r}"):
                    shown = await self.docker._query_json(f"volumes/{quote(name, safe='')}")
            except RuntimeFailure as exc:
                if "no such volume" in exc.message.lower():
                    continue  # made by the first container that mounts it
                raise
            owner = (shown.get("Labels") or {}).get(LABEL_MANAGED)
            if owner is not None and owner != self.instance:
                raise RuntimeFailure(
                    f"volume {name!r} belongs to another Miasma (instance {owner!r}): "
                    "mount a volume of this one's",
                    reason="VOLUME_OF_ANOTHER_INSTANCE",
                    metadata={"volume": name, "instance": owner},
                )

    async def list_volumes(self) -> list[VolumeInfo]:
        """Every volume this Miasma made, in name order."""
        async with docker_errors("list volumes"):
            found = await self.docker._query_json(
                "volumes",
                params={"filters": json.dumps({"label": [f"{LABEL_MANAGED}={self.instance}"]})},
            )
        return sorted((_info(v) for v in found.get("Volumes") or []), key=lambda v: v.name)

    async def inspect_volume(self, name: str) -> VolumeInfo:
        """One volume this Miasma made; :class:`NotFound` for any other."""
        try:
            async with docker_errors(f"inspect volume {name!r}"):
                shown = await self.docker._query_json(f"volumes/{quote(name, safe='')}")
        except RuntimeFailure as exc:
            if "no such volume" not in exc.message.lower():
                raise
            shown = {}
        if (shown.get("Labels") or {}).get(LABEL_MANAGED) != self.instance:
            raise NotFound(
                f"no volume {name!r} made by this Miasma (instance {self.instance!r})",
                reason="VOLUME_NOT_FOUND",
                resource=f"volumes/{name}",
            )
        return _info(shown)

    async def delete_volume(self, name: str) -> None:
        """Delete one volume; refused while a container (of Miasma's or not) uses it."""
        try:
            async with docker_errors(f"delete volume {name!r}"):
                await self.docker._query_json(f"volumes/{quote(name, safe='')}", method="DELETE")
        except RuntimeFailure as exc:
            if "in use" in exc.message:
                raise FailedPrecondition(
                    f"volume {name!r} is in use by a container: {exc.message}",
                    reason="VOLUME_IN_USE",
                    resource=f"volumes/{name}",
                ) from exc
            if "no such volume" not in exc.message.lower():
                raise

    async def delete_volumes(self, app: App, keep: Collection[str] = ()) -> tuple[str, ...]:
        """Delete what Miasma made for ``app``: its image's volumes and the named
        volumes of its own that no other app mounts (``keep``). Host paths stay."""
        own = {v.source for v in app.volumes if not v.bind}
        made = [
            v.name
            for v in await self.list_volumes()
            if (v.image_path and (v.app, v.uid) == (app.volume_owner, app.uid))
            or (v.name in own and v.name not in keep)
        ]
        for name in made:
            await self._delete_when_free(name)
        return tuple(made)

    async def _delete_when_free(self, name: str) -> None:
        """Delete ``name``, retrying while a container that is going away still uses it
        (a swarm removes a service's tasks after the service)."""
        deadline = time.monotonic() + RELEASE_TIMEOUT
        while True:
            try:
                return await self.delete_volume(name)
            except FailedPrecondition:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(RELEASE_POLL)


def _info(volume: Mapping[str, Any]) -> VolumeInfo:
    labels = volume.get("Labels") or {}
    created = volume.get("CreatedAt") or ""
    try:
        create_time = datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None
    except ValueError:
        create_time = None
    return VolumeInfo(
        name=str(volume.get("Name", "")),
        app=labels.get(LABEL_APP, ""),
        uid=labels.get(LABEL_UID, ""),
        image_path=labels.get(LABEL_IMAGE_PATH, ""),
        create_time=create_time,
    )

"""The one Docker network every app of an instance joins: made once, kept unique.

Docker 20.10 accepts two networks of one name (without ``CheckDuplicate``), and then
refuses every container that names it ("network … is ambiguous"). So the network is
found by exact name, created with ``CheckDuplicate`` under the caller's lock, and any
duplicate found is removed (the one in use, else the oldest, stays); containers and
services then refer to it by ID.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import aiodocker

from miasma_grpc.domain.errors import RuntimeFailure
from miasma_grpc.runtime.base import LABEL_MANAGED
from miasma_grpc.runtime.docker import docker_errors

log = logging.getLogger(__name__)


async def ensure_network(docker: aiodocker.Docker, name: str, *, instance: str, driver: str) -> str:
    """The ID of network ``name`` (``driver``), created if missing, duplicates removed."""
    found = await _named(docker, name)
    if not found:
        config: dict[str, Any] = {
            "Name": name,
            "Driver": driver,
            "Labels": {LABEL_MANAGED: instance},
            "CheckDuplicate": True,
        }
        if driver == "overlay":
            config["Attachable"] = True
        try:
            async with docker_errors(f"create network {name!r}"):
                await docker.networks.create(config)
        except RuntimeFailure as exc:
            if exc.docker_status != 409:  # 409: made meanwhile (another server): use it
                raise
        found = await _named(docker, name)
    if not found:
        raise RuntimeFailure(f"network {name!r} vanished while it was being set up")
    keep, *extra = sorted(found, key=lambda n: (-len(n.get("Containers") or {}), n["Created"]))
    for duplicate in extra:
        log.warning("removing duplicate network %s (%s)", name, duplicate["Id"][:12])
        try:
            async with docker_errors(f"remove a duplicate of network {name!r}"):
                await docker._query_json(f"networks/{quote(duplicate['Id'])}", method="DELETE")
        except RuntimeFailure as exc:
            log.warning("could not remove duplicate network %s: %s", name, exc.message)
    if keep.get("Driver") not in (driver, "", None):
        raise RuntimeFailure(
            f"network {name!r} exists with driver {keep.get('Driver')!r}, not {driver!r}: "
            "remove it or use another --instance",
            reason="NETWORK_CONFLICT",
        )
    return str(keep["Id"])


async def _named(docker: aiodocker.Docker, name: str) -> list[dict[str, Any]]:
    """Every network called exactly ``name``, inspected (the list omits their containers)."""
    async with docker_errors(f"list networks named {name!r}"):
        listed = await docker._query_json(
            "networks", params={"filters": json.dumps({"name": [name]})}
        )
        return [
            await docker._query_json(f"networks/{quote(n['Id'])}")
            for n in listed
            if n.get("Name") == name
        ]

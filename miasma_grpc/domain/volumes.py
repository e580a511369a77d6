"""Volumes: validation, add/remove planning, who holds a named volume, and the
names of the volumes Miasma makes for an image's ``VOLUME`` paths.

The rules (docs/volumes.md):

* a target is an absolute path without ``..``, not ``/`` and not inside what
  Docker manages for every container (``/proc``, ``/sys``, ``/dev``,
  ``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf``); no two mounts of an
  app share a target or nest one inside the other;
* a source is a Docker volume name or, when the server allows bind mounts, an
  absolute host path;
* a named volume mounted writable by one app is mounted by no other app
  (two processes on one data directory corrupt it); read-only mounts share.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from miasma_grpc.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument
from miasma_grpc.domain.models import App, Volume

MAX_VOLUMES = 32
MAX_PATH = 1024
MAX_NAME = 200  # Docker keeps a local volume in a directory of that name (255 at most)
# Docker's own rule for volume names.
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")
# What Docker sets up in every container (and Miasma relies on for the app's
# network alias): a mount over one of these breaks the container.
PROTECTED = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
_READABLE_PATH = re.compile(r"(?:/[A-Za-z0-9_.]+)+")


@dataclass(frozen=True)
class VolumeInfo:
    """A named volume Miasma made, as Docker describes it.

    ``app`` is the app it was made for; ``uid`` and ``image_path`` are set for a
    volume made for a ``VOLUME`` of that app's image (the app's alone).
    """

    name: str
    app: str = ""
    uid: str = ""
    image_path: str = ""
    create_time: datetime | None = None


@dataclass(frozen=True)
class VolumeEdit:
    """Volumes to mount and to unmount in one atomic change (removals first)."""

    add: tuple[Volume, ...] = ()
    remove: tuple[Volume, ...] = ()  # matched by target; a source given must match too

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


def new_uid() -> str:
    """A fresh app ``uid``: 6 random hex digits."""
    return secrets.token_hex(3)


def normalize_path(path: str, field: str, what: str) -> str:
    """``path`` as an absolute path without ``.``, ``..``, ``//`` or a trailing ``/``."""
    if not path.startswith("/"):
        raise InvalidArgument.field(
            field, f"{what} {path[:80]!r} must be an absolute path", reason="INVALID_VOLUME"
        )
    if len(path) > MAX_PATH or any(ord(c) < 32 or c == "\x7f" for c in path):
        raise InvalidArgument.field(
            field,
            f"{what} must be at most {MAX_PATH} characters without control characters",
            reason="INVALID_VOLUME",
        )
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise InvalidArgument.field(
            field, f"{what} {path[:80]!r} may not contain '..'", reason="INVALID_VOLUME"
        )
    return "/" + "/".join(parts)


def validate_volume(volume: Volume, field: str, *, allow_bind: bool) -> Volume:
    """``volume`` with normalised paths, or :class:`InvalidArgument` naming ``field``."""
    target = normalize_path(volume.target, f"{field}.target", "the target")
    if target == "/":
        raise InvalidArgument.field(
            f"{field}.target", "the target may not be the container's root", reason="INVALID_VOLUME"
        )
    for protected in PROTECTED:
        if target == protected or target.startswith(protected + "/"):
            raise InvalidArgument.field(
                f"{field}.target",
                f"{target!r} is managed by Docker for every container ({protected}); mount "
                "somewhere else",
                reason="PROTECTED_TARGET",
            )
    source = volume.source
    if source.startswith("/"):
        source = normalize_path(source, f"{field}.source", "the host path")
        if not allow_bind:
            raise FailedPrecondition(
                f"{field}.source: {source!r} is a host path, and this server does not allow "
                "bind mounts (they give the app the host's files): use a named volume, or "
                "start the server with --allow-bind-mounts",
                reason="BIND_MOUNTS_DISABLED",
                violations=[FieldViolation(f"{field}.source", "bind mounts are not allowed")],
            )
    elif not (VOLUME_NAME.fullmatch(source) and len(source) <= MAX_NAME):
        raise InvalidArgument.field(
            f"{field}.source",
            f"{source[:80]!r} is neither a volume name (2-{MAX_NAME} letters, digits, '_', '.' "
            "or '-', starting with a letter or digit) nor an absolute host path",
            reason="INVALID_VOLUME",
        )
    return Volume(source, target, volume.read_only)


def validate_volume_name(name: str, field: str = "name") -> str:
    """``name`` if it is a Docker volume name, else :class:`InvalidArgument` naming ``field``."""
    if not (VOLUME_NAME.fullmatch(name) and len(name) <= MAX_NAME):
        raise InvalidArgument.field(
            field,
            f"{name[:80]!r} is not a volume name (2-{MAX_NAME} letters, digits, '_', '.' or '-', "
            "starting with a letter or digit)",
            reason="INVALID_VOLUME",
        )
    return name


def check_targets(volumes: Sequence[Volume], field: str) -> None:
    """No two mounts share a target or nest one inside the other."""
    if len(volumes) > MAX_VOLUMES:
        raise InvalidArgument.field(field, f"at most {MAX_VOLUMES} volumes", reason="TOO_MANY")
    ordered = sorted(volumes, key=lambda v: v.target)
    for before, after in itertools.pairwise(ordered):
        if after.target == before.target:
            raise InvalidArgument.field(
                field, f"two volumes mount at {after.target!r}", reason="DUPLICATE_TARGET"
            )
        if after.target.startswith(before.target + "/"):
            raise InvalidArgument.field(
                field,
                f"{after.target!r} is inside {before.target!r}, which another volume mounts",
                reason="NESTED_TARGET",
            )


def validate_volumes(
    volumes: Iterable[Volume], field: str, *, allow_bind: bool, known: Iterable[Volume] = ()
) -> tuple[Volume, ...]:
    """Validate a whole list of an app's volumes (``known`` ones were accepted before)."""
    accepted = set(known)
    result = tuple(
        v if v in accepted else validate_volume(v, f"{field}[{i}]", allow_bind=allow_bind)
        for i, v in enumerate(volumes)
    )
    check_targets(result, field)
    return result


def plan_volumes(
    current: Sequence[Volume], edit: VolumeEdit, *, allow_bind: bool
) -> tuple[Volume, ...]:
    """The app's volumes after ``edit``: removals first, then additions, in order.

    Removing a target the app does not mount names the ones it does; adding a
    mount that is already there is a no-op; adding over a target mounted from
    something else must remove that mount in the same edit.
    """
    volumes = list(current)
    for index, removed in enumerate(edit.remove):
        field = f"remove_volumes[{index}]"
        target = normalize_path(removed.target, f"{field}.target", "the target")
        match = next((v for v in volumes if v.target == target), None)
        if match is None or (removed.source and _source(removed.source) != match.source):
            mounted = ", ".join(str(v) for v in volumes) or "none"
            raise InvalidArgument.field(
                field,
                f"the app does not mount {str(removed) if removed.source else target!r}; "
                f"its volumes: {mounted}",
                reason="VOLUME_NOT_MOUNTED",
            )
        volumes.remove(match)
    for index, added in enumerate(edit.add):
        volume = validate_volume(added, f"add_volumes[{index}]", allow_bind=allow_bind)
        existing = next((v for v in volumes if v.target == volume.target), None)
        if existing == volume:
            continue
        if existing is not None:
            raise InvalidArgument.field(
                f"add_volumes[{index}]",
                f"{volume.target!r} is already mounted from {existing}: remove it in the same "
                "edit to replace it",
                reason="DUPLICATE_TARGET",
            )
        volumes.append(volume)
    result = tuple(volumes)
    check_targets(result, "add_volumes")
    return result


def check_holders(
    app: App, others: Mapping[str, App], instance: str, *, field: str, new: Sequence[Volume]
) -> None:
    """Refuse a volume in ``new`` (of ``app``'s volumes, at ``field[i]``) that another app holds.

    A volume mounted writable by one app is mounted by no other; a volume
    Miasma made for another app's image is that app's alone.
    """
    for index, volume in enumerate(new):
        if volume.bind:
            continue
        where = f"{field}[{index}].source"
        for other in others.values():
            if other.name == app.name:
                continue
            if volume.source.startswith(image_volume_prefix(instance, other)):
                raise _held(volume.source, other.name, where, "holds the data of its image")
            for theirs in other.volumes:
                if theirs.source == volume.source and not (volume.read_only and theirs.read_only):
                    how = "read-only" if theirs.read_only else "writable"
                    raise _held(
                        volume.source,
                        other.name,
                        where,
                        f"mounts it {how}; a volume mounted writable has one app only",
                    )


def _held(source: str, holder: str, field: str, why: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{field}: volume {source!r} is held by app {holder!r}, which {why}",
        reason="VOLUME_IN_USE",
        resource=f"apps/{holder}",
        violations=[FieldViolation(field, f"held by app {holder!r}")],
    )


def image_volume_prefix(instance: str, app: App) -> str:
    """What the names of the volumes Miasma makes for ``app``'s image start with."""
    return f"{instance}-{app.volume_owner}-{app.uid}-"


def image_volume_name(instance: str, app: App, path: str) -> str:
    """The named volume that keeps the data an image declares at ``path`` for ``app``.

    Readable (``miasma-db-3fa9c1-var-lib-postgresql-data``) and stable for the
    app's life; paths that would read alike (``/a-b``, ``/a/b``) get a digest.
    """
    prefix = image_volume_prefix(instance, app)
    slug = path.strip("/").replace("/", "-")
    room = MAX_NAME - len(prefix)
    if _READABLE_PATH.fullmatch(path) and len(slug) <= room:
        return prefix + slug
    digest = hashlib.sha256(path.encode()).hexdigest()[:8]
    return f"{prefix}{re.sub(r'[^A-Za-z0-9_.-]', '_', slug)[: max(room - 9, 0)]}-{digest}"


def normalized(volume: Volume) -> Volume:
    """``volume`` with its paths normalised (an already validated volume, as stored)."""
    target = normalize_path(volume.target, "target", "the target")
    return Volume(_source(volume.source), target, volume.read_only)


def _source(source: str) -> str:
    return normalize_path(source, "source", "the host path") if source.startswith("/") else source


@dataclass(frozen=True)
class Mount:
    """One mount of an app's container; ``image_path`` is set for a volume Miasma made
    for a ``VOLUME`` the image declares (the volume's name is then derived)."""

    volume: Volume
    image_path: str = ""


def app_mounts(app: App, declared: Iterable[str], instance: str) -> tuple[Mount, ...]:
    """What the app's container mounts: its own volumes, then a volume of its own for
    every path the image declares that the app does not mount itself.

    Docker would otherwise put an anonymous volume there, one per container: the
    data would be gone with the next container.
    """
    own = tuple(Mount(v) for v in app.volumes)
    targets = {v.target for v in app.volumes}
    made = tuple(
        Mount(Volume(image_volume_name(instance, app, path), path), image_path=path)
        for path in sorted({normalize_path(p, "image", "VOLUME") for p in declared if p[:1] == "/"})
        if path not in targets
    )
    return own + made


def writable(mounts: Iterable[Mount]) -> bool:
    """Whether any mount holds data a second process must not write at the same time."""
    return any(not m.volume.read_only for m in mounts)

"""The CLI's volume spelling, as Miasma's: ``SOURCE:TARGET``, ``SOURCE:TARGET:ro``.

``SOURCE`` is a volume name (``pgdata``) or an absolute host path; removals
may name the target alone. Only the shape is checked here; the server judges
names and paths, so every client gets the same answer and the same field.
"""

from __future__ import annotations

from collections.abc import Iterable

from miasma.v1 import apps_pb2

from miasma_client._errors import InvalidInput

VolumeLike = str | apps_pb2.Volume
_FORMS = "use SOURCE:TARGET or SOURCE:TARGET:ro (e.g. pgdata:/var/lib/postgresql/data)"
_MODES = {"ro": True, "rw": False}


def parse_volume(value: VolumeLike, *, target_only: bool = False) -> apps_pb2.Volume:
    """``"pgdata:/data:ro"`` -> ``Volume(source="pgdata", target="/data", read_only=True)``.

    With ``target_only`` (removals) a bare ``/data`` is accepted too. Raises
    :class:`InvalidInput` (a ``MiasmaError``) naming the accepted forms for any other shape.
    """
    if isinstance(value, apps_pb2.Volume):
        return value
    parts = str(value).strip().split(":")
    read_only = False
    if len(parts) == 3 and parts[2].lower() in _MODES:
        read_only = _MODES[parts.pop().lower()]
    if target_only and len(parts) == 1 and parts[0].startswith("/"):
        return apps_pb2.Volume(target=parts[0])
    if len(parts) != 2 or not all(parts):
        raise InvalidInput(f"{value!r} is not a volume: {_FORMS}")
    return apps_pb2.Volume(source=parts[0], target=parts[1], read_only=read_only)


def parse_volumes(
    values: Iterable[VolumeLike], *, target_only: bool = False
) -> list[apps_pb2.Volume]:
    """Parse each value."""
    return [parse_volume(v, target_only=target_only) for v in values]


def format_volume(volume: apps_pb2.Volume) -> str:
    """``pgdata:/data`` or ``pgdata:/data:ro``: the spelling :func:`parse_volume` reads."""
    return f"{volume.source}:{volume.target}" + (":ro" if volume.read_only else "")

"""An app's output from Docker: the framed stream of ``/containers/{id}/logs`` and
``/services/{id}/logs``.

Docker frames every message with an 8-byte header: the stream (1 stdout, 2 stderr),
three zero bytes, and the size (32-bit big-endian), then the message (Engine API,
"Stream format"). aiodocker's reader drops the stream a frame came from, so frames
are read here. Asked with ``timestamps``, a message starts with Docker's time
(RFC 3339, nine decimals) and a space; with ``details`` (service logs), the
attributes of its task follow ("com.docker.swarm.task.id=…,…") and a space.

Memory is bounded: a message is kept up to :data:`MAX_LINE` bytes, the rest skipped
as it is read; a frame is read only when the caller asks for the next line.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiodocker
import aiohttp

from miasma_grpc.domain.logs import MAX_LINE, LogLine, Stream
from miasma_grpc.runtime.docker import docker_errors

HEADER = struct.Struct(">BxxxL")
STREAMS = {1: Stream.STDOUT, 2: Stream.STDERR}
PREFIX = 512  # room in a frame for the time and the task's attributes before the text
TASK_ID = "com.docker.swarm.task.id="
SKIP_CHUNK = 64 * 1024
NANOS = 1_000_000_000


def parse_time(stamp: str) -> int:
    """Nanoseconds since the epoch of Docker's ``2026-12-01T10:00:00.123456789Z``."""
    head, _, fraction = stamp.removesuffix("Z").partition(".")
    seconds = int(datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp())
    return seconds * NANOS + int((fraction + "000000000")[:9])


def since_param(nanos: int) -> str:
    """Docker's ``since`` for a time in nanoseconds ("seconds.nanoseconds")."""
    return f"{nanos // NANOS}.{nanos % NANOS:09d}"


def parse_message(kind: int, message: bytes, source: str, *, cut: bool, details: bool) -> LogLine:
    """One framed message (asked with ``timestamps``, and ``details`` for a service)."""
    stamp, _, rest = message.partition(b" ")
    if details:
        attributes, _, rest = rest.partition(b" ")
        for attribute in attributes.decode(errors="replace").split(","):
            if attribute.startswith(TASK_ID):
                source = attribute.removeprefix(TASK_ID)
    text = rest.removesuffix(b"\n")
    truncated = cut or len(text) > MAX_LINE
    return LogLine(
        time=parse_time(stamp.decode()),
        stream=STREAMS.get(kind, Stream.STDOUT),
        text=text[:MAX_LINE].decode(errors="replace"),
        source=source[:12],
        truncated=truncated,
    )


async def frames(content: aiohttp.StreamReader) -> AsyncIterator[tuple[int, bytes, bool]]:
    """``(stream, message, cut)`` for each frame, a message kept up to ``MAX_LINE`` (plus
    room for its prefix) bytes, ``cut`` when more was skipped; ends with the stream."""
    while True:
        try:
            header = await content.readexactly(HEADER.size)
            kind, size = HEADER.unpack(header)
            kept = await content.readexactly(min(size, MAX_LINE + PREFIX))
            skip = size - len(kept)
            while skip:
                skip -= len(await content.readexactly(min(skip, SKIP_CHUNK)))
        except (EOFError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            return  # asyncio.IncompleteReadError is an EOFError: the stream ended
        yield kind, kept, size > len(kept)


async def read_logs(
    docker: aiodocker.Docker,
    kind: str,
    ident: str,
    *,
    tail: int,
    since: int | None,
    follow: bool,
) -> AsyncIterator[LogLine]:
    """The lines of container or service ``ident`` (``kind`` "containers" or "services"):
    the last ``tail`` (0: all) written at or after ``since`` (ns), then new ones if
    ``follow``, until Docker ends the stream."""
    details = kind == "services"
    params: dict[str, Any] = {
        "stdout": "1",
        "stderr": "1",
        "timestamps": "1",
        "follow": "1" if follow else "0",
        "tail": str(tail) if tail > 0 else "all",
    }
    if since is not None:
        params["since"] = since_param(since)
    if details:
        params["details"] = "1"
    async with (
        docker_errors(f"read the logs of {kind[:-1]} {ident[:12]}"),
        docker._query(
            f"{kind}/{ident}/logs",
            params=params,
            timeout=docker._resolve_long_running_timeout(None),
        ) as response,
    ):
        async for stream, message, cut in frames(response.content):
            if message.strip():  # Docker sends an empty frame at times (a keep-alive)
                yield parse_message(stream, message, ident, cut=cut, details=details)

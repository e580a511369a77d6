"""Watching port events with automatic resume.

A stream can break (server restart, shutdown, network): the server ends it
with UNAVAILABLE, or the connection fails with UNAVAILABLE. The watchers
here reconnect with ``start_revision`` = the last revision they saw, so the
caller gets every event once, in order, across the break. A stream broken
during its initial snapshot starts over (the snapshot is state, not
history, so seeing it twice is harmless). Any other error is raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING

import grpc
from miasma.v1 import apps_pb2

from miasma_client._errors import MiasmaError, from_rpc_error
from miasma_client._operations import COLLECTION, resource_name

if TYPE_CHECKING:
    from miasma_client._client import AsyncMiasmaClient, MiasmaClient

FIRST_DELAY = 0.1
MAX_DELAY = 2.0


class WatchCursor:
    """Where a watch stands: the request to (re)open it with and the retry delay."""

    def __init__(self, app: str | None, since: int) -> None:
        self.name = COLLECTION + "-" if app is None else resource_name(app)
        self.revision = since
        self.delay = FIRST_DELAY

    def request(self) -> apps_pb2.WatchPortEventsRequest:
        """The request that continues right after what was seen."""
        return apps_pb2.WatchPortEventsRequest(name=self.name, start_revision=self.revision)

    def seen(self, response: apps_pb2.WatchPortEventsResponse) -> None:
        """Advance past ``response`` (snapshot events only count once the marker arrives)."""
        self.delay = FIRST_DELAY
        payload = response.WhichOneof("payload")
        if payload == "event" and response.event.kind != apps_pb2.PORT_EVENT_KIND_SNAPSHOT:
            self.revision = response.event.revision
        elif payload == "snapshot_complete":
            self.revision = response.snapshot_complete.revision
        elif payload == "progress":
            self.revision = max(self.revision, response.progress.revision)

    def backoff(self, error: MiasmaError) -> float:
        """Seconds to wait before reconnecting; re-raises errors that are not transient."""
        if error.code is not grpc.StatusCode.UNAVAILABLE:
            raise error
        delay, self.delay = self.delay, min(self.delay * 2, MAX_DELAY)
        return delay


def watch_blocking(
    client: MiasmaClient, app: str | None, since: int, resume: bool
) -> Generator[apps_pb2.WatchPortEventsResponse]:
    """See :meth:`MiasmaClient.watch_port_events`."""
    cursor = WatchCursor(app, since)
    while True:
        call = client.stub.WatchPortEvents(cursor.request(), metadata=client.settings.metadata())
        try:
            for response in call:
                cursor.seen(response)
                yield response
            error = MiasmaError(grpc.StatusCode.UNAVAILABLE, "the stream ended")
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
        if not resume:
            raise error
        time.sleep(cursor.backoff(error))


async def watch_async(
    client: AsyncMiasmaClient, app: str | None, since: int, resume: bool
) -> AsyncGenerator[apps_pb2.WatchPortEventsResponse]:
    """See :meth:`AsyncMiasmaClient.watch_port_events`."""
    cursor = WatchCursor(app, since)
    while True:
        call = client.stub.WatchPortEvents(cursor.request(), metadata=client.settings.metadata())
        try:
            async for response in call:
                cursor.seen(response)
                yield response
            error = MiasmaError(grpc.StatusCode.UNAVAILABLE, "the stream ended")
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
        finally:
            call.cancel()
        if not resume:
            raise error
        await asyncio.sleep(cursor.backoff(error))

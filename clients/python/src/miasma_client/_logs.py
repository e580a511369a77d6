"""Reading an app's output (``ReadLogs``), a follow resuming by itself.

A follow can break (server restart, network): the stream ends with UNAVAILABLE.
The readers here reopen it from just after the last line they got, so the caller
sees every line once across the break. Any other error is raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Generator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
from google.protobuf import timestamp_pb2
from miasma.v1 import apps_pb2

from miasma_client._errors import MiasmaError, from_rpc_error
from miasma_client._operations import resource_name
from miasma_client._watch import FIRST_DELAY, MAX_DELAY

if TYPE_CHECKING:
    from miasma_client._client import AsyncMiasmaClient, MiasmaClient

Since = datetime | timedelta | None  # a time, or that long ago


class LogCursor:
    """Where a read stands: the request to (re)open it with and the retry delay."""

    def __init__(self, app: str, tail: int, since: Since, follow: bool) -> None:
        self.request = apps_pb2.ReadLogsRequest(
            name=resource_name(app), tail_lines=tail, follow=follow
        )
        if since is not None:
            when = datetime.now(UTC) - since if isinstance(since, timedelta) else since
            self.request.since_time.FromDatetime(when.astimezone(UTC))
        self.delay = FIRST_DELAY

    def seen(self, response: apps_pb2.ReadLogsResponse) -> None:
        """Go on after ``response``: a reopened follow starts just after its line."""
        self.delay = FIRST_DELAY
        if response.HasField("line"):
            after = response.line.time.ToNanoseconds() + 1
            self.request.since_time.CopyFrom(timestamp_pb2.Timestamp())
            self.request.since_time.FromNanoseconds(after)
            self.request.tail_lines = 0

    def backoff(self, error: MiasmaError) -> float:
        """Seconds to wait before reopening; re-raises what a retry cannot help."""
        if not self.request.follow or error.code is not grpc.StatusCode.UNAVAILABLE:
            raise error
        delay, self.delay = self.delay, min(self.delay * 2, MAX_DELAY)
        return delay


def logs_blocking(
    client: MiasmaClient, app: str, tail: int, since: Since, follow: bool
) -> Generator[apps_pb2.ReadLogsResponse]:
    """See :meth:`MiasmaClient.read_logs`."""
    cursor = LogCursor(app, tail, since, follow)
    while True:
        call = client.stub.ReadLogs(cursor.request, metadata=client.settings.metadata())
        try:
            for response in call:
                cursor.seen(response)
                yield response
            return
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
        time.sleep(cursor.backoff(error))


async def logs_async(
    client: AsyncMiasmaClient, app: str, tail: int, since: Since, follow: bool
) -> AsyncGenerator[apps_pb2.ReadLogsResponse]:
    """See :meth:`AsyncMiasmaClient.read_logs`."""
    cursor = LogCursor(app, tail, since, follow)
    while True:
        call = client.stub.ReadLogs(cursor.request, metadata=client.settings.metadata())
        try:
            async for response in call:
                cursor.seen(response)
                yield response
            return
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
        finally:
            call.cancel()
        await asyncio.sleep(cursor.backoff(error))

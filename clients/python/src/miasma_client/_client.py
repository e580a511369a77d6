"""Typed clients: :class:`MiasmaClient` (blocking) and :class:`AsyncMiasmaClient`.

Both are assembled from the functions in ``_operations`` (one per RPC), so
they take the same arguments and return the same generated messages
(``apps_pb2.App`` …); every failed call raises
:class:`~miasma_client.MiasmaError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Generator, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeAlias, TypeVar

import grpc
from miasma.v1 import apps_pb2, apps_pb2_grpc

from miasma_client import _operations as ops
from miasma_client._errors import MiasmaError, from_rpc_error
from miasma_client._logs import Since, logs_async, logs_blocking
from miasma_client._settings import Settings, resolve
from miasma_client._status import app_status
from miasma_client._watch import watch_async, watch_blocking

DEFAULT_TIMEOUT = 120.0  # seconds per call: a rollout may have to pull an image
POLL_INTERVAL = 0.25
# Keepalive pings on idle connections keep watch streams open through proxies and
# notice a dead server; the server accepts pings down to every 10 s.
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # A channel of its own: a new client must not inherit a connection to a dead
    # server that another client's channel is still backing off from.
    ("grpc.use_local_subchannel_pool", 1),
)

RETRIES = 1  # a change with a request ID is sent once more when the connection failed
RETRY_DELAY = 0.5  # seconds

P = ParamSpec("P")
R = TypeVar("R")

DesiredState: TypeAlias = apps_pb2.DesiredState.ValueType
RolloutState: TypeAlias = apps_pb2.RolloutState.ValueType


def _retry_safely(operation: ops.Operation[Any], error: MiasmaError) -> bool:
    """Whether ``operation`` may be sent again after ``error``: the connection failed (no
    answer from Miasma itself) and the server will not apply a change twice."""
    transport = error.code == grpc.StatusCode.UNAVAILABLE and not error.reason
    return transport and bool(getattr(operation.request, "request_id", ""))


def _describe(call: Callable[..., Any], build: Callable[..., Any]) -> None:
    """Give ``call`` the name, docs and parameters of the operation it runs."""
    call.__name__ = call.__qualname__ = build.__name__
    call.__doc__ = build.__doc__
    signature = inspect.signature(build)
    self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self, *signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )


def _blocking(build: Callable[P, ops.Operation[R]]) -> Callable[Concatenate[MiasmaClient, P], R]:
    def call(self: MiasmaClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.run(build(*args, **kwargs))

    _describe(call, build)
    return call


def _awaitable(
    build: Callable[P, ops.Operation[R]],
) -> Callable[Concatenate[AsyncMiasmaClient, P], Coroutine[Any, Any, R]]:
    async def call(self: AsyncMiasmaClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.run(build(*args, **kwargs))

    _describe(call, build)
    return call


class _Connection:
    """Settings resolution and per-call options shared by both clients."""

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        settings: Settings | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if settings is None:
            settings = resolve(server=server, token=token)
        else:
            settings = dataclasses.replace(
                settings,
                server=settings.server if server is None else server,
                token=settings.token if token is None else token,
            )
        self.settings = settings
        self.timeout = timeout
        self._credentials = settings.credentials()
        self._call_options: dict[str, Any] = {"metadata": settings.metadata(), "timeout": timeout}

    @property
    def server(self) -> str:
        """The ``HOST:PORT`` this client talks to."""
        return self.settings.server

    def _options(self, operation: ops.Operation[Any]) -> dict[str, Any]:
        """The call options of ``operation`` (its own minimum time, if longer)."""
        if self.timeout is None or operation.min_timeout <= self.timeout:
            return self._call_options
        return self._call_options | {"timeout": operation.min_timeout}


class MiasmaClient(_Connection):
    """Blocking client; use it as a context manager or call :meth:`close`.

    ``server`` and ``token`` default to ``MIASMA_SERVER`` and
    ``MIASMA_TOKEN``, then to what ``miasma connect`` saved, then to
    ``127.0.0.1:50051``. Pass ``settings`` for TLS.
    """

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        settings: Settings | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(server, token=token, settings=settings, timeout=timeout)
        self._channel = (
            grpc.secure_channel(self.server, self._credentials, CHANNEL_OPTIONS)
            if self._credentials
            else grpc.insecure_channel(self.server, CHANNEL_OPTIONS)
        )
        self.stub = apps_pb2_grpc.AppServiceStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def run(self, operation: ops.Operation[R]) -> R:
        """Make one call; failures become :class:`MiasmaError`.

        A change that carries a request ID is sent once more if the connection failed
        under it: the server applies it at most once.
        """
        method = getattr(self.stub, operation.rpc)
        for attempt in range(RETRIES + 1):
            try:
                return operation.result(method(operation.request, **self._options(operation)))
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if attempt == RETRIES or not _retry_safely(operation, error):
                    raise error from None
            time.sleep(RETRY_DELAY)
        raise AssertionError("unreachable")  # pragma: no cover

    create_app = _blocking(ops.create_app)
    get_app = _blocking(ops.get_app)
    update_app = _blocking(ops.update_app)
    delete_app = _blocking(ops.delete_app)
    start_app = _blocking(ops.start_app)
    stop_app = _blocking(ops.stop_app)
    restart_app = _blocking(ops.restart_app)
    upgrade_app = _blocking(ops.upgrade_app)
    rename_app = _blocking(ops.rename_app)
    edit_ports = _blocking(ops.edit_ports)
    edit_app = _blocking(ops.edit_app)
    list_volumes = _blocking(ops.list_volumes)
    delete_volume = _blocking(ops.delete_volume)
    server_info = _blocking(ops.server_info)
    whoami = _blocking(ops.whoami)
    list_audit_records = _blocking(ops.list_audit_records)

    def iter_apps(
        self,
        page_size: int = 0,
        *,
        group: str = "",
        desired_state: DesiredState = apps_pb2.DESIRED_STATE_UNSPECIFIED,
        rollout: RolloutState = apps_pb2.ROLLOUT_STATE_UNSPECIFIED,
        show_hidden: bool = False,
    ) -> Iterator[apps_pb2.App]:
        """Every app in name order (only those of ``group``, with ``desired_state``, whose
        latest change stands at ``rollout``, where given), fetched a page at a time."""
        token = ""
        while True:
            page = self.run(
                ops.list_apps_page(
                    page_size,
                    token,
                    group=group,
                    desired_state=desired_state,
                    rollout=rollout,
                    show_hidden=show_hidden,
                )
            )
            yield from page.apps
            if not (token := page.next_page_token):
                return

    def list_apps(
        self,
        *,
        group: str = "",
        desired_state: DesiredState = apps_pb2.DESIRED_STATE_UNSPECIFIED,
        rollout: RolloutState = apps_pb2.ROLLOUT_STATE_UNSPECIFIED,
        show_hidden: bool = False,
    ) -> list[apps_pb2.App]:
        """Every app in name order (or those the filters keep, as :meth:`iter_apps`)."""
        return list(
            self.iter_apps(
                group=group, desired_state=desired_state, rollout=rollout, show_hidden=show_hidden
            )
        )

    def watch_port_events(
        self, app: str | None = None, *, since: int = 0, resume: bool = True
    ) -> Generator[apps_pb2.WatchPortEventsResponse]:
        """Stream port events of ``app`` (or every app) after revision ``since``.

        ``since=0`` starts with the current bindings (SNAPSHOT events and a
        ``snapshot_complete`` marker). With ``resume`` the stream reconnects
        by itself after UNAVAILABLE, from the last revision seen: no gap, no
        duplicate. Other errors (OUT_OF_RANGE for a compacted revision, …)
        raise :class:`MiasmaError`. Close the generator to stop watching.
        """
        return watch_blocking(self, app, since, resume)

    def read_logs(
        self, app: str, *, tail: int = 0, since: Since = None, follow: bool = False
    ) -> Generator[apps_pb2.ReadLogsResponse]:
        """The app's output: its last ``tail`` lines (0: all) written since ``since`` (a
        time, or a ``timedelta`` ago), then, with ``follow``, new lines as they come and
        notices (``response.notice``) when it moves to a new container. A follow reopens
        by itself after UNAVAILABLE, from just after the last line; close the generator
        to stop."""
        return logs_blocking(self, app, tail, since, follow)

    def wait_settled(self, name: str, timeout: float = 60.0) -> apps_pb2.App:
        """Poll until the app runs, has stopped or has failed (or ``timeout`` passes)."""
        deadline = time.monotonic() + timeout
        while not app_status(app := self.get_app(name)).settled and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
        return app


class AsyncMiasmaClient(_Connection):
    """The asyncio twin of :class:`MiasmaClient`: same arguments, awaitable methods.

    Use it as an async context manager or ``await close()``.
    """

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        settings: Settings | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(server, token=token, settings=settings, timeout=timeout)
        self._channel = (
            grpc.aio.secure_channel(self.server, self._credentials, CHANNEL_OPTIONS)
            if self._credentials
            else grpc.aio.insecure_channel(self.server, CHANNEL_OPTIONS)
        )
        self.stub = apps_pb2_grpc.AppServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(None)

    async def run(self, operation: ops.Operation[R]) -> R:
        """Make one call; failures become :class:`MiasmaError` (retried as
        :meth:`MiasmaClient.run` retries)."""
        method = getattr(self.stub, operation.rpc)
        for attempt in range(RETRIES + 1):
            try:
                options = self._options(operation)
                return operation.result(await method(operation.request, **options))
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if attempt == RETRIES or not _retry_safely(operation, error):
                    raise error from None
            await asyncio.sleep(RETRY_DELAY)
        raise AssertionError("unreachable")  # pragma: no cover

    create_app = _awaitable(ops.create_app)
    get_app = _awaitable(ops.get_app)
    update_app = _awaitable(ops.update_app)
    delete_app = _awaitable(ops.delete_app)
    start_app = _awaitable(ops.start_app)
    stop_app = _awaitable(ops.stop_app)
    restart_app = _awaitable(ops.restart_app)
    upgrade_app = _awaitable(ops.upgrade_app)
    rename_app = _awaitable(ops.rename_app)
    edit_ports = _awaitable(ops.edit_ports)
    edit_app = _awaitable(ops.edit_app)
    list_volumes = _awaitable(ops.list_volumes)
    delete_volume = _awaitable(ops.delete_volume)
    server_info = _awaitable(ops.server_info)
    whoami = _awaitable(ops.whoami)
    list_audit_records = _awaitable(ops.list_audit_records)

    async def iter_apps(
        self,
        page_size: int = 0,
        *,
        group: str = "",
        desired_state: DesiredState = apps_pb2.DESIRED_STATE_UNSPECIFIED,
        rollout: RolloutState = apps_pb2.ROLLOUT_STATE_UNSPECIFIED,
        show_hidden: bool = False,
    ) -> AsyncIterator[apps_pb2.App]:
        """Every app in name order (only those of ``group``, with ``desired_state``, whose
        latest change stands at ``rollout``, where given), fetched a page at a time."""
        token = ""
        while True:
            page = await self.run(
                ops.list_apps_page(
                    page_size,
                    token,
                    group=group,
                    desired_state=desired_state,
                    rollout=rollout,
                    show_hidden=show_hidden,
                )
            )
            for app in page.apps:
                yield app
            if not (token := page.next_page_token):
                return

    async def list_apps(
        self,
        *,
        group: str = "",
        desired_state: DesiredState = apps_pb2.DESIRED_STATE_UNSPECIFIED,
        rollout: RolloutState = apps_pb2.ROLLOUT_STATE_UNSPECIFIED,
        show_hidden: bool = False,
    ) -> list[apps_pb2.App]:
        """Every app in name order (or those the filters keep, as :meth:`iter_apps`)."""
        filtered = self.iter_apps(
            group=group, desired_state=desired_state, rollout=rollout, show_hidden=show_hidden
        )
        return [app async for app in filtered]

    def watch_port_events(
        self, app: str | None = None, *, since: int = 0, resume: bool = True
    ) -> AsyncGenerator[apps_pb2.WatchPortEventsResponse]:
        """Async twin of :meth:`MiasmaClient.watch_port_events` (``async for``)."""
        return watch_async(self, app, since, resume)

    def read_logs(
        self, app: str, *, tail: int = 0, since: Since = None, follow: bool = False
    ) -> AsyncGenerator[apps_pb2.ReadLogsResponse]:
        """Async twin of :meth:`MiasmaClient.read_logs` (``async for``)."""
        return logs_async(self, app, tail, since, follow)

    async def wait_settled(self, name: str) -> apps_pb2.App:
        """Poll until the app runs, has stopped or has failed; bound it with ``asyncio.timeout``."""
        # ASYNC110 wants an Event, but the state lives on a remote server: polling it is the way.
        while not app_status(app := await self.get_app(name)).settled:  # noqa: ASYNC110
            await asyncio.sleep(POLL_INTERVAL)
        return app

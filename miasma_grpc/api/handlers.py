"""What the interceptors and the servicer share about grpc's handlers: their types
(generic only in grpc's stubs, not at run time), the service's method prefix, and
ending a call with one of Miasma's errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from miasma_grpc.api.errors import to_status
from miasma_grpc.domain.errors import MiasmaError

SERVICE_PREFIX = "/miasma.v1.AppService/"

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = grpc.aio.ServerInterceptor
    Context = grpc.aio.ServicerContext
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


async def abort(context: Context, error: MiasmaError) -> NoReturn:
    """End the call with ``error`` as a rich status."""
    status = to_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort() always raises") from error  # pragma: no cover

"""Access-token authentication: ``authorization: Bearer <token>`` on every call but health.

An interceptor, so no servicer can forget it. Tokens are compared in
constant time. A refused call never reaches a handler, so it changes nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from miasma_grpc.api.errors import to_status
from miasma_grpc.domain.errors import Unauthenticated

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)  # load balancers probe without credentials

# grpc's classes are generic only in their type stubs, not at run time.
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = grpc.aio.ServerInterceptor
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


class TokenAuth(Interceptor):
    """Lets a call through only with the right bearer token."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler:
        """Pass the call on, or answer it with UNAUTHENTICATED."""
        handler = await continuation(details)
        # No handler (an unknown method) stays UNIMPLEMENTED; health stays open.
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        error = self._check(dict(details.invocation_metadata or ()))
        return handler if error is None else _refusal(handler, error)

    def _check(self, metadata: dict[str, Any]) -> Unauthenticated | None:
        header = metadata.get("authorization")
        if not header:
            return Unauthenticated(
                "this server requires an access token: send 'authorization: Bearer <token>'",
                reason="TOKEN_MISSING",
            )
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self._expected):
            return Unauthenticated("the access token is not valid", reason="TOKEN_INVALID")
        return None


def _refusal(handler: Handler, error: Unauthenticated) -> Handler:
    """A handler of the same kind as ``handler`` that only aborts with ``error``."""
    status = to_status(error)

    async def abort(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(status.code, status.details, status.trailing_metadata)

    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(abort, **options)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(abort, **options)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(abort, **options)
    return grpc.unary_unary_rpc_method_handler(abort, **options)

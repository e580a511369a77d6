"""Access-token authentication: ``authorization: Bearer <token>`` on every call but health.

An interceptor, so no servicer can forget it. Tokens are compared in
constant time. A refused call never reaches a handler, so it changes nothing.
Nothing is answered before authentication but health: a method that does not
exist is UNAUTHENTICATED too for a caller without the token (UNIMPLEMENTED would
tell an anonymous caller what exists), and so is server reflection.
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
        if details.method.startswith(OPEN_PREFIXES):  # health stays open
            return handler
        error = self._check(dict(details.invocation_metadata or ()))
        if error is None:
            return handler  # an unknown method (None) is UNIMPLEMENTED for the token holder
        return _refusal(handler, error)

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


def _refusal(handler: Handler | None, error: Unauthenticated) -> Handler:
    """A handler of the same kind as ``handler`` (unary for an unknown method: the call
    is refused at its first message) that only aborts with ``error``."""
    status = to_status(error)

    async def abort(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(status.code, status.details, status.trailing_metadata)

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(abort)
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

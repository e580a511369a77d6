"""Requests that cannot be parsed: ``INVALID_ARGUMENT``, naming the message expected.

grpc parses a request before any handler runs, and answers a parse failure with
``UNKNOWN`` and Python's ``DecodeError`` text. This interceptor has each AppService
handler take the request's bytes and parse them itself, so the caller learns that
its bytes are no ``miasma.v1.EditAppRequest`` (say), and nothing of the server's
insides. A request the access check (api/auth.py, outermost) has parsed already
comes as a message and is taken as it is: each request is parsed once.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError, Message

from miasma_grpc.api.handlers import SERVICE_PREFIX, Context, Handler, Interceptor, abort
from miasma_grpc.domain.errors import InvalidArgument


class ParseRequests(Interceptor):
    """Parses AppService requests in the handler, refusing bad bytes as INVALID_ARGUMENT."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        """The handler of ``details.method``, taking bytes (AppService methods only)."""
        handler: Handler | None = await continuation(details)
        if handler is None or not details.method.startswith(SERVICE_PREFIX):
            return handler  # type: ignore[return-value]
        if handler.request_deserializer is None:
            return handler
        expected = details.method.removeprefix(SERVICE_PREFIX) + "Request"
        return _parsing(handler, handler.request_deserializer, f"miasma.v1.{expected}")


def _parsing(handler: Handler, parse: Callable[[bytes], Any], expected: str) -> Handler:
    async def parsed(raw: bytes | Message, context: Context) -> Any:
        if isinstance(raw, Message):
            return raw
        try:
            return parse(raw)
        except DecodeError:
            malformed = f"the request is not a valid {expected} message"
            await abort(context, InvalidArgument(malformed, reason="MALFORMED_REQUEST"))

    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        # An aio server's behaviours take an aio context (grpc's stubs type the sync one).
        unary = cast(Callable[[Any, Context], Awaitable[Any]], handler.unary_unary)

        async def unary_call(raw: bytes, context: Context) -> Any:
            return await unary(await parsed(raw, context), context)

        return grpc.unary_unary_rpc_method_handler(unary_call, response_serializer=serializer)
    stream = cast(Callable[[Any, Context], AsyncIterator[Any]] | None, handler.unary_stream)
    if stream is not None and inspect.isasyncgenfunction(stream):

        async def stream_call(raw: bytes, context: Context) -> AsyncIterator[Any]:
            async for item in stream(await parsed(raw, context), context):
                yield item

        return grpc.unary_stream_rpc_method_handler(stream_call, response_serializer=serializer)
    return handler

"""Puts a servicer on a server, as the generated ``add_*Servicer_to_server`` does, with one
difference: a method may return its reply already encoded (``bytes``), as the reads do
(:mod:`miasma_grpc.api.replies`), and it is sent as it is."""

from __future__ import annotations

from typing import Any, cast

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from miasma.v1 import apps_pb2

APP_SERVICE = apps_pb2.DESCRIPTOR.services_by_name["AppService"]


def encode(reply: Message | bytes) -> bytes:
    """A reply on the wire: encoded bytes as they are, a message serialized."""
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


def add_servicer(service: ServiceDescriptor, servicer: object, server: grpc.aio.Server) -> None:
    """Serve every method of ``service`` with the same-named method of ``servicer``."""
    handlers: dict[str, Any] = {}
    for method in service.methods:
        if method.client_streaming:  # none in the contract; add the kinds when one comes
            raise NotImplementedError(f"{method.full_name}: client streaming")
        kind = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = kind(
            getattr(servicer, method.name),
            request_deserializer=message_factory.GetMessageClass(method.input_type).FromString,
            response_serializer=encode,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    # As the generated code does: found by method path before the generic handlers are
    # asked (the method is missing from grpc's type stubs).
    cast(Any, server).add_registered_method_handlers(service.full_name, handlers)


def add_app_service(servicer: object, server: grpc.aio.Server) -> None:
    """Serve ``miasma.v1.AppService`` with ``servicer`` (an :class:`AppServicer`); use this,
    not the generated ``add_AppServiceServicer_to_server``, which cannot send encoded
    replies."""
    add_servicer(APP_SERVICE, servicer, server)

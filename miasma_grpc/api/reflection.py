"""Server reflection under both its names: ``grpc.reflection.v1`` (what grpcurl, grpcui and
Postman ask first) and ``grpc.reflection.v1alpha``.

grpcio-reflection serves only v1alpha. The two protocols have the same messages, field
for field, under another package name, so one servicer answers both: a v1 request is
read as the v1alpha message it is on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer  # what reflection.aio names

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = reflection.SERVICE_NAME


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Answer reflection on ``server`` (v1 and v1alpha) for ``service_names``."""
    servicer = ReflectionServicer((*service_names, V1ALPHA))
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
            for name in (V1, V1ALPHA)
        )
    )

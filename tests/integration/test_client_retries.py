"""The Python client's retry of a change whose connection failed: once, with the same
request ID, so the server applies it at most once; never for Miasma's own refusals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from miasma.v1 import apps_pb2
from miasma_client import MiasmaClient, MiasmaError


class Flaky:
    """An EditPorts that fails its first call as a dropped connection would, or as Miasma
    answers."""

    def __init__(self, first: grpc.StatusCode) -> None:
        self.first = first
        self.request_ids: list[str] = []

    def edit_ports(
        self, request: apps_pb2.EditPortsRequest, context: grpc.ServicerContext
    ) -> apps_pb2.EditPortsResponse:
        self.request_ids.append(request.request_id)
        if len(self.request_ids) == 1:
            context.abort(self.first, "connection reset")
        return apps_pb2.EditPortsResponse(app=apps_pb2.App(name=request.name))


Serve = Callable[[Flaky], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a stand-in AppService with ``Flaky``'s EditPorts; its address."""
    servers: list[grpc.Server] = []

    def start(flaky: Flaky) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(2))
        handler = grpc.unary_unary_rpc_method_handler(
            flaky.edit_ports,
            request_deserializer=apps_pb2.EditPortsRequest.FromString,
            response_serializer=apps_pb2.EditPortsResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("miasma.v1.AppService", {"EditPorts": handler})]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


def test_a_change_is_sent_again_with_the_same_request_id(serve: Serve) -> None:
    """UNAVAILABLE with no word from Miasma: sent once more, carrying the same ID."""
    flaky = Flaky(grpc.StatusCode.UNAVAILABLE)
    with MiasmaClient(serve(flaky), timeout=10) as client:
        reply = client.edit_ports("web", add_published=[8080])
    assert reply.app.name == "apps/web"
    assert len(flaky.request_ids) == 2
    assert flaky.request_ids[0] == flaky.request_ids[1] != ""


def test_a_refusal_is_not_retried(serve: Serve) -> None:
    """An answer from Miasma (here a deadline) is the outcome: raised, not retried."""
    flaky = Flaky(grpc.StatusCode.DEADLINE_EXCEEDED)
    with MiasmaClient(serve(flaky), timeout=10) as client, pytest.raises(MiasmaError) as error:
        client.edit_ports("web", add_published=[8080])
    assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(flaky.request_ids) == 1

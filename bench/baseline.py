"""A bare ``grpc.aio`` server: the baseline Miasma's figures are compared with.

``Fanout/Watch`` streams every payload given to ``Fanout/Publish`` to every
open stream (what a minimal watch fan-out costs); ``Echo/Call`` returns its
request; ``Reply/Get`` returns the bytes last given to ``Reply/Set`` (a read
answered from memory: the same reply bytes as Miasma's, so the same size).
Raw bytes, no protobuf work: the floor of the stack.

    python -m bench.baseline --listen 127.0.0.1:50099
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc

WATCH = "/bench.Fanout/Watch"
PUBLISH = "/bench.Fanout/Publish"
ECHO = "/bench.Echo/Call"
REPLY_SET = "/bench.Reply/Set"
REPLY_GET = "/bench.Reply/Get"


class Fanout:
    """One asyncio queue per open stream; publish puts the payload in each."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[bytes]] = set()

    async def watch(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.queues.add(queue)
        try:
            yield b"ready"
            while True:
                yield await queue.get()
        finally:
            self.queues.discard(queue)

    async def publish(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        for queue in self.queues:
            queue.put_nowait(request)
        return b""


async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    """Return the request unchanged."""
    return request


class Reply:
    """One canned reply."""

    def __init__(self) -> None:
        self.payload = b""

    async def set(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self.payload = request
        return b""

    async def get(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return self.payload


async def serve(listen: str) -> None:
    """Serve until cancelled."""
    fanout = Fanout()
    reply = Reply()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Fanout",
                {
                    "Watch": grpc.unary_stream_rpc_method_handler(fanout.watch),
                    "Publish": grpc.unary_unary_rpc_method_handler(fanout.publish),
                },
            ),
            grpc.method_handlers_generic_handler(
                "bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)}
            ),
            grpc.method_handlers_generic_handler(
                "bench.Reply",
                {
                    "Set": grpc.unary_unary_rpc_method_handler(reply.set),
                    "Get": grpc.unary_unary_rpc_method_handler(reply.get),
                },
            ),
        )
    )
    server.add_insecure_port(listen)
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:50099")
    asyncio.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()

"""Closed-loop load generator: N concurrent clients, each waiting for its reply.

Runs in its own process, so the figures of the server under test are not
mixed with the benchmark's own bookkeeping. Two kinds of load, driven by
the same loop so that they cost the generator the same:

* ``edit``: client *i* moves app ``apps/load-<i>`` (stopped, created
  beforehand) between an explicit published port and an automatic one,
  alternately: every call allocates, commits to SQLite and logs an event;
* ``echo``: client *i* sends the baseline's ``Echo/Call`` a payload of
  ``--payload-bytes`` and gets it back.

Prints one JSON object: calls, errors, seconds, calls/s and latency
percentiles (ms) over the measured window (after ``--warmup`` seconds).

    python -m bench.loadgen --address 127.0.0.1:50051 --kind edit --clients 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from miasma.v1 import apps_pb2, apps_pb2_grpc

from bench.baseline import ECHO
from bench.harness import percentile

CLIENTS_PER_CHANNEL = 32
FIRST_PORT = 20000  # below the ephemeral range, where outgoing connections take ports


def app_name(index: int) -> str:
    """The app client ``index`` edits."""
    return f"load-{index}"


def edit_requests(index: int) -> tuple[apps_pb2.EditPortsRequest, apps_pb2.EditPortsRequest]:
    """Pin app ``index`` to an explicit published port; give it back an automatic one."""
    name, port = f"apps/{app_name(index)}", apps_pb2.Port(number=FIRST_PORT + index)
    return (
        apps_pb2.EditPortsRequest(name=name, add_published_ports=[port]),
        apps_pb2.EditPortsRequest(name=name, remove_published_ports=[port]),
    )


Call = Callable[[int], Awaitable[object]]


def callers(kind: str, channel: grpc.aio.Channel, index: int, payload: bytes) -> Call:
    """The call client ``index`` makes, as a function of its call count."""
    if kind == "echo":
        echo = channel.unary_unary(ECHO, None, None)
        return lambda _n: echo(payload)
    stub = apps_pb2_grpc.AppServiceStub(channel)
    requests = edit_requests(index)
    return lambda n: stub.EditPorts(requests[n % 2])


async def run(
    address: str, kind: str, clients: int, seconds: float, warmup: float, payload: bytes
) -> dict[str, Any]:
    """Run the load; the figures of the measured window."""
    channels = [
        grpc.aio.insecure_channel(address)
        for _ in range(max(1, -(-clients // CLIENTS_PER_CHANNEL)))
    ]
    latencies: list[float] = []
    errors = 0
    failures: dict[str, None] = {}  # distinct errors, in the order seen
    start = time.perf_counter() + warmup
    stop = start + seconds

    async def client(index: int) -> None:
        nonlocal errors
        call = callers(kind, channels[index % len(channels)], index, payload)
        n = 0
        while (sent := time.perf_counter()) < stop:
            try:
                await call(n)
            except grpc.aio.AioRpcError as exc:
                errors += 1
                failures.setdefault(f"{exc.code().name}: {exc.details()}"[:200])
            done = time.perf_counter()
            if sent >= start:
                latencies.append(done - sent)
            n += 1

    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        for channel in channels:
            await channel.close(None)
    return {
        "calls": len(latencies),
        "errors": errors,
        "seconds": seconds,
        "calls_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(1000 * percentile(latencies, 0.50), 3),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 3),
        "failures": list(failures)[:5],
    }


def main() -> None:
    """Entry point: print the figures as JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", required=True)
    parser.add_argument("--kind", choices=("edit", "echo"), required=True)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--payload-bytes", type=int, default=64)
    ns = parser.parse_args()
    payload = b"x" * ns.payload_bytes
    figures = asyncio.run(run(ns.address, ns.kind, ns.clients, ns.seconds, ns.warmup, payload))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

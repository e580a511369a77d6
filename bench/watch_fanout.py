"""Watch fan-out: N concurrent WatchPortEvents streams receive each port edit.

Measures, for every edit, the delay from sending ``EditPorts`` to each
stream receiving the CHANGED event (p50/p99 over all streams and rounds),
and the server's memory per open stream. The same is measured, in the
same run and alternating round by round, against a bare ``grpc.aio``
fan-out server (``bench.baseline``) pushing a payload of the same size, so
the ratio holds on a noisy machine. Client and servers share the machine.

    python -m bench.watch_fanout [--watchers 1000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from miasma.v1 import apps_pb2, apps_pb2_grpc

from bench.baseline import PUBLISH, WATCH
from scripts import engine

RESULTS = Path(__file__).resolve().parent / "results"
STREAMS_PER_CHANNEL = 100
APP = "apps/fanout"
CHANGED = apps_pb2.PORT_EVENT_KIND_CHANGED


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Side:
    """One server under test, its open streams and the delays they saw."""

    name: str
    address: str
    process: subprocess.Popen[bytes]
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    arrivals: list[asyncio.Queue[float]] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    kib_per_stream: float = 0.0

    def channel(self) -> grpc.aio.Channel:
        """A channel with room for another stream (100 streams per connection)."""
        if len(self.arrivals) % STREAMS_PER_CHANNEL == 0:
            self.channels.append(grpc.aio.insecure_channel(self.address))
        return self.channels[-1]

    async def round(self, trigger: Callable[[], Awaitable[object]]) -> None:
        """Fire one change and wait until every stream has it; record the delays."""
        start = time.perf_counter()
        await trigger()
        async with asyncio.timeout(60):
            for queue in self.arrivals:
                self.delays.append(await queue.get() - start)

    def summary(self) -> dict[str, float]:
        """p50/p99/mean delivery delay (ms) and memory per stream (KiB)."""
        ordered = sorted(self.delays)

        def pick(q: float) -> float:
            return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

        return {
            "p50_ms": pick(0.50),
            "p99_ms": pick(0.99),
            "mean_ms": round(1000 * statistics.fmean(ordered), 2),
            "kib_per_watcher": round(self.kib_per_stream, 1),
        }


async def follow(
    side: Side,
    stream: AsyncIterable[Any],
    live: Callable[[Any], bool],
    change: Callable[[Any], bool],
) -> asyncio.Task[None]:
    """Wait until ``stream`` is live, then time every change it delivers."""
    messages = aiter(stream)  # one iterator for both loops: gRPC calls iterate once
    async for message in messages:
        if live(message):
            break
    queue: asyncio.Queue[float] = asyncio.Queue()
    side.arrivals.append(queue)

    async def read() -> None:
        async for message in messages:
            if change(message):
                queue.put_nowait(time.perf_counter())

    return asyncio.create_task(read())


async def open_streams(miasma: Side, baseline: Side, count: int) -> list[asyncio.Task[None]]:
    """``count`` streams on each side; reports the servers' memory per stream."""
    idle = {side.name: rss_kib(side.process.pid) for side in (miasma, baseline)}
    request = apps_pb2.WatchPortEventsRequest(name=APP)
    tasks = []
    for _ in range(count):
        stub = apps_pb2_grpc.AppServiceStub(miasma.channel())
        tasks.append(
            await follow(
                miasma,
                stub.WatchPortEvents(request),
                lambda m: m.HasField("snapshot_complete"),
                lambda m: m.HasField("event") and m.event.kind == CHANGED,
            )
        )
        watch = baseline.channel().unary_stream(WATCH, None, None)
        tasks.append(await follow(baseline, watch(b""), lambda m: m == b"ready", bool))
    await asyncio.sleep(0.5)
    for side in (miasma, baseline):
        side.kib_per_stream = (rss_kib(side.process.pid) - idle[side.name]) / count
    return tasks


async def wait_ready(call: Callable[[], Awaitable[object]]) -> None:
    """Retry ``call`` until the server answers."""
    async with asyncio.timeout(30):
        while True:
            try:
                await call()
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)


async def measure(miasma: Side, baseline: Side, watchers: int, rounds: int) -> int:
    """Open the streams, then alternate edits and baseline publishes; the payload size."""
    control = grpc.aio.insecure_channel(miasma.address)
    publisher = grpc.aio.insecure_channel(baseline.address)
    stub = apps_pb2_grpc.AppServiceStub(control)
    publish = publisher.unary_unary(PUBLISH, None, None)
    tasks: list[asyncio.Task[None]] = []
    try:
        await wait_ready(lambda: stub.GetServerInfo(apps_pb2.GetServerInfoRequest()))
        await wait_ready(lambda: publish(b""))
        stopped = apps_pb2.App(image="bench", desired_state=apps_pb2.DESIRED_STATE_STOPPED)
        await stub.CreateApp(apps_pb2.CreateAppRequest(app_id="fanout", app=stopped))
        port = 20000
        sample = await stub.EditPorts(
            apps_pb2.EditPortsRequest(name=APP, add_published_ports=[apps_pb2.Port(number=port)])
        )
        change = sample.changes[0]
        event = apps_pb2.PortEvent(
            revision=sample.app.revision, app=APP, kind=CHANGED,
            old_bindings=[change.old_binding], new_bindings=[change.new_binding],
        )  # fmt: skip
        payload = apps_pb2.WatchPortEventsResponse(event=event).SerializeToString()
        await asyncio.sleep(0.5)  # let the servers settle before reading their memory
        tasks = await open_streams(miasma, baseline, watchers)
        for _ in range(rounds):
            move = apps_pb2.EditPortsRequest(
                name=APP,
                add_published_ports=[apps_pb2.Port(number=port + 1)],
                remove_published_ports=[apps_pb2.Port(number=port)],
            )
            await miasma.round(lambda request=move: stub.EditPorts(request))  # type: ignore[misc]
            await baseline.round(lambda: publish(payload))
            port += 1
        return len(payload)
    finally:
        for task in tasks:
            task.cancel()
        for channel in [control, publisher, *miasma.channels, *baseline.channels]:
            await channel.close(None)


def table(figures: dict[str, Any]) -> str:
    """A text table of Miasma against the baseline, with ratios."""
    ours, base = figures["miasma"], figures["baseline"]
    lines = [
        f"watch fan-out: {figures['watchers']} streams, {figures['rounds']} edits, "
        f"{figures['payload_bytes']}-byte event",
        f"{'':22}{'miasma':>10}{'baseline':>10}{'ratio':>8}",
    ]
    labels = {
        "p50_ms": "delivery p50 (ms)",
        "p99_ms": "delivery p99 (ms)",
        "mean_ms": "delivery mean (ms)",
        "kib_per_watcher": "memory/watcher (KiB)",
    }
    for key, label in labels.items():
        ratio = ours[key] / base[key] if base[key] else float("nan")
        lines.append(f"{label:22}{ours[key]:>10}{base[key]:>10}{ratio:>8.2f}")
    return "\n".join(lines)


def main() -> None:
    """Set up Docker as `make run` does, start both servers, measure, print, write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    ns = parser.parse_args()
    host = os.environ.get("MIASMA_DOCKER_HOST") or engine.ensure_engine(Path("/tmp/miasma-engine"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
    tmp = Path(tempfile.mkdtemp(prefix="miasma-bench-"))
    miasma_address = f"127.0.0.1:{free_port()}"
    baseline_address = f"127.0.0.1:{free_port()}"
    server = [
        sys.executable, "-m", "miasma_grpc", "--listen", miasma_address,
        "--db-path", str(tmp / "bench.db"), "--docker-host", host,
        "--instance", f"bench{os.getpid()}", "--log-level", "WARNING",
    ]  # fmt: skip
    base = [sys.executable, "-m", "bench.baseline", "--listen", baseline_address]
    miasma = Side("miasma", miasma_address, subprocess.Popen(server, env=env))
    baseline = Side("baseline", baseline_address, subprocess.Popen(base, env=env))
    try:
        payload = asyncio.run(measure(miasma, baseline, ns.watchers, ns.rounds))
    finally:
        for side in (miasma, baseline):
            side.process.terminate()
            side.process.wait(30)
    figures = {
        "watchers": ns.watchers,
        "rounds": ns.rounds,
        "payload_bytes": payload,
        "miasma": miasma.summary(),
        "baseline": baseline.summary(),
    }
    print(table(figures))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "watch_fanout.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

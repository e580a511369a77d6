"""(d) Watch fan-out: N concurrent WatchPortEvents streams receive each port edit.

Measures, for every edit, the delay from sending ``EditPorts`` to each
stream receiving the CHANGED event (p50/p99 over all streams and rounds),
and the server's memory per open stream. The same is measured, in the
same run and alternating round by round, against a bare ``grpc.aio``
fan-out server (``bench.baseline``) pushing a payload of the same size, so
the ratio holds on a noisy machine. Client and servers share the machine.
Target: delivery p99 at most 100 ms with 1,000 streams.

    python -m bench.watch_fanout [--watchers 1000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from miasma.v1 import apps_pb2, apps_pb2_grpc

from bench.baseline import PUBLISH, WATCH
from bench.harness import Server, Workdir, docker_host, percentile, rss_kib, wait_ready

STREAMS_PER_CHANNEL = 100
APP = "apps/fanout"
CHANGED = apps_pb2.PORT_EVENT_KIND_CHANGED
TARGET_P99_MS = 100.0


@dataclass
class Side:
    """One server under test, its open streams and the delays they saw."""

    name: str
    server: Server
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    arrivals: list[asyncio.Queue[float]] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    kib_per_stream: float = 0.0

    def channel(self) -> grpc.aio.Channel:
        """A channel with room for another stream (100 streams per connection)."""
        if len(self.arrivals) % STREAMS_PER_CHANNEL == 0:
            self.channels.append(self.server.channel())
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
        return {
            "p50_ms": round(1000 * percentile(self.delays, 0.50), 2),
            "p99_ms": round(1000 * percentile(self.delays, 0.99), 2),
            "mean_ms": round(1000 * statistics.fmean(self.delays), 2),
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
    idle = {side.name: rss_kib(side.server.pid) for side in (miasma, baseline)}
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
        side.kib_per_stream = (rss_kib(side.server.pid) - idle[side.name]) / count
    return tasks


async def run(miasma: Side, baseline: Side, watchers: int, rounds: int) -> int:
    """Open the streams, then alternate edits and baseline publishes; the payload size."""
    control = miasma.server.channel()
    publisher = baseline.server.channel()
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


def measure(watchers: int = 1000, rounds: int = 20) -> dict[str, Any]:
    """Start both servers, open ``watchers`` streams on each, alternate ``rounds`` changes."""
    with Workdir() as work:
        miasma = Side("miasma", work.miasma("fanout", docker_host()))
        baseline = Side("baseline", work.baseline())
        payload = asyncio.run(run(miasma, baseline, watchers, rounds))
    ours, base = miasma.summary(), baseline.summary()
    return {
        "watchers": watchers,
        "rounds": rounds,
        "payload_bytes": payload,
        "miasma": ours,
        "baseline": base,
        "p99_ratio": round(ours["p99_ms"] / base["p99_ms"], 3),
        "target_p99_ms": TARGET_P99_MS,
    }


def table(figures: dict[str, Any]) -> str:
    """Text table of (d): Miasma against the baseline, with ratios."""
    ours, base = figures["miasma"], figures["baseline"]
    lines = [
        f"(d) watch fan-out: {figures['watchers']} streams, {figures['rounds']} edits, "
        f"{figures['payload_bytes']}-byte event, vs bare grpc.aio fan-out",
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
    met = ours["p99_ms"] <= figures["target_p99_ms"]
    lines.append(
        f"target: delivery p99 <= {figures['target_p99_ms']:g} ms: {'met' if met else 'NOT met'}"
    )
    return "\n".join(lines)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    ns = parser.parse_args()
    figures = measure(ns.watchers, ns.rounds)
    print(table(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

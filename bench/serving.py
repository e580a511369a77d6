"""(c) Edit to serving: ``EditPorts`` on a running app against a raw aiodocker start.

Miasma (container runtime, real engine) runs one app: the busybox test image
with httpd on every ``PORT_n``. Each round moves the app to a new explicit
published port that does not overlap the old one, so Miasma starts the new
container before it removes the old one. The clock starts when the
``EditPorts`` is sent and stops at the first HTTP 200 on the new port, while
the RPC may still be in flight. From the send until then, the old port is
polled too: every failed GET there (connection error or non-200) counts in
``failed_old_port_requests``.

The baseline, interleaved round by round, is the same container made with
aiodocker directly on the same engine (same image, command, env, target
port, a bridge network of its own, binding on 127.0.0.1 to a free port): the
clock runs from create through start to the first 200. Meanwhile the Miasma
app's port is polled as the old port is on the Miasma side, so both sides
carry the same load. Its containers are removed outside the clock. Ratio =
median Miasma / median baseline; target <= 1.3, with no failed old-port GET.

When the new port is probed (``--probe``): ``started`` (default) sends the
first GET when Docker's event stream reports the new container started;
``early`` polls from the first instant. Docker's userland proxy listens
before the container's interface is up, so an early GET makes the kernel ARP
for an address nobody answers yet and every GET then waits for the ARP retry
(1 s by default): ``early`` mostly measures that timer, on both sides.

    python -m bench.serving [--rounds 10] [--probe started|early]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Coroutine
from typing import Any

import aiodocker
from miasma.v1 import apps_pb2, apps_pb2_grpc

from bench.harness import Server, Workdir, docker_host, free_port, summary, wait_ready
from miasma_grpc.runtime.base import LABEL_MANAGED
from scripts.engine import HTTPD_COMMAND, ensure_test_image

TARGET_RATIO = 1.3
POLL_S = 0.003  # pause between GETs
GET_TIMEOUT_S = 0.5
ROUND_TIMEOUT_S = 60.0
APP = "serving"
INSTANCE = f"bench{os.getpid()}serving"  # Miasma's instance (container label, network)
LABEL = "io.miasma.bench"  # on everything the baseline creates, = BENCH_ID
BENCH_ID = f"serving-{os.getpid()}"


async def get_ok(port: int) -> bool:
    """One ``GET /`` on 127.0.0.1:``port``: True on a 200."""
    try:
        async with asyncio.timeout(GET_TIMEOUT_S):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                status = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return status.split()[1:2] == [b"200"]


async def first_ok(port: int, start: float) -> float:
    """Poll ``port`` until it answers 200; seconds since ``start``."""
    while True:
        if await get_ok(port):
            return time.perf_counter() - start
        await asyncio.sleep(POLL_S)


async def failures(port: int, done: asyncio.Event) -> int:
    """GET ``port`` until ``done``; how many GETs failed."""
    failed = 0
    while not done.is_set():
        failed += not await get_ok(port)
        await asyncio.sleep(POLL_S)
    return failed


class Starts:
    """Docker's container start events (subscribed once, before the rounds)."""

    def __init__(self, docker: aiodocker.Docker, early: bool) -> None:
        self.early = early
        filters = json.dumps({"type": ["container"], "event": ["start"]})
        self._subscriber = docker.events.subscribe(filters=filters)  # type: ignore[no-untyped-call]
        self.queue: asyncio.Queue[Any] = self._subscriber.queue

    async def wait(self, key: str, value: str) -> None:
        """The next start of a container labelled ``key=value`` (none when probing early)."""
        while not self.queue.empty():  # earlier starts (this round's cannot be in yet)
            self.queue.get_nowait()
        while not self.early:
            event = await self.queue.get()
            if event is None:
                raise RuntimeError("Docker's event stream ended")
            if event.get("Actor", {}).get("Attributes", {}).get(key) == value:
                return


async def timed(
    action: Coroutine[Any, Any, object], started: Awaitable[None], new: int, watched: int
) -> tuple[float, int]:
    """Run ``action``; seconds to a 200 on ``new``, and failed GETs on ``watched`` meanwhile."""
    start = time.perf_counter()
    task = asyncio.create_task(action)
    done = asyncio.Event()
    watcher = asyncio.create_task(failures(watched, done))
    try:
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            await started
            elapsed = await first_ok(new, start)
    finally:
        done.set()
        failed = await watcher
        await task  # raises if the edit or the create/start failed
    return elapsed, failed


async def miasma_round(
    stub: apps_pb2_grpc.AppServiceAsyncStub, starts: Starts, old: int, new: int
) -> tuple[float, int]:
    """Move the app from published port ``old`` to ``new``."""
    request = apps_pb2.EditPortsRequest(
        name=f"apps/{APP}",
        add_published_ports=[apps_pb2.Port(number=new)],
        remove_published_ports=[apps_pb2.Port(number=old)],
    )

    async def edit() -> None:
        reply = await stub.EditPorts(request)
        assert [b.published_port for b in reply.app.bindings] == [new], reply

    return await timed(edit(), starts.wait(LABEL_MANAGED, INSTANCE), new, old)


def container_config(image: str, target: int, port: int) -> dict[str, Any]:
    """What Miasma's ``_container_config`` gives the app, with the baseline's label."""
    key = f"{target}/tcp"
    return {
        "Image": image,
        "Cmd": HTTPD_COMMAND,
        "Env": [f"PORT={target}", f"PORT_1={target}"],
        "Labels": {LABEL: BENCH_ID},
        "ExposedPorts": {key: {}},
        "HostConfig": {
            "PortBindings": {key: [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
            "RestartPolicy": {"Name": "unless-stopped"},
        },
        "NetworkingConfig": {"EndpointsConfig": {BENCH_ID: {"Aliases": [APP]}}},
    }


async def baseline_round(
    docker: aiodocker.Docker, starts: Starts, image: str, target: int, watched: int
) -> float:
    """Create, start and serve the container once; remove it afterwards."""
    port = free_port()

    async def create_start() -> None:
        config = container_config(image, target, port)
        await (await docker.containers.create(config, name=f"{BENCH_ID}-{port}")).start()

    try:
        elapsed, _ = await timed(create_start(), starts.wait(LABEL, BENCH_ID), port, watched)
        return elapsed
    finally:
        await remove_labelled(docker, LABEL, BENCH_ID)


async def remove_labelled(docker: aiodocker.Docker, key: str, value: str) -> None:
    """Remove the containers labelled ``key=value``."""
    filters = json.dumps({"label": [f"{key}={value}"]})
    for container in await docker.containers.list(all=True, filters=filters):
        await container.delete(force=True, v=True)


async def run(miasma: Server, host: str, image: str, rounds: int, early: bool) -> dict[str, Any]:
    """Create the app, then alternate Miasma and baseline rounds."""
    ours, base, failed = [], [], []
    async with aiodocker.Docker(url=host) as docker, miasma.channel() as channel:
        starts = Starts(docker, early)
        await docker.networks.create(
            {"Name": BENCH_ID, "Driver": "bridge", "Labels": {LABEL: BENCH_ID}}
        )
        stub = apps_pb2_grpc.AppServiceStub(channel)
        await wait_ready(lambda: stub.GetServerInfo(apps_pb2.GetServerInfoRequest()))
        port = free_port()
        app = apps_pb2.App(image=image, command=HTTPD_COMMAND)
        request = apps_pb2.CreateAppRequest(
            app_id=APP, app=app, published_ports=[apps_pb2.Port(number=port)]
        )
        target = (await stub.CreateApp(request)).app.bindings[0].target_port
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            await first_ok(port, time.perf_counter())
        for _ in range(rounds):
            new = free_port()
            elapsed, lost = await miasma_round(stub, starts, port, new)
            ours.append(elapsed)
            failed.append(lost)
            port = new
            base.append(await baseline_round(docker, starts, image, target, port))
        await stub.DeleteApp(apps_pb2.DeleteAppRequest(name=f"apps/{APP}"))
    return {"miasma_s": ours, "baseline_s": base, "failed_old_port_requests": failed}


async def remove_all(host: str) -> None:
    """Remove the containers and networks of this run: the baseline's and Miasma's."""
    async with aiodocker.Docker(url=host) as docker:
        for key, value in ((LABEL, BENCH_ID), (LABEL_MANAGED, INSTANCE)):
            await remove_labelled(docker, key, value)
            for network in await docker.networks.list(filters={"label": [f"{key}={value}"]}):
                await (await docker.networks.get(network["Id"])).delete()


def measure(rounds: int = 10, probe: str = "started") -> dict[str, Any]:
    """Run ``rounds`` interleaved rounds; figures with the Miasma/baseline ratio."""
    host = docker_host()
    image = ensure_test_image(host)
    try:
        with Workdir() as work:
            miasma = work.miasma(APP, host, "--instance", INSTANCE)
            raw = asyncio.run(run(miasma, host, image, rounds, probe == "early"))
    finally:
        asyncio.run(remove_all(host))
    ours, base = summary(raw["miasma_s"]), summary(raw["baseline_s"])
    return {
        "rounds": rounds,
        "probe": probe,
        "miasma": ours,
        "baseline": base,
        "ratio": round(ours["p50_ms"] / base["p50_ms"], 3),
        "target_ratio": TARGET_RATIO,
        "failed_old_port_requests": sum(raw["failed_old_port_requests"]),
        "failed_per_round": raw["failed_old_port_requests"],
        "miasma_ms": [round(1000 * s, 1) for s in raw["miasma_s"]],
        "baseline_ms": [round(1000 * s, 1) for s in raw["baseline_s"]],
    }


def table(figures: dict[str, Any]) -> str:
    """Text table of (c)."""
    m, b, failed = figures["miasma"], figures["baseline"], figures["failed_old_port_requests"]
    met = figures["ratio"] <= TARGET_RATIO and failed == 0
    return "\n".join(
        [
            "(c) EditPorts to the first 200 on the new port vs raw aiodocker create-start-serve"
            f" ({figures['rounds']} rounds, probe {figures['probe']})",
            f"{'':>10}{'median ms':>11}{'p90 ms':>9}",
            f"{'miasma':>10}{m['p50_ms']:>11.1f}{m['p90_ms']:>9.1f}",
            f"{'baseline':>10}{b['p50_ms']:>11.1f}{b['p90_ms']:>9.1f}",
            f"ratio {figures['ratio']:.2f} (target <= {TARGET_RATIO}), failed GETs on the old"
            f" port {failed} (target 0): {'met' if met else 'NOT met'}",
        ]
    )


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--probe", choices=("started", "early"), default="started")
    ns = parser.parse_args()
    figures = measure(ns.rounds, ns.probe)
    print(table(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

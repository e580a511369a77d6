"""(b) Scale of the allocator: ``EditPorts`` and ``CreateApp`` latency, 10,000 apps vs 10.

Two Miasma servers run side by side with the same flags (:data:`FLAGS`: 30,000
auto ports, so 20,000 fit; no periodic reconcile pass). Through the real
API, 64 calls at a time, one gets 10,000 apps and the other 10, each stopped
with two slots (two target ports, two auto published ports: 20,000 bindings).

Then one client measures sequential calls, alternating between the two
servers in small batches (the server that goes first swaps every round):

* ``EditPorts``: pin an app to an explicit published port, then give it
  back an automatic one (as ``bench.loadgen.edit_requests``), so every call
  allocates, commits and logs an event; the edited apps are spread evenly
  over the database;
* ``CreateApp``: a new stopped app with two slots (two auto published
  ports); the batch's apps are deleted again after the batch, untimed, so
  both servers keep their 10,000 and 10 apps.

Reported: median and p90 per server, and the 10,000/10 ratio of the
medians (target: at most 1.3). ``--keep`` keeps both databases (their
paths are in the figures) for ``bench.cold_start``.

    python -m bench.scale [--apps 10000] [--rounds 10] [--edits 40] [--creates 10] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

from miasma.v1 import apps_pb2, apps_pb2_grpc

from bench.harness import Server, Workdir, docker_host, summary
from bench.loadgen import app_name

# Auto ports below Linux's ephemeral ports (32768-60999), which client sockets hold now
# and then. No periodic reconcile pass (one Docker call per app, every 30 s by default)
# lands in the middle of a measurement: bench.cold_start measures the first pass.
FLAGS = ("--published-port-range", "2100-32099", "--reconcile-interval", "3600")
PIN_PORT = 32100  # explicit ports: PIN_PORT + k for the k-th edited app
TARGET_RATIO = 1.3
BASELINE_APPS = 10
EDITED_APPS = 10


def create_request(name: str) -> apps_pb2.CreateAppRequest:
    """A stopped app with two slots: two explicit target ports, two auto published ports."""
    return apps_pb2.CreateAppRequest(
        app_id=name,
        app=apps_pb2.App(image="bench", desired_state=apps_pb2.DESIRED_STATE_STOPPED),
        target_ports=[apps_pb2.Port(number=8080), apps_pb2.Port(number=8081)],
    )


async def populate(server: Server, apps: int, concurrency: int = 64) -> float:
    """Create ``load-0`` .. ``load-<apps-1>`` (:func:`create_request`); seconds it took.

    Shared with ``bench.cold_start``.
    """
    await server.wait_serving()  # raises if the server exits
    async with server.channel() as channel:
        stub = apps_pb2_grpc.AppServiceStub(channel)
        names = iter(range(apps))
        started = time.perf_counter()

        async def worker() -> None:
            for i in names:
                await stub.CreateApp(create_request(app_name(i)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def edit_request(apps: int, n: int) -> apps_pb2.EditPortsRequest:
    """Call ``n``: pin (even) or unpin (odd) one of :data:`EDITED_APPS` apps spread evenly."""
    k = n // 2 % EDITED_APPS
    name, port = f"apps/{app_name(k * max(1, apps // EDITED_APPS) % apps)}", PIN_PORT + k
    pin = [apps_pb2.Port(number=port)]
    if n % 2:
        return apps_pb2.EditPortsRequest(name=name, remove_published_ports=pin)
    return apps_pb2.EditPortsRequest(name=name, add_published_ports=pin)


async def edit_batch(stub: apps_pb2_grpc.AppServiceAsyncStub, apps: int, calls: int) -> list[float]:
    """``calls`` sequential edits (:func:`edit_request`); latencies."""
    latencies = []
    for n in range(calls):
        request = edit_request(apps, n)
        sent = time.perf_counter()
        await stub.EditPorts(request)
        latencies.append(time.perf_counter() - sent)
    return latencies


async def create_batch(
    stub: apps_pb2_grpc.AppServiceAsyncStub, tag: str, calls: int
) -> list[float]:
    """``calls`` sequential creates (deleted again, untimed); latencies."""
    latencies = []
    for n in range(calls):
        sent = time.perf_counter()
        await stub.CreateApp(create_request(f"{tag}-{n}"))
        latencies.append(time.perf_counter() - sent)
    for n in range(calls):
        await stub.DeleteApp(apps_pb2.DeleteAppRequest(name=f"apps/{tag}-{n}"))
    return latencies


async def compare(
    servers: dict[str, tuple[Server, int]], rounds: int, edits: int, creates: int
) -> dict[str, dict[str, list[float]]]:
    """Alternate batches between the servers; latencies per server and call."""
    found: dict[str, dict[str, list[float]]] = {k: {"edit": [], "create": []} for k in servers}
    async with AsyncExitStack() as stack:
        stubs = {
            key: apps_pb2_grpc.AppServiceStub(await stack.enter_async_context(server.channel()))
            for key, (server, _) in servers.items()
        }
        order = list(servers)
        for r in range(-1, rounds):  # round -1 warms up, unrecorded
            for key in order if r % 2 else order[::-1]:
                edit = await edit_batch(stubs[key], servers[key][1], edits)
                create = await create_batch(stubs[key], f"new-{r + 1}", creates)
                if r >= 0:
                    found[key]["edit"] += edit
                    found[key]["create"] += create
    return found


def measure(
    apps: int = 10_000,
    rounds: int = 10,
    edits: int = 40,
    creates: int = 10,
    *,
    concurrency: int = 64,
    flags: tuple[str, ...] = FLAGS,
    keep: bool = False,
) -> dict[str, Any]:
    """Populate both servers, compare them; with ``keep``, the databases' paths too."""
    with Workdir(keep=keep) as work:
        engine = docker_host()
        small = work.miasma("small", engine, *flags)
        large = work.miasma("large", engine, *flags)
        asyncio.run(populate(small, BASELINE_APPS, concurrency))
        populated = asyncio.run(populate(large, apps, concurrency))
        print(f"populated {apps} apps in {populated:.1f} s", file=sys.stderr)
        servers = {"small": (small, BASELINE_APPS), "large": (large, apps)}
        found = asyncio.run(compare(servers, rounds, edits, creates))
        figures: dict[str, Any] = {
            "apps": apps,
            "baseline_apps": BASELINE_APPS,
            "populate_s": round(populated, 1),
            "populate_apps_per_s": round(apps / populated, 1),
            "flags": list(flags),
            "rounds": rounds,
            "target_ratio": TARGET_RATIO,
        }
        for call in ("edit", "create"):
            s, m = summary(found["small"][call]), summary(found["large"][call])
            figures[call] = {"small": s, "large": m, "ratio": round(m["p50_ms"] / s["p50_ms"], 3)}
    if keep:
        figures["large_db"] = str(work.path / "large.db")
        figures["small_db"] = str(work.path / "small.db")
    return figures


def table(figures: dict[str, Any]) -> str:
    """Text table of (b)."""
    n, b = figures["apps"], figures["baseline_apps"]
    lines = [
        f"(b) sequential latency with {n} apps vs {b} (2 slots each, stopped); "
        f"populated in {figures['populate_s']} s ({figures['populate_apps_per_s']:.0f} apps/s)",
        f"{'call':>10}{'calls':>7}{f'{b} p50':>9}{f'{b} p90':>9}"
        f"{f'{n} p50':>11}{f'{n} p90':>11}{'ratio':>7}{'target':>8}",
    ]
    for call, label in (("edit", "EditPorts"), ("create", "CreateApp")):
        s, m = figures[call]["small"], figures[call]["large"]
        lines.append(
            f"{label:>10}{m['calls']:>7}{s['p50_ms']:>9.2f}{s['p90_ms']:>9.2f}"
            f"{m['p50_ms']:>11.2f}{m['p90_ms']:>11.2f}{figures[call]['ratio']:>7.2f}"
            f"{'<= ' + str(figures['target_ratio']):>8}"
        )
    return "\n".join(lines)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--apps", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--edits", type=int, default=40, help="EditPorts calls per batch (even)")
    parser.add_argument("--creates", type=int, default=10, help="CreateApp calls per batch")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent creates to fill")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument(
        "--server-flags", default=" ".join(FLAGS), help="flags both servers get (one string)"
    )
    ns = parser.parse_args()
    figures = measure(
        ns.apps, ns.rounds, ns.edits, ns.creates,
        concurrency=ns.concurrency, flags=tuple(ns.server_flags.split()), keep=ns.keep,
    )  # fmt: skip
    print(table(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""(a) Control-plane throughput: ``EditPorts`` on stopped apps against a bare echo.

Every call allocates a port, commits to SQLite and logs an event. The
baseline is ``bench.baseline``'s ``Echo/Call`` (a bare ``grpc.aio`` server)
with a payload the size of an ``EditPortsResponse``. Both are driven by the
same closed-loop generator (``bench.loadgen``, its own process) at 1, 8, 64
and 256 concurrent clients, alternating Miasma and echo window by window.

Miasma runs twice, on databases of its own: with ``--durability full`` (the
default: each group commit is fsynced before its calls are answered) and with
``--durability fast`` (no fsync per commit): ``full/fast`` is what durability
costs.

    python -m bench.throughput [--clients 1,8,64,256] [--rounds 3] [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from typing import Any

from miasma.v1 import apps_pb2, apps_pb2_grpc

from bench.harness import Server, Workdir, docker_host, wait_ready
from bench.loadgen import app_name, edit_requests

TARGET_CLIENTS = 64


def load(server: Server, kind: str, clients: int, seconds: float, payload: int) -> dict[str, Any]:
    """One window of the load generator against ``server``."""
    command = [
        sys.executable, "-m", "bench.loadgen", "--address", server.address,
        "--kind", kind, "--clients", str(clients), "--seconds", str(seconds),
        "--payload-bytes", str(payload),
    ]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    figures: dict[str, Any] = json.loads(out.stdout)
    return figures


async def prepare(miasma: Server, baseline: Server, apps: int) -> int:
    """Create the stopped apps; the size of an ``EditPortsResponse`` (the echo's payload)."""
    async with miasma.channel() as channel, baseline.channel() as base:
        stub = apps_pb2_grpc.AppServiceStub(channel)
        await wait_ready(lambda: stub.GetServerInfo(apps_pb2.GetServerInfoRequest()))
        echo = base.unary_unary("/bench.Echo/Call", None, None)
        await wait_ready(lambda: echo(b""))
        stopped = apps_pb2.App(image="bench", desired_state=apps_pb2.DESIRED_STATE_STOPPED)
        for i in range(apps):
            await stub.CreateApp(apps_pb2.CreateAppRequest(app_id=app_name(i), app=stopped))
        pin, unpin = edit_requests(0)
        reply = await stub.EditPorts(pin)
        await stub.EditPorts(unpin)
        return reply.ByteSize()


def combine(windows: list[dict[str, Any]]) -> dict[str, float]:
    """Throughput over all windows; the median of the windows' percentiles."""
    return {
        "calls_per_s": round(
            sum(w["calls"] for w in windows) / sum(w["seconds"] for w in windows), 1
        ),
        "p50_ms": round(statistics.median(w["p50_ms"] for w in windows), 3),
        "p99_ms": round(statistics.median(w["p99_ms"] for w in windows), 3),
        "errors": sum(w["errors"] for w in windows),
    }


def measure(levels: list[int], rounds: int, seconds: float) -> dict[str, Any]:
    """Run every level; figures per level with Miasma/echo ratios."""
    with Workdir() as work:
        miasma = work.miasma("throughput", docker_host())
        fast = work.miasma("throughput-fast", docker_host(), "--durability", "fast")
        baseline = work.baseline()
        payload = asyncio.run(prepare(miasma, baseline, max(levels)))
        asyncio.run(prepare(fast, baseline, max(levels)))
        results = []
        for clients in levels:
            ours, quick, base = [], [], []
            for _ in range(rounds):
                ours.append(load(miasma, "edit", clients, seconds, payload))
                quick.append(load(fast, "edit", clients, seconds, payload))
                base.append(load(baseline, "echo", clients, seconds, payload))
            m, f, b = combine(ours), combine(quick), combine(base)
            results.append(
                {
                    "clients": clients,
                    "miasma": m,
                    "fast": f,
                    "echo": b,
                    "throughput_ratio": round(m["calls_per_s"] / b["calls_per_s"], 3),
                    "p99_ratio": round(m["p99_ms"] / b["p99_ms"], 3),
                    "durability_ratio": round(m["calls_per_s"] / f["calls_per_s"], 3),
                }
            )
        return {"payload_bytes": payload, "rounds": rounds, "seconds": seconds, "levels": results}


def table(figures: dict[str, Any]) -> str:
    """Text table of (a)."""
    lines = [
        f"(a) EditPorts on stopped apps vs bare grpc.aio echo ({figures['payload_bytes']} B);"
        " fast: --durability fast",
        f"{'clients':>8}{'miasma/s':>10}{'echo/s':>10}{'ratio':>7}"
        f"{'p99 ms':>9}{'echo p99':>10}{'ratio':>7}{'fast/s':>9}{'full/fast':>10}",
    ]
    for level in figures["levels"]:
        m, e, f = level["miasma"], level["echo"], level.get("fast")
        fast = (
            f"{f['calls_per_s']:>9.0f}{level['durability_ratio']:>10.2f}" if f else ""
        )  # results written before the fast mode existed have none
        lines.append(
            f"{level['clients']:>8}{m['calls_per_s']:>10.0f}{e['calls_per_s']:>10.0f}"
            f"{level['throughput_ratio']:>7.2f}{m['p99_ms']:>9.2f}{e['p99_ms']:>10.2f}"
            f"{level['p99_ratio']:>7.2f}{fast}"
        )
    return "\n".join(lines)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="1,8,64,256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    ns = parser.parse_args()
    figures = measure([int(c) for c in ns.clients.split(",")], ns.rounds, ns.seconds)
    print(table(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

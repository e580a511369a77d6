"""(i) Reads under an outside load generator: ``GetApp`` and ``ListApps`` vs a bare reply.

h2load (Debian's ``nghttp2-client``, written in C) sends one gRPC request
over and over, :data:`CONNECTIONS` connections x :data:`STREAMS` streams, in
windows alternating between Miasma and the bare ``grpc.aio`` server of
:mod:`bench.baseline`, which answers with Miasma's own reply bytes
(``Reply/Get``: the same size, no work). Measured:

* ``GetApp`` of a running app (one busybox container) among 300 apps;
* ``ListApps``, the first page of 100 of those 300 apps;
* ``GetApp`` from one client, one call at a time (latency);
* scale: ``GetApp`` with 10,000 apps vs 10, and ``ListApps`` (a page of 100)
  with 10,000 apps vs 300: the ratio of the time per call (target: at most
  1.1);
* memory per app: the resident memory of the 10,000-app server less the
  10-app server's, per app;
* freshness, on the running app: its container killed by hand, the time
  until it runs again (a new start) and ``GetApp`` says 1/1; removed by hand
  while a process outside Miasma takes its port, the time until ``GetApp``
  says it is down (target for both: 1 s; the periodic pass is an hour away).

Every reply is checked: h2load counts HTTP statuses, and a gRPC error is an
HTTP 200 too, but without a message; the data received must be one whole
reply per call. p50 and p99 come from h2load's per-request log.

    python -m bench.reads [--window 2] [--rounds 3] [--apps 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiodocker
import grpc
from miasma.v1 import apps_pb2, apps_pb2_grpc

from bench.baseline import REPLY_GET, REPLY_SET
from bench.harness import Server, Workdir, docker_host, percentile, rss_kib, summary
from bench.scale import FLAGS, populate
from miasma_grpc.runtime.base import LABEL_APP, LABEL_MANAGED
from scripts.engine import HTTPD_COMMAND, ensure_test_image

CONNECTIONS = 4
STREAMS = 16  # per connection
FRESH_TARGET = 1.0  # seconds from a change by hand to GetApp showing it
FRESH_POLL_S = 0.005
GET_TARGET = 0.8  # GetApp throughput, Miasma / bare
LIST_TARGET = 0.5  # ListApps page of 100
SCALE_TARGET = 1.1  # time per call, 10,000 apps / 10 (or 300)
PAGE = 100
LISTED_APPS = 300
SMALL_APPS = 10
SERVICE = "/miasma.v1.AppService"
RUNNING_APP = "web"


def ensure_h2load() -> None:
    """Install Debian's ``nghttp2-client`` (h2load) if it is missing."""
    if shutil.which("h2load"):
        return
    if not shutil.which("apt-get"):
        raise RuntimeError("h2load is needed: install nghttp2 (Debian: nghttp2-client)")
    root = [] if os.geteuid() == 0 else ["sudo", "-n"]
    print("installing nghttp2-client (h2load) with apt-get", file=sys.stderr)
    subprocess.run([*root, "apt-get", "update"], check=True, stdout=sys.stderr)
    subprocess.run(
        [*root, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y",
         "nghttp2-client"],
        check=True, stdout=sys.stderr,
    )  # fmt: skip


def frame(message: bytes) -> bytes:
    """A gRPC message on the wire: not compressed (0), its length (4 bytes), the message."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def h2load(
    address: str, path: str, request: Path, reply: int, *, streams: int, connections: int,
    seconds: int, log: Path,
) -> dict[str, float]:  # fmt: skip
    """One window of h2load: calls/s, p50 and p99 (ms); fails unless every call got a reply
    of ``reply`` bytes (framed)."""
    args = [
        "h2load", "-c", str(connections), "-m", str(streams), "-D", str(seconds),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        "-d", str(request), "--log-file", str(log), f"http://{address}{path}",
    ]  # fmt: skip
    log.unlink(missing_ok=True)  # h2load appends to its log
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    data = re.search(r"traffic: .*\((\d+)\) data", out)
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if not (counts and data and rate):
        raise RuntimeError(f"h2load gave no figures for {path}:\n{out}")
    done, succeeded, received = int(counts[1]), int(counts[2]), int(data[1])
    # Calls cut off at the window's end may have their reply half read: allow a few.
    expected = succeeded * (reply + 5)
    if succeeded < done or succeeded == 0 or not expected * 0.99 <= received <= expected:
        raise RuntimeError(
            f"{path}: {succeeded} of {done} calls succeeded with {received} bytes of data, "
            f"not {reply + 5} per call (a gRPC error has none):\n{out}"
        )
    micros = [int(line.split("\t")[2]) for line in log.read_text().splitlines()]
    return {
        "calls": done,
        "per_s": float(rate[1]),
        "p50_ms": round(percentile(micros, 0.5) / 1000, 3),
        "p99_ms": round(percentile(micros, 0.99) / 1000, 3),
    }


class Scene:
    """One call aimed at one server, with the request file h2load sends and the reply size."""

    def __init__(self, work: Path, key: str, server: Server, path: str, request: bytes) -> None:
        self.key, self.server, self.path = key, server, path
        self.request = work / f"{key}.req"
        self.request.write_bytes(frame(request))
        self.reply = 0

    async def read_reply(self) -> bytes:
        """Miasma's reply, as bytes (its size is what each call must bring)."""
        async with self.server.channel() as channel:
            call = channel.unary_unary(self.path, None, None)
            raw: bytes = await call(self.request.read_bytes()[5:])
        self.reply = len(raw)
        return raw

    def run(self, work: Path, seconds: int, streams: int, connections: int) -> dict[str, float]:
        """A window of h2load at this scene."""
        return h2load(
            self.server.address, self.path, self.request, self.reply, streams=streams,
            connections=connections, seconds=seconds, log=work / f"{self.key}.log",
        )  # fmt: skip


async def set_baseline(baseline: Server, reply: bytes) -> None:
    """Make the bare server answer ``Reply/Get`` with ``reply``."""
    async with baseline.channel() as channel:
        await channel.unary_unary(REPLY_SET, None, None)(reply)


def alternate(
    work: Path, pair: tuple[Scene, Scene], rounds: int, seconds: int, *, streams: int,
    connections: int,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Windows of both scenes in turn (who goes first swaps every round), after one
    unrecorded window each; per scene, calls/s over all windows and the median of the
    windows' p50 and p99."""
    found: dict[str, list[dict[str, float]]] = {s.key: [] for s in pair}
    for r in range(-1, rounds):
        for scene in pair if r % 2 else pair[::-1]:
            figures = scene.run(work, 1 if r < 0 else seconds, streams, connections)
            if r >= 0:
                found[scene.key].append(figures)
    return {key: combine(windows) for key, windows in found.items()}


def combine(windows: list[dict[str, float]]) -> dict[str, float]:
    """Figures of several windows as one."""
    calls = sum(w["calls"] for w in windows)
    return {
        "calls": calls,
        "per_s": round(sum(w["per_s"] for w in windows) / len(windows), 1),
        "p50_ms": sorted(w["p50_ms"] for w in windows)[len(windows) // 2],
        "p99_ms": sorted(w["p99_ms"] for w in windows)[len(windows) // 2],
    }


async def prepare(servers: dict[str, Server], apps: int, image: str) -> None:
    """Fill the servers (stopped apps), and run one app on the 300-app server."""
    await asyncio.gather(
        populate(servers["small"], SMALL_APPS),
        populate(servers["listed"], LISTED_APPS),
        populate(servers["large"], apps),
    )
    async with servers["listed"].channel() as channel:
        stub = apps_pb2_grpc.AppServiceStub(channel)
        app = apps_pb2.App(image=image, command=HTTPD_COMMAND)
        await stub.CreateApp(apps_pb2.CreateAppRequest(app_id=RUNNING_APP, app=app))


async def remove_running(server: Server) -> None:
    """Delete the running app (its container goes with it)."""
    async with server.channel() as channel:
        stub = apps_pb2_grpc.AppServiceStub(channel)
        with_name = apps_pb2.DeleteAppRequest(name=f"apps/{RUNNING_APP}")
        try:
            await stub.DeleteApp(with_name)
        except grpc.aio.AioRpcError as exc:
            print(f"could not delete {RUNNING_APP}: {exc.details()}", file=sys.stderr)


def get(name: str) -> bytes:
    """A serialized GetAppRequest."""
    return apps_pb2.GetAppRequest(name=f"apps/{name}").SerializeToString()


def page() -> bytes:
    """A serialized ListAppsRequest for the first page of :data:`PAGE`."""
    return apps_pb2.ListAppsRequest(page_size=PAGE).SerializeToString()


def measure(
    window: int = 2, rounds: int = 3, apps: int = 10_000, *, streams: int = STREAMS,
    connections: int = CONNECTIONS,
) -> dict[str, Any]:  # fmt: skip
    """Start the servers, fill them, run every comparison."""
    ensure_h2load()
    host = docker_host()
    image = ensure_test_image(host)
    with Workdir() as work:
        servers = {
            key: work.miasma(key, host, *FLAGS) for key in ("small", "listed", "large")
        }  # fmt: skip
        bare = work.baseline()
        asyncio.run(prepare(servers, apps, image))
        try:
            figures = compare(work.path, servers, bare, window, rounds, apps, streams, connections)
            figures["freshness"] = asyncio.run(freshness(servers["listed"], host, rounds * 2))
            return figures
        finally:
            asyncio.run(remove_running(servers["listed"]))


def compare(
    work: Path, servers: dict[str, Server], bare: Server, window: int, rounds: int, apps: int,
    streams: int, connections: int,
) -> dict[str, Any]:  # fmt: skip
    """Every comparison, against the filled servers."""
    middle = f"load-{apps // 2}"
    scenes = {
        "get": Scene(work, "get", servers["listed"], f"{SERVICE}/GetApp", get(RUNNING_APP)),
        "list": Scene(work, "list", servers["listed"], f"{SERVICE}/ListApps", page()),
        "get_small": Scene(work, "get_small", servers["small"], f"{SERVICE}/GetApp",
                           get("load-5")),
        "get_large": Scene(work, "get_large", servers["large"], f"{SERVICE}/GetApp",
                           get(middle)),
        "list_large": Scene(work, "list_large", servers["large"], f"{SERVICE}/ListApps",
                            page()),
    }  # fmt: skip
    figures: dict[str, Any] = {
        "connections": connections, "streams": streams, "window_s": window, "rounds": rounds,
        "apps": apps,
    }  # fmt: skip
    load = {"streams": streams, "connections": connections}
    one = {"streams": 1, "connections": 1}
    for key, options in (("get", load), ("list", load), ("get_one_client", one)):
        scene = scenes[key.removesuffix("_one_client")]
        reply = asyncio.run(scene.read_reply())
        asyncio.run(set_baseline(bare, reply))
        twin = Scene(work, "bare", bare, REPLY_GET, b"")
        twin.reply = len(reply)
        found = alternate(work, (scene, twin), rounds, window, **options)
        ours, theirs = found[scene.key], found["bare"]
        figures[key] = {
            "reply_bytes": len(reply), "miasma": ours, "bare": theirs,
            "ratio": round(ours["per_s"] / theirs["per_s"], 3),
        }  # fmt: skip
    for key, small, large in (("get_scale", "get_small", "get_large"),
                              ("list_scale", "list", "list_large")):  # fmt: skip
        for scene in (scenes[small], scenes[large]):
            asyncio.run(scene.read_reply())
        found = alternate(work, (scenes[small], scenes[large]), rounds, window, **load)
        s, m = found[small], found[large]
        figures[key] = {"small": s, "large": m, "ratio": round(s["per_s"] / m["per_s"], 3)}
    small_kib, large_kib = rss_kib(servers["small"].pid), rss_kib(servers["large"].pid)
    figures["memory"] = {
        "small_kib": small_kib, "large_kib": large_kib,
        "bytes_per_app": round(1024 * (large_kib - small_kib) / (apps - SMALL_APPS)),
    }  # fmt: skip
    figures["targets"] = {
        "get": GET_TARGET, "list": LIST_TARGET, "scale": SCALE_TARGET, "fresh_s": FRESH_TARGET,
    }  # fmt: skip
    return figures


async def freshness(server: Server, host: str, rounds: int) -> dict[str, Any]:
    """Kill the running app's container ``rounds`` times, then remove it with its port
    taken as many times: seconds until repaired, and until GetApp shows it down."""
    instance = server.args[server.args.index("--instance") + 1]
    repaired, shown = [], []
    async with aiodocker.Docker(url=host) as docker, server.channel() as channel:
        stub = apps_pb2_grpc.AppServiceStub(channel)

        async def app() -> apps_pb2.App:
            return (await stub.GetApp(apps_pb2.GetAppRequest(name=f"apps/{RUNNING_APP}"))).app

        async def started() -> tuple[str, str] | None:
            """(id, start time) of the app's running container; None when none runs."""
            filters = json.dumps({"label": [f"{LABEL_APP}={RUNNING_APP}",
                                            f"{LABEL_MANAGED}={instance}"]})  # fmt: skip
            for found in await docker.containers.list(filters=filters):
                state = (await found.show())["State"]
                if state["Running"]:
                    return found.id, state["StartedAt"]
            return None

        async def until(check: Callable[[], Awaitable[bool]], limit: float = 60) -> float:
            begun = time.perf_counter()
            async with asyncio.timeout(limit):
                while not await check():  # noqa: ASYNC110 - Docker and the API are polled
                    await asyncio.sleep(FRESH_POLL_S)
            return time.perf_counter() - begun

        port = (await app()).bindings[0].published_port
        for _ in range(rounds):
            before = await started()
            assert before is not None, "the app does not run"
            await (await docker.containers.get(before[0])).kill()

            async def runs_again(before: tuple[str, str] = before) -> bool:
                now = await started()
                return now not in (None, before) and (await app()).observed.running == 1

            repaired.append(await until(runs_again))
            # A kill soon after a start is a crash to Miasma: three in a row make a crash
            # loop, whose starts wait (docs/design.md §4). The user's restart ends it.
            await stub.RestartApp(apps_pb2.RestartAppRequest(name=f"apps/{RUNNING_APP}"))
        for _ in range(rounds):
            now = await started()
            assert now is not None, "the app does not run"
            container = await docker.containers.get(now[0])
            with socket.socket() as squatter:
                squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                await container.delete(force=True)
                squatter.bind(("127.0.0.1", port))
                squatter.listen()

                async def down() -> bool:
                    return (await app()).observed.running == 0

                shown.append(await until(down))
            await until(lambda: _truthy(started()))  # back once the port is free (backoff)
    return {
        "rounds": rounds,
        "kill_to_repaired": summary(repaired) | {"max_ms": round(1000 * max(repaired), 1)},
        "rm_to_shown": summary(shown) | {"max_ms": round(1000 * max(shown), 1)},
    }


async def _truthy(value: Awaitable[object]) -> bool:
    return bool(await value)


def table(figures: dict[str, Any]) -> str:
    """Text table of (i)."""
    c, s, n = figures["connections"], figures["streams"], figures["apps"]
    lines = [
        f"(i) reads under h2load ({c} connections x {s} streams, {figures['rounds']} windows"
        f" of {figures['window_s']} s each, alternating) vs a bare grpc.aio reply of the same"
        " size",
        f"{'call':<34}{'bytes':>7}{'miasma/s':>10}{'p50':>7}{'p99':>7}"
        f"{'bare/s':>9}{'p50':>7}{'p99':>7}{'ratio':>7}{'target':>8}",
    ]
    rows = (
        ("get", f"GetApp (running app of {LISTED_APPS})", f">= {GET_TARGET}"),
        ("list", f"ListApps (page of {PAGE} of {LISTED_APPS})", f">= {LIST_TARGET}"),
        ("get_one_client", "GetApp, one client", ""),
    )
    for key, label, target in rows:
        f = figures[key]
        m, b = f["miasma"], f["bare"]
        lines.append(
            f"{label:<34}{f['reply_bytes']:>7}{m['per_s']:>10.0f}{m['p50_ms']:>7.2f}"
            f"{m['p99_ms']:>7.2f}{b['per_s']:>9.0f}{b['p50_ms']:>7.2f}{b['p99_ms']:>7.2f}"
            f"{f['ratio']:>7.2f}{target:>8}"
        )
    lines.append(f"{'scale (time per call)':<34}{'small/s':>17}{'large/s':>17}")
    for key, label in (("get_scale", f"GetApp, {n} apps vs {SMALL_APPS}"),
                       ("list_scale", f"ListApps, {n} apps vs {LISTED_APPS}")):  # fmt: skip
        f = figures[key]
        lines.append(
            f"{label:<34}{f['small']['per_s']:>17.0f}{f['large']['per_s']:>17.0f}"
            f"{f['ratio']:>14.2f}{'<= ' + str(SCALE_TARGET):>8}"
        )
    fresh = figures["freshness"]
    for key, label in (("kill_to_repaired", "docker kill -> repaired, GetApp 1/1"),
                       ("rm_to_shown", "docker rm -f, port taken -> GetApp 0")):  # fmt: skip
        f = fresh[key]
        lines.append(
            f"{label:<40}{f['p50_ms']:>8.0f} ms median{f['max_ms']:>8.0f} ms max"
            f"  ({fresh['rounds']} times, target <= {FRESH_TARGET * 1000:.0f} ms)"
        )
    mem = figures["memory"]
    lines.append(
        f"memory: {mem['large_kib'] / 1024:.1f} MiB with {n} apps, "
        f"{mem['small_kib'] / 1024:.1f} MiB with {SMALL_APPS}: {mem['bytes_per_app']} bytes per app"
    )
    return "\n".join(lines)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--window", type=int, default=2, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=3, help="windows per server and call")
    parser.add_argument("--apps", type=int, default=10_000)
    ns = parser.parse_args()
    figures = measure(ns.window, ns.rounds, ns.apps)
    print(table(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""(g) The router: how soon a route follows a port move, and what following costs the proxy.

Miasma runs with ``--router caddy`` (container runtime, real engine) and one
app, ``web`` (busybox httpd answering ``gen N``, N from its env), routed at
``web.localhost``.

Switch delay: each round moves web's published port to a new free one and
sets ``GEN`` to the round, in one EditApp. A watcher of WatchPortEvents notes
when the round's ROLLOUT_APPLIED arrives; a prober sends ``GET /`` through the
router back to back on one keep-alive connection and notes when each request
was sent and which generation answered. The delay of a round runs from the
applied event to the sending of the first request the new container answered
(the router switches at the applied event, never before; Caddy asks the
server's DNS answers again every 200 ms). p50 and p99 over the rounds.

Throughput: h2load (``--h1``, HTTP/1.1 keep-alive, 16 connections) for
``--seconds`` windows, alternating, against Miasma's router (a route whose
upstream Caddy looks up in the server's DNS answers) and against a second
Caddy of the same binary configured by hand: one static route to the same
app's published port. Ratio = routed / static requests per second; p99 of
each from h2load's per-request log.

    python -m bench.routing [--rounds 20] [--seconds 5] [--windows 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from miasma.v1 import apps_pb2, apps_pb2_grpc

from bench.harness import Workdir, docker_host, free_port, percentile, summary, wait_ready
from bench.reads import ensure_h2load
from scripts.engine import ensure_caddy, ensure_test_image

HOST = "web.localhost"
SERVE = 'echo "gen ${GEN:-0}" > /tmp/index.html; exec httpd -f -p $PORT -h /tmp'
CONNECTIONS = 16


def static_caddy(work: Workdir, caddy: str, port: int, upstream: int) -> subprocess.Popen[bytes]:
    """A Caddy configured by hand: ``HOST`` on 127.0.0.1:``port`` to ``upstream``."""
    config = {
        "admin": {"disabled": True},
        "storage": {"module": "file_system", "root": str(work.path / "static-caddy")},
        "apps": {"http": {"servers": {"static": {
            "listen": [f"127.0.0.1:{port}"],
            "automatic_https": {"disable": True},
            "routes": [{
                "match": [{"host": [HOST]}],
                "handle": [{"handler": "reverse_proxy",
                            "upstreams": [{"dial": f"127.0.0.1:{upstream}"}]}],
            }],
        }}}},
    }  # fmt: skip
    path = work.path / "static-caddy.json"
    path.write_text(json.dumps(config))
    env = {"HOME": str(work.path), "XDG_DATA_HOME": str(work.path / "xdg")}
    with (work.path / "static-caddy.log").open("ab") as log:
        return subprocess.Popen([caddy, "run", "--config", str(path)], cwd=work.path, env=env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


def h2load_h1(port: int, seconds: int, log: Path) -> dict[str, float]:
    """One window of HTTP/1.1 GETs of ``HOST`` on ``port``: requests/s, p50 and p99 (ms);
    fails unless every request got a 2xx."""
    args = ["h2load", "--h1", "-c", str(CONNECTIONS), "-D", str(seconds), "-H",
            f":authority: {HOST}", "--log-file", str(log), f"http://127.0.0.1:{port}/"]  # fmt: skip
    log.unlink(missing_ok=True)
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if not (counts and codes and rate) or int(codes[1]) < int(counts[2]) or not int(codes[1]):
        raise RuntimeError(f"h2load on {port}: not every request got a 2xx:\n{out}")
    micros = [int(line.split("\t")[2]) for line in log.read_text().splitlines()]
    return {
        "requests": int(counts[1]),
        "per_s": float(rate[1]),
        "p50_ms": round(percentile(micros, 0.5) / 1000, 3),
        "p99_ms": round(percentile(micros, 0.99) / 1000, 3),
    }


class Prober:
    """GETs through the router back to back: (sent, generation) of each answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[float, int]] = []
        self.failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        try:
            while not stop.is_set():
                sent = time.monotonic()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore[index]
                body = await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200"):
                    self.answers.append((sent, int(body.split()[1])))
                else:
                    self.failures += 1
        finally:
            writer.close()


async def switch_delays(stub: Any, router_port: int, rounds: int) -> tuple[list[float], int]:
    """Seconds from each round's applied event to the first request the new container
    answered; and the requests that failed meanwhile."""
    applied: dict[int, float] = {}
    start = (await stub.ListApps(apps_pb2.ListAppsRequest())).revision

    async def watch() -> None:
        request = apps_pb2.WatchPortEventsRequest(name="apps/web", start_revision=start)
        async for item in stub.WatchPortEvents(request):
            if item.event.kind == apps_pb2.PORT_EVENT_KIND_ROLLOUT_APPLIED:
                applied[len(applied) + 1] = time.monotonic()

    prober, stop = Prober(router_port), asyncio.Event()
    tasks = [asyncio.create_task(watch()), asyncio.create_task(prober.run(stop))]
    port = (await stub.GetApp(apps_pb2.GetAppRequest(name="apps/web"))).app.bindings[0]
    old = port.published_port
    for generation in range(1, rounds + 1):
        new = free_port()
        await stub.EditApp(apps_pb2.EditAppRequest(
            name="apps/web", add_published_ports=[apps_pb2.Port(number=new)],
            remove_published_ports=[apps_pb2.Port(number=old)], set_env={"GEN": str(generation)},
        ))  # fmt: skip
        old = new
        await asyncio.sleep(1.0)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    delays = []
    for generation, when in applied.items():
        first = min((sent for sent, gen in prober.answers if gen >= generation), default=None)
        if first is not None:
            delays.append(max(0.0, first - when))
    return delays, prober.failures


async def run(
    work: Workdir, host: str, image: str, caddy: str, ns: argparse.Namespace
) -> dict[str, Any]:
    """(g) on a server of ``work`` over the engine at ``host``."""
    router_port, static_port = free_port(), free_port()
    miasma = work.miasma("routing", host, "--router", "caddy", "--caddy", caddy,
                         "--router-http", f"127.0.0.1:{router_port}",
                         "--router-https", f"127.0.0.1:{free_port()}")  # fmt: skip
    await miasma.wait_serving()
    async with miasma.channel() as channel:
        stub = apps_pb2_grpc.AppServiceStub(channel)
        await stub.CreateApp(apps_pb2.CreateAppRequest(app_id="web", app=apps_pb2.App(
            image=image, command=["sh", "-c", SERVE], routes=[apps_pb2.Route(host=HOST)],
        )))  # fmt: skip

        async def routed() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", router_port)
            writer.write(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            answer = await reader.read()
            writer.close()
            if not answer.startswith(b"HTTP/1.1 200"):
                raise ConnectionError("not routed yet")

        await wait_ready(routed)
        delays, failures = await switch_delays(stub, router_port, ns.rounds)
        upstream = (await stub.GetApp(apps_pb2.GetAppRequest(name="apps/web"))).app
        static = static_caddy(work, caddy, static_port, upstream.bindings[0].published_port)
        try:
            await asyncio.sleep(1.0)
            windows: dict[str, list[dict[str, float]]] = {"routed": [], "static": []}
            for window in range(ns.windows):
                order = ("routed", "static") if window % 2 == 0 else ("static", "routed")
                for side in order:
                    port = router_port if side == "routed" else static_port
                    log = work.path / f"h2load-{side}.log"
                    windows[side].append(await asyncio.to_thread(h2load_h1, port, ns.seconds, log))
        finally:
            static.terminate()
            static.wait(10)
        await stub.DeleteApp(apps_pb2.DeleteAppRequest(name="apps/web"))
    best = {side: max(w, key=lambda x: x["per_s"]) for side, w in windows.items()}
    return {
        "rounds": ns.rounds,
        "switch": summary(delays)
        | {
            "p99_ms": round(1000 * percentile(delays, 0.99), 3),
            "rounds_seen": len(delays),
        },
        "failed_requests": failures,
        "routed": best["routed"],
        "static": best["static"],
        "throughput_ratio": round(best["routed"]["per_s"] / best["static"]["per_s"], 3),
        "p99_ratio": round(best["routed"]["p99_ms"] / best["static"]["p99_ms"], 3),
        "windows": windows,
        "switch_ms": [round(d * 1000, 1) for d in delays],
    }


def measure(rounds: int = 20, seconds: int = 5, windows: int = 3) -> dict[str, Any]:
    """Run (g); its figures."""
    ensure_h2load()
    caddy = ensure_caddy()
    host = docker_host()
    image = ensure_test_image(host)
    ns = argparse.Namespace(rounds=rounds, seconds=seconds, windows=windows)
    with Workdir() as work:
        return asyncio.run(run(work, host, image, caddy, ns))


def table(figures: dict[str, Any]) -> str:
    """Text table of (g)."""
    s, r, st = figures["switch"], figures["routed"], figures["static"]
    return "\n".join([
        f"(g) route switch: applied event -> first request on the new container "
        f"({s['rounds_seen']} of {figures['rounds']} port moves); proxy throughput, "
        f"h2load --h1 x{CONNECTIONS}",
        f"switch delay   median {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms; "
        f"failed requests {figures['failed_requests']}",
        f"{'':>22}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}",
        f"{'routed (follows events)':>22}{r['per_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}",
        f"{'static (by hand)':>22}{st['per_s']:>10.0f}{st['p50_ms']:>9.2f}{st['p99_ms']:>9.2f}",
        f"ratio routed/static: throughput {figures['throughput_ratio']:.2f}x, "
        f"p99 {figures['p99_ratio']:.2f}x",
    ])  # fmt: skip


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--windows", type=int, default=3)
    ns = parser.parse_args()
    figures = measure(ns.rounds, ns.seconds, ns.windows)
    print(table(figures))
    print(json.dumps(figures), file=sys.stderr)


if __name__ == "__main__":
    main()

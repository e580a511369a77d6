"""(e) Cold start: seconds from process start to health SERVING with 10,000 apps.

A server is started on a database of 10,000 apps (``--db``, e.g. the one
``bench.scale --keep`` leaves; else one is populated here with
``bench.scale.populate``) and timed from ``Popen`` to the first SERVING
health reply (which needs a Docker ping), then stopped with SIGTERM; the
same is done on a database of 10 apps, alternating, ``--runs`` times each.
Reported: median seconds of both, their ratio, the target (10,000 apps
within 2 s) and the server's RSS once SERVING.

Health is polled every 5 ms on a channel that retries connecting every
10-20 ms (``Server.wait_serving``).

One more run (not timed for start-up) watches the reconciler's first pass,
which starts once Docker answers and makes one Docker call per app: the
server talks to Docker through a proxy here that notes every container
listing; the pass has ended when the listing of all Miasma containers (the
orphan sweep that closes a pass) goes by. Meanwhile one client toggles an
app's published port (``EditPorts``, one call every 20 ms) to see whether
the pass slows calls, and the server's CPU time during the pass is read.

    python -m bench.cold_start [--db PATH] [--small-db PATH] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from miasma.v1 import apps_pb2, apps_pb2_grpc

from bench.harness import Server, Workdir, cpu_seconds, docker_host, rss_kib
from bench.scale import BASELINE_APPS, FLAGS, PIN_PORT, populate

TARGET_S = 2.0
AFTER_PASS_S = 2.0  # how long to keep probing once the pass is over
PROBE_GAP_S = 0.02  # between probe calls, so that they add little to the pass's CPU


class DockerTap:
    """A unix-socket proxy in front of the engine that notes container listings."""

    def __init__(self, engine: Path, path: Path) -> None:
        self.engine, self.path = engine, path
        self.per_app = 0  # listings of one app's containers (one per converged app)
        self.pass_done = asyncio.Event()
        self.done_at = 0.0
        self._open: dict[asyncio.Task[Any], list[asyncio.StreamWriter]] = {}

    async def __aenter__(self) -> DockerTap:
        self._server = await asyncio.start_unix_server(self._connection, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for writers in self._open.values():
            for writer in writers:
                writer.close()  # both pipes of the connection see EOF and end
        await asyncio.gather(*self._open, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = [writer]
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.engine)
            self._open[task].append(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer, True), self._pipe(up_reader, writer))
        finally:
            del self._open[task]

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, note: bool = False
    ) -> None:
        try:
            while data := await src.read(65536):
                if note:
                    self._note(unquote(data.split(b"\r\n", 1)[0].decode("latin-1")))
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    def _note(self, request_line: str) -> None:
        if not request_line.startswith("GET ") or "/containers/json" not in request_line:
            return
        if "io.miasma.app=" in request_line:
            self.per_app += 1
        elif not self.pass_done.is_set():
            self.done_at = time.perf_counter()
            self.pass_done.set()


async def watch_first_pass(server: Server, tap: DockerTap, app: str) -> dict[str, Any]:
    """Start ``server``; time its first pass, toggling ``app``'s port during and after it."""
    server.start()
    serving_at = server.started + await server.wait_serving()
    cpu_at_serving = cpu_seconds(server.pid)
    port = apps_pb2.Port(number=PIN_PORT)
    requests = (
        apps_pb2.EditPortsRequest(name=f"apps/{app}", add_published_ports=[port]),
        apps_pb2.EditPortsRequest(name=f"apps/{app}", remove_published_ports=[port]),
    )
    during: list[float] = []
    after: list[float] = []
    pass_cpu = 0.0
    async with server.channel() as channel, asyncio.timeout(600):
        stub, n = apps_pb2_grpc.AppServiceStub(channel), 0
        while not tap.pass_done.is_set() or time.perf_counter() < tap.done_at + AFTER_PASS_S:
            sent = time.perf_counter()
            await stub.EditPorts(requests[n % 2])
            if not tap.pass_done.is_set():
                during.append(time.perf_counter() - sent)
                pass_cpu = cpu_seconds(server.pid) - cpu_at_serving
            else:
                after.append(time.perf_counter() - sent)
            n += 1
            await asyncio.sleep(PROBE_GAP_S)
    figures = {
        "pass_s": round(tap.done_at - serving_at, 2),
        "pass_cpu_s": round(pass_cpu, 2),  # the server's, probe calls (~1 in 20 ms) included
        "docker_listings": tap.per_app,
        "edit_p50_ms_during": round(1000 * statistics.median(during), 3) if during else None,
        "edit_p50_ms_after": round(1000 * statistics.median(after), 3) if after else None,
        "rss_kib_after_pass": rss_kib(server.pid),
    }
    server.stop()
    return figures


def contents(db: Path) -> tuple[int, str]:
    """How many apps ``db`` holds, and the first one's name (read-only)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        count, first = conn.execute("SELECT count(*), min(name) FROM apps").fetchone()
    return int(count), str(first)


def populated(work: Workdir, name: str, apps: int) -> Path:
    """A new database of ``apps`` apps (see ``bench.scale.populate``)."""
    server = work.miasma(name, docker_host(), *FLAGS)
    seconds = asyncio.run(populate(server, apps))
    print(f"populated {apps} apps in {seconds:.1f} s", file=sys.stderr)
    server.stop()
    return work.path / f"{name}.db"


def cold_start(server: Server) -> tuple[float, int]:
    """Start ``server``: seconds until SERVING and RSS (KiB) then; stop it."""
    server.start()
    try:
        return asyncio.run(server.wait_serving()), rss_kib(server.pid)
    finally:
        server.stop()


def measure(
    db: Path | None = None, small_db: Path | None = None, runs: int = 3, apps: int = 10_000
) -> dict[str, Any]:
    """Alternate cold starts on both databases, then watch one first pass."""
    with Workdir() as work:
        engine = docker_host()
        db = db or populated(work, "large-seed", apps)
        small_db = small_db or populated(work, "small-seed", BASELINE_APPS)
        servers = {
            "large": work.miasma("large", engine, *FLAGS, db=db, start=False),
            "small": work.miasma("small", engine, *FLAGS, db=small_db, start=False),
        }
        found: dict[str, list[tuple[float, int]]] = {"large": [], "small": []}
        for r in range(runs):
            for key in ("large", "small") if r % 2 == 0 else ("small", "large"):
                found[key].append(cold_start(servers[key]))
        count, first = contents(db)
        figures: dict[str, Any] = {
            "apps": count, "baseline_apps": contents(small_db)[0],
            "runs": runs, "target_s": TARGET_S,
        }  # fmt: skip
        for key, results in found.items():
            figures[key] = {
                "serving_s": round(statistics.median(s for s, _ in results), 3),
                "all_s": [round(s, 3) for s, _ in results],
                "rss_kib": max(k for _, k in results),
            }
        figures["ratio"] = round(figures["large"]["serving_s"] / figures["small"]["serving_s"], 3)
        figures["first_pass"] = None
        if engine.startswith("unix://"):
            tap_path = work.path / "docker.sock"
            traced = work.miasma("traced", f"unix://{tap_path}", *FLAGS, db=db, start=False)

            async def traced_run() -> dict[str, Any]:
                async with DockerTap(Path(engine.removeprefix("unix://")), tap_path) as tap:
                    return await watch_first_pass(traced, tap, first)

            figures["first_pass"] = asyncio.run(traced_run())
    return figures


def table(figures: dict[str, Any]) -> str:
    """Text table of (e)."""
    large, small = figures["large"], figures["small"]
    lines = [
        f"(e) cold start to health SERVING, median of {figures['runs']}",
        f"{'apps':>8}{'serving s':>11}{'RSS MiB':>9}  runs (s)",
    ]
    for key in ("apps", "baseline_apps"):
        row = large if key == "apps" else small
        lines.append(
            f"{figures[key]:>8}{row['serving_s']:>11.3f}{row['rss_kib'] / 1024:>9.1f}  "
            + " ".join(f"{s:.3f}" for s in row["all_s"])
        )
    lines.append(
        f"ratio {figures['ratio']:.2f}; "
        f"target: {figures['apps']} apps serving within {figures['target_s']} s"
    )
    if first := figures["first_pass"]:
        lines.append(
            f"first reconcile pass: ends {first['pass_s']} s after SERVING "
            f"({first['pass_cpu_s']} s of server CPU, {first['docker_listings']} Docker "
            f"listings); EditPorts p50 {first['edit_p50_ms_during']} ms during it, "
            f"{first['edit_p50_ms_after']} ms after; RSS after it "
            f"{first['rss_kib_after_pass'] / 1024:.1f} MiB"
        )
    return "\n".join(lines)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", type=Path, help="database of 10,000 apps (else populated)")
    parser.add_argument("--small-db", type=Path, help="database of 10 apps (else populated)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--apps", type=int, default=10_000, help="apps to populate without --db")
    ns = parser.parse_args()
    figures = measure(ns.db, ns.small_db, ns.runs, ns.apps)
    print(table(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

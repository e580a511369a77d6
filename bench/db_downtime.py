"""(f) Database downtime: a port edit of a running PostgreSQL against raw Docker's same work.

Miasma (container runtime, real engine) runs one app, ``pg``, from the
PostgreSQL 15 test image (``scripts/postgres-image.sh``) with target port
5432 on an explicit published port. The image declares a ``VOLUME``, so the
app has a writable volume of its own and an edit is rolled out stop-first:
the old container is stopped (SIGINT, postgres' fast shutdown; 10 s before a
kill), then the new one is created and started on the same volume, and the
``EditPorts`` returns once the new container accepts TCP connections on
5432 at its own address (probed every 20 ms) and the old one is removed.

Each round moves the app to a new free published port (no overlap with the
old one: the volume alone decides the order). A writer inserts one row per
statement, in autocommit: on the old port from one connection, opened again
after an error, 5 ms between statements, until the new port has taken a row;
on the new port one attempt at a time, 5 ms apart (each a new connection,
given 1 s to connect, that inserts one row). The downtime runs from the last
acknowledged INSERT on the old port to the first on the new, while the edit
may still be in flight (``edit ms``: until it returned). After each move,
every acknowledged row must be in the database: rows lost = acknowledged -
present (a row committed whose acknowledgement died with its connection
counts neither way).

The baseline, interleaved round by round (the side that goes first
alternates), does the same work with aiodocker directly on the same engine:
a container of the same image and configuration (env, stop timeout, restart
policy, binding on 127.0.0.1 to a free port, a bridge network of its own, a
named volume of its own created by its first container) and, each round, the
same writer while it stops the container (the same stop call: the image's
SIGINT, t=10), creates and starts a new one on the same volume and a new
free port, waits for it by Miasma's readiness rule (inspect, then a TCP
connect to its address on 5432, every 20 ms) and removes the old one.
Both databases are made, and each side is moved once (``warmup``), before the
timed rounds; rows are checked on every move. Ratio = median Miasma /
median baseline downtime; target <= 1.1, with no row lost in Miasma's edits.

When the new port is first tried (``--probe``), as in ``bench.serving``:
``started`` (default) once Docker's event stream reports the new container
started; ``early`` as soon as the move begins. Docker's userland proxy
accepts on the new port before the container's interface is up, so an early
attempt makes the kernel resolve an address nobody answers yet, and every
connection to it, Miasma's readiness probe included, then waits for the
neighbour retry (1 s by default): ``early`` mostly measures that timer, on
both sides.

    python -m bench.db_downtime [--rounds 10] [--warmup 1] [--probe started|early]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiodocker
import psycopg
from aiodocker.containers import DockerContainer
from miasma.v1 import apps_pb2, apps_pb2_grpc

from bench.harness import Server, Workdir, docker_host, free_port, summary, wait_ready
from bench.serving import Starts
from miasma_grpc.runtime.base import LABEL_MANAGED
from miasma_grpc.runtime.containers import READY_POLL, accepts  # the readiness rule itself
from scripts.engine import ensure_postgres_image

TARGET_RATIO = 1.1
PG_PORT = 5432
PGDATA = "/var/lib/postgresql/data"  # the image's VOLUME
STOP_GRACE_S = 10  # Miasma's default stop_grace, as `docker stop`
READY_TIMEOUT_S = 10.0  # Miasma's --ready-timeout (its default), the baseline's too
WRITE_PAUSE_S = 0.005  # between INSERTs on the old port, between attempts on the new
ATTEMPT_TIMEOUT_S = 1.0  # one connection attempt
QUERY_TIMEOUT_S = 2.0  # one INSERT
LEAD_S = 0.2  # rows written on the old port before the move starts
START_TIMEOUT_S = 120.0  # a new database (initdb) answering
ROUND_TIMEOUT_S = 60.0
CLEANUP_PASSES = 5  # 1 s apart
APP = "pg"
INSTANCE = f"bench{os.getpid()}db"  # Miasma's instance (labels, network, volume)
LABEL = "io.miasma.bench"  # on everything the baseline creates, = BENCH_ID
BENCH_ID = f"db-downtime-{os.getpid()}"
INSERT = "INSERT INTO rows (n) VALUES (%s)"

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def connect(port: int) -> Conn | None:
    """One autocommit connection to postgres on 127.0.0.1:``port``; None if it fails."""
    try:
        async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
            return await psycopg.AsyncConnection.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                autocommit=True, connect_timeout=2,
            )  # fmt: skip
    except (psycopg.Error, OSError, TimeoutError):
        return None


async def close(conn: Conn) -> None:
    """Close ``conn``, whatever state it is in."""
    with contextlib.suppress(psycopg.Error, OSError):
        await conn.close()


async def wait_connect(port: int, limit: float = START_TIMEOUT_S) -> Conn:
    """A connection to ``port`` once postgres answers there (a new one runs initdb first)."""
    async with asyncio.timeout(limit):
        while True:
            if (conn := await connect(port)) is not None:
                return conn
            await asyncio.sleep(0.1)


@dataclass
class Move:
    """One port move as a client sees it: rows on the old port, then on the new."""

    numbers: Iterator[int]  # the rows' keys, unique in the database
    acked: list[int] = field(default_factory=list)
    last_old: float = 0.0  # perf_counter at the last acknowledged INSERT on the old port
    first_new: float = 0.0  # ... at the first on the new port
    writing: asyncio.Event = field(default_factory=asyncio.Event)  # the old port took a row
    moved: asyncio.Event = field(default_factory=asyncio.Event)  # the new port took a row

    async def insert(self, conn: Conn) -> bool:
        """One row in its own transaction: True when acknowledged."""
        n = next(self.numbers)
        try:
            async with asyncio.timeout(QUERY_TIMEOUT_S):
                await conn.execute(INSERT, (n,))
        except (psycopg.Error, OSError, TimeoutError):
            return False
        self.acked.append(n)
        return True

    async def old(self, port: int) -> None:
        """Insert on ``port`` until the new port took a row, connecting again after errors."""
        conn: Conn | None = None
        try:
            while not self.moved.is_set():
                if conn is None:
                    conn = await connect(port)
                if conn is not None:
                    if await self.insert(conn):
                        self.last_old = time.perf_counter()
                        self.writing.set()
                    else:
                        await close(conn)
                        conn = None
                await asyncio.sleep(WRITE_PAUSE_S)
        finally:
            if conn is not None:
                await close(conn)

    async def new(self, port: int, started: Awaitable[None]) -> None:
        """Once ``started``, connect to ``port`` until one connection has a row acknowledged."""
        await started
        while True:
            conn = await connect(port)
            if conn is not None:
                try:
                    if await self.insert(conn):
                        self.first_new = time.perf_counter()
                        self.moved.set()
                        return
                finally:
                    await close(conn)
            await asyncio.sleep(WRITE_PAUSE_S)


@dataclass
class Side:
    """One database (Miasma's app or the baseline's container) and what it acknowledged."""

    name: str
    port: int
    move: Callable[[int], Coroutine[Any, Any, None]]  # to a new published port
    label: tuple[str, str]  # on its containers: their start events
    numbers: Iterator[int] = field(default_factory=itertools.count)
    downtime_s: list[float] = field(default_factory=list)
    action_s: list[float] = field(default_factory=list)  # edit sent -> edit returned
    acked: int = 0
    lost: int = 0
    moves: int = 0


async def run_move(side: Side, starts: Starts, timed: bool) -> None:
    """Move ``side`` to a new port while writing; record the downtime and check the rows."""
    new = free_port()
    move = Move(side.numbers)
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(move.old(side.port))]
    try:
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            await move.writing.wait()
            await asyncio.sleep(LEAD_S)
            start = time.perf_counter()
            action = asyncio.create_task(side.move(new))
            started = starts.wait(*side.label)
            tasks += [action, asyncio.create_task(move.new(new, started))]
            done, _ = await asyncio.wait(tasks[1:], return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises if the move failed
            await asyncio.gather(*tasks)
            action_s = time.perf_counter() - start
    finally:
        move.moved.set()  # stops the writers if the move failed
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    side.port = new
    present = await count_present(new, move.acked)
    side.moves += 1
    side.acked += len(move.acked)
    side.lost += len(move.acked) - present
    if timed:
        side.downtime_s.append(move.first_new - move.last_old)
        side.action_s.append(action_s)


async def count_present(port: int, keys: list[int]) -> int:
    """How many of the rows ``keys`` the database on ``port`` has."""
    conn = await wait_connect(port, ROUND_TIMEOUT_S)
    try:
        cur = await conn.execute("SELECT count(*) FROM rows WHERE n = ANY(%s)", (keys,))
        row = await cur.fetchone()
    finally:
        await close(conn)
    assert row is not None
    return int(row[0])


async def create_table(port: int) -> None:
    """Wait for the new database on ``port``; create the table of rows."""
    conn = await wait_connect(port)
    try:
        await conn.execute("CREATE TABLE rows (n bigint PRIMARY KEY)")
    finally:
        await close(conn)


async def miasma_side(stub: apps_pb2_grpc.AppServiceAsyncStub, image: str) -> Side:
    """Create the app on a free published port; its side, once its table exists."""
    port = free_port()
    request = apps_pb2.CreateAppRequest(
        app_id=APP,
        app=apps_pb2.App(image=image),
        published_ports=[apps_pb2.Port(number=port)],
        target_ports=[apps_pb2.Port(number=PG_PORT)],
    )
    await stub.CreateApp(request, timeout=ROUND_TIMEOUT_S)
    side = Side("miasma", port, lambda new: edit(stub, side, new), (LABEL_MANAGED, INSTANCE))
    await create_table(port)
    return side


async def edit(stub: apps_pb2_grpc.AppServiceAsyncStub, side: Side, new: int) -> None:
    """``EditPorts``: published port ``side.port`` -> ``new``."""
    request = apps_pb2.EditPortsRequest(
        name=f"apps/{APP}",
        add_published_ports=[apps_pb2.Port(number=new)],
        remove_published_ports=[apps_pb2.Port(number=side.port)],
    )
    reply = await stub.EditPorts(request, timeout=ROUND_TIMEOUT_S)
    assert [b.published_port for b in reply.app.bindings] == [new], reply


class Baseline:
    """The same database run with aiodocker directly: stop, create, start, wait, remove."""

    def __init__(self, docker: aiodocker.Docker, image: str) -> None:
        self.docker = docker
        self.image = image
        self.container: DockerContainer | None = None

    def config(self, port: int) -> dict[str, Any]:
        """What Miasma's ``_container_config`` gives the app, with the baseline's labels."""
        key = f"{PG_PORT}/tcp"
        return {
            "Image": self.image,
            "Env": [f"PORT={PG_PORT}", f"PORT_1={PG_PORT}"],
            "Labels": {LABEL: BENCH_ID},
            "ExposedPorts": {key: {}},
            "HostConfig": {
                "PortBindings": {key: [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
                "RestartPolicy": {"Name": "unless-stopped"},
                "Mounts": [
                    {
                        "Type": "volume",
                        "Source": f"{BENCH_ID}-data",
                        "Target": PGDATA,
                        "ReadOnly": False,
                        "VolumeOptions": {"Labels": {LABEL: BENCH_ID}},
                    }
                ],
            },
            "StopTimeout": STOP_GRACE_S,
            "NetworkingConfig": {"EndpointsConfig": {BENCH_ID: {"Aliases": [APP]}}},
        }

    async def start(self, port: int) -> DockerContainer:
        """Create and start a container published on ``port``."""
        config = self.config(port)
        container = await self.docker.containers.create(config, name=f"{BENCH_ID}-{port}")
        await container.start()
        return container

    async def side(self) -> Side:
        """The network and the first container; its side, once its table exists."""
        await self.docker.networks.create(
            {"Name": BENCH_ID, "Driver": "bridge", "Labels": {LABEL: BENCH_ID}}
        )
        port = free_port()
        self.container = await self.start(port)
        await create_table(port)
        return Side("baseline", port, self.move, (LABEL, BENCH_ID))

    async def move(self, new: int) -> None:
        """Miasma's stop-first replacement, done by hand."""
        old = self.container
        assert old is not None
        await old.stop(t=STOP_GRACE_S)
        self.container = await self.start(new)
        await self.wait_ready(self.container)
        await old.delete(force=True)  # not its volume

    async def wait_ready(self, container: DockerContainer) -> None:
        """Miasma's ``_wait_ready``: inspect, then probe the address, every 20 ms."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_TIMEOUT_S):
                while True:
                    shown = await container.show()
                    if shown["State"].get("Status") != "running":
                        raise RuntimeError(f"the new container stopped: {shown['State']}")
                    endpoint = shown["NetworkSettings"]["Networks"].get(BENCH_ID) or {}
                    address = endpoint.get("IPAddress")
                    if address and await accepts(address, PG_PORT):
                        return
                    await asyncio.sleep(READY_POLL)


async def run(
    miasma: Server, host: str, image: str, rounds: int, warmup: int, early: bool
) -> list[Side]:
    """Make both databases, then alternate the moves of the two sides."""
    async with aiodocker.Docker(url=host) as docker, miasma.channel() as channel:
        starts = Starts(docker, early)
        stub = apps_pb2_grpc.AppServiceStub(channel)
        await wait_ready(lambda: stub.GetServerInfo(apps_pb2.GetServerInfoRequest()))
        sides = [await miasma_side(stub, image), await Baseline(docker, image).side()]
        for n in range(warmup + rounds):
            for side in sides if n % 2 == 0 else sides[::-1]:
                await run_move(side, starts, timed=n >= warmup)
        await stub.DeleteApp(
            apps_pb2.DeleteAppRequest(name=f"apps/{APP}", delete_volumes=True),
            timeout=ROUND_TIMEOUT_S,
        )
    return sides


async def remove_all(host: str) -> None:
    """Remove the containers, networks and volumes of this run: the baseline's and Miasma's.

    A removal Docker is still doing (a move cut short) fails: tried again, a few times.
    """
    async with aiodocker.Docker(url=host) as docker:
        for attempt in range(CLEANUP_PASSES):
            failed: list[str] = []
            for key, value in ((LABEL, BENCH_ID), (LABEL_MANAGED, INSTANCE)):
                labelled = {"label": [f"{key}={value}"]}
                for container in await docker.containers.list(
                    all=True, filters=json.dumps(labelled)
                ):
                    await removed(container.delete(force=True), failed)
                for network in await docker.networks.list(filters=labelled):
                    await removed((await docker.networks.get(network["Id"])).delete(), failed)
                listed = await docker.volumes.list(filters=labelled)  # type: ignore[no-untyped-call]
                for volume in listed.get("Volumes") or []:
                    get = docker.volumes.get(volume["Name"])  # type: ignore[no-untyped-call]
                    await removed((await get).delete(), failed)
            if not failed:
                return
            if attempt < CLEANUP_PASSES - 1:
                await asyncio.sleep(1)
        raise RuntimeError(f"left on {host}: {'; '.join(failed)}")


async def removed(deletion: Awaitable[object], failed: list[str]) -> None:
    """Await one deletion; its error goes to ``failed`` (gone already is no error)."""
    try:
        await deletion
    except aiodocker.DockerError as exc:
        if exc.status != 404:
            failed.append(str(exc))


def side_figures(side: Side) -> dict[str, Any]:
    """Downtime percentiles, the worst, the edit's own time and the rows of one side."""
    return {
        **summary(side.downtime_s),
        "max_ms": round(1000 * max(side.downtime_s), 1),
        "action_p50_ms": summary(side.action_s)["p50_ms"],
        "moves": side.moves,
        "rows_acked": side.acked,
        "rows_lost": side.lost,
        "downtime_ms": [round(1000 * s, 1) for s in side.downtime_s],
    }


def measure(rounds: int = 10, warmup: int = 1, probe: str = "started") -> dict[str, Any]:
    """Run ``rounds`` interleaved rounds (after ``warmup``); figures with the ratio."""
    host = docker_host()
    image = ensure_postgres_image(host)
    try:
        with Workdir() as work:
            miasma = work.miasma(
                APP, host, "--instance", INSTANCE, "--ready-timeout", str(READY_TIMEOUT_S)
            )
            ours, base = asyncio.run(run(miasma, host, image, rounds, warmup, probe == "early"))
    finally:
        asyncio.run(remove_all(host))
    m, b = side_figures(ours), side_figures(base)
    return {
        "rounds": rounds,
        "warmup": warmup,
        "probe": probe,
        "miasma": m,
        "baseline": b,
        "ratio": round(m["p50_ms"] / b["p50_ms"], 3),
        "target_ratio": TARGET_RATIO,
        "rows_lost": m["rows_lost"],  # by Miasma's edits (the baseline's are in its figures)
    }


def table(figures: dict[str, Any]) -> str:
    """Text table of (f)."""
    m, b = figures["miasma"], figures["baseline"]
    lost = figures["rows_lost"]
    met = figures["ratio"] <= TARGET_RATIO and lost == 0
    return "\n".join(
        [
            "(f) Postgres downtime of a port edit (last INSERT on the old port to the first on"
            f" the new) vs raw aiodocker stop-create-start ({figures['rounds']} rounds, probe"
            f" {figures['probe']})",
            f"{'':>10}{'median ms':>11}{'p90 ms':>9}{'max ms':>9}{'edit ms':>9}"
            f"{'rows acked':>12}{'lost':>6}",
            *(
                f"{name:>10}{s['p50_ms']:>11.0f}{s['p90_ms']:>9.0f}{s['max_ms']:>9.0f}"
                f"{s['action_p50_ms']:>9.0f}{s['rows_acked']:>12}{s['rows_lost']:>6}"
                for name, s in (("miasma", m), ("baseline", b))
            ),
            f"ratio {figures['ratio']:.2f} (target <= {TARGET_RATIO}), rows lost in Miasma's"
            f" {m['moves']} edits {lost} (target 0): {'met' if met else 'NOT met'}",
        ]
    )


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--probe", choices=("started", "early"), default="started")
    ns = parser.parse_args()
    figures = measure(ns.rounds, ns.warmup, ns.probe)
    print(table(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""What every benchmark needs: servers as real processes, a Docker engine, percentiles.

Servers run as separate processes on loopback, started exactly as a user
starts them (``python -m miasma_grpc``), each on its own SQLite file in a
temporary folder; the baseline (``bench.baseline``) runs beside them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts import engine

ENGINE_DIR = Path(os.environ.get("MIASMA_ENGINE_DIR", "/tmp/miasma-engine"))
SERVING = health_pb2.HealthCheckResponse.SERVING
# gRPC's default reconnect backoff (1 s, then x1.6) would round a start-up time
# up to the next retry: poll a server that is coming up every 10-20 ms instead.
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 10),
    ("grpc.min_reconnect_backoff_ms", 10),
    ("grpc.max_reconnect_backoff_ms", 20),
)


def docker_host() -> str:
    """The engine `make run` would use: the environment's, or the private one (started)."""
    return os.environ.get("MIASMA_DOCKER_HOST") or engine.ensure_engine(ENGINE_DIR)


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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(seconds: Sequence[float]) -> dict[str, float]:
    """How many, the median and the 90th percentile (ms) of durations in seconds."""
    return {
        "calls": len(seconds),
        "p50_ms": round(1000 * statistics.median(seconds), 3),
        "p90_ms": round(1000 * percentile(seconds, 0.90), 3),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def clean_env() -> dict[str, str]:
    """The environment without MIASMA_* settings, so only the flags given apply."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}


@dataclass
class Server:
    """A server process on loopback (Miasma or the baseline)."""

    args: list[str]
    address: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    def start(self) -> None:
        """Start the process (without waiting for it to answer)."""
        with self.log_path.open("ab") as log:
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=clean_env()
            )

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM, then wait (SIGKILL if it does not end)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def channel(self) -> grpc.aio.Channel:
        """A new channel to the server (reconnecting fast while it comes up)."""
        return grpc.aio.insecure_channel(self.address, options=FAST_RECONNECT)

    async def wait_serving(self, limit: float = 60) -> float:
        """Poll health until SERVING; seconds from :meth:`start` to the first SERVING."""
        async with self.channel() as channel, asyncio.timeout(limit):
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"server exited; see {self.log_path}")
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == SERVING:
                        return time.perf_counter() - self.started
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.005)


@dataclass
class Workdir:
    """A temporary folder for databases and logs, used as ``with Workdir() as work:``.

    On exit the servers started here are stopped and the folder is removed,
    unless ``keep`` is set or an error is on its way out (then its path is
    printed: the servers' logs are in it).
    """

    keep: bool = False
    path: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="miasma-bench-")))
    servers: list[Server] = field(default_factory=list)

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.close()
        if exc_type is not None:
            print(f"servers' logs and databases kept in {self.path}", file=sys.stderr)
        elif not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)

    def miasma(
        self, name: str, docker: str, *extra: str, db: Path | None = None, start: bool = True
    ) -> Server:
        """A Miasma server on its own database (``db``, else ``<name>.db``)."""
        address = f"127.0.0.1:{free_port()}"
        args = [
            sys.executable, "-m", "miasma_grpc", "--listen", address,
            "--db-path", str(db or self.path / f"{name}.db"), "--docker-host", docker,
            "--instance", f"bench{os.getpid()}{name}", "--runtime", "container",
            "--publish-address", "127.0.0.1", "--log-level", "WARNING", *extra,
        ]  # fmt: skip
        return self._add(Server(args, address, self.path / f"{name}.log"), start)

    def baseline(self, start: bool = True) -> Server:
        """The bare grpc.aio server of :mod:`bench.baseline`."""
        address = f"127.0.0.1:{free_port()}"
        args = [sys.executable, "-m", "bench.baseline", "--listen", address]
        return self._add(Server(args, address, self.path / "baseline.log"), start)

    def _add(self, server: Server, start: bool) -> Server:
        self.servers.append(server)
        if start:
            server.start()
        return server

    def close(self) -> None:
        """Stop every server started here."""
        for server in self.servers:
            server.stop()


async def wait_ready(call: Callable[[], Awaitable[object]], limit: float = 30) -> None:
    """Retry ``call`` until the server answers."""
    async with asyncio.timeout(limit):
        while True:
            try:
                await call()
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)

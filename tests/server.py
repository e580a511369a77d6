"""Runs the real ``python -m miasma_grpc`` in a subprocess for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from miasma.v1 import apps_pb2_grpc

START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """One Miasma server on loopback with its own database, instance and port range."""

    db_path: Path
    docker_host: str
    instance: str
    published_range: str = "3001-3999"
    runtime: str = "container"  # the test engine is also a swarm manager: say which to test
    credentials: grpc.ChannelCredentials | None = None  # for a TLS server's health checks
    environment: dict[str, str] = field(default_factory=dict)  # e.g. MIASMA_ACCESS_TOKEN
    extra_args: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process and wait until it answers health checks."""
        log_path = self.log_path or self.db_path.with_suffix(".log")
        self.log_path = log_path
        args = [
            sys.executable,
            "-m",
            "miasma_grpc",
            "--listen",
            self.address,
            "--db-path",
            str(self.db_path),
            "--docker-host",
            self.docker_host,
            "--instance",
            self.instance,
            "--published-port-range",
            self.published_range,
            "--publish-address",
            "127.0.0.1",
            "--runtime",
            self.runtime,
            "--log-level",
            "DEBUG",
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
        env |= self.environment
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.wait_health(serving=None)

    def wait_health(self, serving: bool | None = True, timeout: float = START_TIMEOUT) -> None:
        """Poll the health service until it answers (and, if asked, reports SERVING)."""
        deadline = time.monotonic() + timeout
        last: object = None
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.process.returncode}: {self.log()}"
                    )
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    last = reply.status
                    if (
                        serving is None
                        or (reply.status == health_pb2.HealthCheckResponse.SERVING) == serving
                    ):
                        return
                except grpc.RpcError as exc:
                    last = exc
                time.sleep(0.05)
        raise TimeoutError(f"server at {self.address} not ready ({last}): {self.log()}")

    def channel(self) -> grpc.Channel:
        """A new channel to this server (TLS when it has credentials)."""
        if self.credentials is not None:
            return grpc.secure_channel(self.address, self.credentials)
        return grpc.insecure_channel(self.address)

    def stub(self) -> tuple[grpc.Channel, apps_pb2_grpc.AppServiceStub]:
        """A new channel and AppService stub for this server."""
        channel = self.channel()
        return channel, apps_pb2_grpc.AppServiceStub(channel)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` to the process we started and wait for it to exit."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        code = self.process.returncode
        self.process = None
        return code

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the process we started (SIGSTOP) for the block, so that Docker can be
        changed by hand without the server's repairs racing the change; it then sees
        the events it missed (SIGCONT)."""
        assert self.process is not None, "the server is not running"
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop gracefully and start again on the same port and database."""
        self.stop()
        self.start()

    def log(self) -> str:
        """The tail of the server's log."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

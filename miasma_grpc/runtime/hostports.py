"""Detects ports that a process outside Miasma already listens on.

Works by trying to bind the port, which only says something about the
machine Miasma runs on: it is used when the Docker engine is local (a unix
socket) and skipped for remote engines, where Docker itself reports the
conflict when the container starts.

A port found free is not probed again for :data:`FREE_FOR` seconds: a probe
costs four system calls, a fifth of a port edit's time, and its answer is
only ever a hint (a process can take the port between the probe and the
container's start; Docker then refuses, and the change is reverted).
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable

from miasma_grpc.domain.models import Port, Protocol
from miasma_grpc.runtime.base import HostPorts

FREE_FOR = 1.0  # seconds a port found free is taken to stay free


class LocalHostPorts:
    """Probes ports on this machine by binding them for an instant."""

    def __init__(
        self, address: str = "0.0.0.0", *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.address = address
        self.clock = clock
        self._free_until: dict[Port, float] = {}

    async def refresh(self) -> None:
        """Nothing to prepare: each probe is live."""

    def busy(self, port: Port) -> bool:
        """True if binding ``port`` fails because something holds it."""
        now = self.clock()
        if self._free_until.get(port, 0.0) > now:
            return False
        if self._probe(port):
            self._free_until.pop(port, None)
            return True
        self._free_until[port] = now + FREE_FOR
        return False

    def _probe(self, port: Port) -> bool:
        kind = socket.SOCK_STREAM if port.protocol is Protocol.TCP else socket.SOCK_DGRAM
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        with socket.socket(family, kind) as sock:
            if kind == socket.SOCK_STREAM:
                # Ignore TIME_WAIT leftovers: only a live listener counts as busy.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.address, port.number))
            except OSError as exc:
                # EACCES (a privileged port, when not root) says nothing about other listeners.
                return exc.errno == errno.EADDRINUSE
        return False


class NoHostPorts:
    """For remote engines: nothing can be probed from here, so nothing is busy."""

    async def refresh(self) -> None:
        """Nothing to prepare."""

    def busy(self, port: Port) -> bool:
        """Always False."""
        return False


class AnyHostPorts:
    """Busy if any of several sources says so (the local probe and the swarm's services)."""

    def __init__(self, *sources: HostPorts) -> None:
        self.sources = sources

    async def refresh(self) -> None:
        """Refresh every source."""
        for source in self.sources:
            await source.refresh()

    def busy(self, port: Port) -> bool:
        """True if one source says ``port`` is taken."""
        return any(source.busy(port) for source in self.sources)

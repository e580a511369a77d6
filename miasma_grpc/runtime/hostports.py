"""Detects ports that a process outside Miasma already listens on.

Works by trying to bind the port, which only says something about the
machine Miasma runs on: it is used when the Docker engine is local (a unix
socket) and skipped for remote engines, where Docker itself reports the
conflict when the container starts.
"""

from __future__ import annotations

import errno
import socket

from miasma_grpc.domain.models import Port, Protocol
from miasma_grpc.runtime.base import HostPorts


class LocalHostPorts:
    """Probes ports on this machine by binding them for an instant."""

    def __init__(self, address: str = "0.0.0.0") -> None:
        self.address = address

    async def refresh(self) -> None:
        """Nothing to prepare: each probe is live."""

    def busy(self, port: Port) -> bool:
        """True if binding ``port`` fails because something holds it."""
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

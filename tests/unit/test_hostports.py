"""The local busy-port probe, on real loopback sockets."""

from __future__ import annotations

import socket

from miasma_grpc.domain.models import Port, Protocol
from miasma_grpc.runtime import hostports
from miasma_grpc.runtime.hostports import LocalHostPorts


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_listener_makes_its_port_busy_and_other_ports_free() -> None:
    """Binding the port fails while something listens on it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        probe = LocalHostPorts("127.0.0.1")
        assert probe.busy(Port(taken))
        assert not probe.busy(Port(free_tcp_port()))
        assert not probe.busy(Port(taken, Protocol.UDP))


def test_a_free_answer_is_kept_for_a_second_then_probed_again() -> None:
    """A port found free is taken to stay free for FREE_FOR seconds, no longer."""
    clock = [1000.0]
    probe = LocalHostPorts("127.0.0.1", clock=lambda: clock[0])
    number = free_tcp_port()
    assert not probe.busy(Port(number))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", number))
        listener.listen()
        clock[0] += hostports.FREE_FOR / 2
        assert not probe.busy(Port(number))  # the cached answer
        clock[0] += hostports.FREE_FOR
        assert probe.busy(Port(number))  # probed again
        assert probe.busy(Port(number))  # a busy answer is never cached as free

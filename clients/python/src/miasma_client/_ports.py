"""The CLI's port spelling: ``8080``, ``8080/tcp``, ``5353/udp``, ``8080/host``, comma lists.

A suffix names the protocol (``tcp``, ``udp``) or, for published ports on a
swarm, the publish mode (``host``, ``ingress``); both may be given in any
order (``5353/udp/host``).

Only the shape is checked here (a number, a known protocol); whether the
number is a usable port is the server's call, so every client gets the same
answer and the same field in the error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from miasma.v1 import apps_pb2

from miasma_client._errors import InvalidInput

PortLike = int | str | apps_pb2.Port

_SPEC = re.compile(r"(?P<number>\d+)(?P<suffixes>(?:/[a-z]+){0,2})", re.IGNORECASE)
_PROTOCOLS = {"tcp": apps_pb2.PROTOCOL_TCP, "udp": apps_pb2.PROTOCOL_UDP}
_MODES = {"ingress": apps_pb2.PUBLISH_MODE_INGRESS, "host": apps_pb2.PUBLISH_MODE_HOST}
_FORMS = "use NUMBER, NUMBER/udp, NUMBER/host or NUMBER/udp/host"


def parse_port(value: PortLike) -> apps_pb2.Port:
    """``"5353/udp"`` -> ``Port(number=5353, protocol=UDP)``; ints are TCP.

    Raises :class:`InvalidInput` (a ``MiasmaError``) naming the accepted forms when ``value`` has
    another shape.
    """
    if isinstance(value, apps_pb2.Port):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 0xFFFFFFFF:  # the wire type is uint32; the server judges the range
            raise InvalidInput(f"{value} is not a port: ports are 1-65535")
        return apps_pb2.Port(number=value, protocol=apps_pb2.PROTOCOL_TCP)
    match = _SPEC.fullmatch(str(value).strip())
    if match is None:
        raise InvalidInput(f"{value!r} is not a port: {_FORMS}")
    number = int(match["number"])
    if number > 0xFFFFFFFF:  # the wire type is uint32; the server judges the range
        raise InvalidInput(f"{value!r} is not a port: {number} is far above 65535")
    port = apps_pb2.Port(number=number, protocol=apps_pb2.PROTOCOL_TCP)
    words = [w.lower() for w in match["suffixes"].split("/") if w]
    protocols = [_PROTOCOLS[w] for w in words if w in _PROTOCOLS]
    modes = [_MODES[w] for w in words if w in _MODES]
    if len(protocols) + len(modes) != len(words) or len(protocols) > 1 or len(modes) > 1:
        raise InvalidInput(f"{value!r} is not a port: {_FORMS}")
    if protocols:
        port.protocol = protocols[0]
    if modes:
        port.mode = modes[0]
    return port


def parse_ports(values: Iterable[PortLike]) -> list[apps_pb2.Port]:
    """Parse each value; strings may hold comma-separated lists (``"8081,8082"``)."""
    ports: list[apps_pb2.Port] = []
    for value in values:
        if isinstance(value, str):
            parts = [part for part in value.split(",") if part.strip()]
            if not parts:
                raise InvalidInput(f"{value!r} is not a port: {_FORMS}")
            ports += [parse_port(part) for part in parts]
        else:
            ports.append(parse_port(value))
    return ports


def format_port(number: int, protocol: int) -> str:
    """``8080`` for TCP, ``5353/udp`` for UDP: the spelling :func:`parse_port` reads."""
    return f"{number}/udp" if protocol == apps_pb2.PROTOCOL_UDP else str(number)

"""Where each route's app serves now, told to Caddy over DNS (docs/routing.md).

Each Caddy route looks its upstream up at request time as the SRV record
``<route id>.miasma.`` (Caddy's ``dynamic_upstreams``, refreshed every
:data:`REFRESH`), answered here from memory: the host and published port the
route's app serves on. Moving a port is a change of this table, never of Caddy's
configuration, so no connection is closed and no request is lost. A route whose
app serves nowhere (stopped, not yet applied) is NXDOMAIN: Caddy answers 503.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import cast

from dnslib import QTYPE, RCODE, RR, SRV, A, DNSLabel, DNSRecord

log = logging.getLogger(__name__)

ZONE = "miasma."
REFRESH = 0.2  # seconds: how often Caddy asks again (its dynamic_upstreams refresh)


@dataclass(frozen=True)
class Upstream:
    """Where a route's requests go: a host address and a port."""

    address: str
    port: int


def srv_name(route_id: str) -> str:
    """The SRV name Caddy asks for a route."""
    return f"{route_id}.{ZONE}"


def _target(address: str) -> str:
    """The name an upstream address is given in SRV answers (answered as A records)."""
    return f"a-{address.replace('.', '-')}.{ZONE}"


class Answers(asyncio.DatagramProtocol):
    """Answers SRV (a route's upstream) and A (an upstream's address) questions from
    :attr:`table`; anything else in the zone is NXDOMAIN, outside it REFUSED."""

    def __init__(self) -> None:
        self.table: dict[str, Upstream] = {}  # route id -> upstream
        self.addresses: dict[str, str] = {}  # target name -> IPv4 address
        self.transport: asyncio.DatagramTransport | None = None

    def set(self, table: dict[str, Upstream]) -> None:
        """Serve ``table`` from now on (route id -> upstream)."""
        self.table = dict(table)
        self.addresses = {_target(u.address): u.address for u in table.values()}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's: no subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            question = DNSRecord.parse(data)
        except Exception:
            return
        reply = self.answer(question)
        if self.transport is not None:
            self.transport.sendto(reply.pack(), addr)

    def answer(self, question: DNSRecord) -> DNSRecord:
        """The reply to ``question``."""
        reply = question.reply()
        name = str(question.q.qname).lower()
        kind = question.q.qtype
        if not name.endswith(ZONE):
            reply.header.rcode = RCODE.REFUSED
            return reply
        route_id = name.removesuffix("." + ZONE)
        if route_id in self.table:
            upstream = self.table[route_id]
            if kind in (QTYPE.SRV, QTYPE.ANY):
                target = DNSLabel(_target(upstream.address))
                reply.add_answer(RR(name, QTYPE.SRV, ttl=0, rdata=SRV(0, 1, upstream.port, target)))
                reply.add_ar(RR(target, QTYPE.A, ttl=0, rdata=A(upstream.address)))
            return reply
        if name in self.addresses:
            if kind in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(name, QTYPE.A, ttl=60, rdata=A(self.addresses[name])))
            return reply  # AAAA and the rest: no such record, the name exists
        reply.header.rcode = RCODE.NXDOMAIN
        return reply


async def serve(answers: Answers, host: str = "127.0.0.1", port: int = 0) -> int:
    """Serve ``answers`` over UDP on ``host:port`` (0: a free port); the port."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: answers, local_addr=(host, port))
    bound: tuple[str, int] = transport.get_extra_info("sockname")
    return bound[1]

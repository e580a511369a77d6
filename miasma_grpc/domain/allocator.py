"""Who holds which published port, and how automatic ports are chosen.

The ledger is an in-memory mirror of the store's ``published_ports`` table
(whose UNIQUE index is the real guarantee). Allocation is next-fit over the
managed range: its cost depends on the size of the range, never on the
number of apps, and a just-released port is not handed out again at once.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Collection, Iterable

from miasma_grpc.domain.errors import ResourceExhausted
from miasma_grpc.domain.models import Port, PortRange, Protocol


class PortLedger:
    """Published ports held per protocol, with next-fit allocation of auto ports."""

    def __init__(self, managed: PortRange, reserved: Collection[Port] = ()) -> None:
        self.managed = managed
        self.reserved = frozenset(reserved)
        self._holders: dict[Port, str] = {}
        self._by_app: dict[str, set[Port]] = {}
        self._cursor: dict[Protocol, int] = {}

    def __len__(self) -> int:
        return len(self._holders)

    def holder(self, port: Port) -> str | None:
        """Name of the app holding ``port``, if any."""
        return self._holders.get(port)

    def held_by(self, app: str) -> set[Port]:
        """Every port held by ``app``."""
        return set(self._by_app.get(app, ()))

    def clear(self) -> None:
        """Forget every holder (before loading the ledger again)."""
        self._holders.clear()
        self._by_app.clear()

    def in_use(self, protocol: Protocol) -> int:
        """How many ports of the managed range are held or reserved for ``protocol``."""
        return sum(
            1
            for n in range(self.managed.start, self.managed.end + 1)
            if Port(n, protocol) in self._holders or Port(n, protocol) in self.reserved
        )

    def allocate(
        self,
        protocol: Protocol,
        claimed: Collection[int] = (),
        busy: Callable[[Port], bool] | None = None,
    ) -> int:
        """Pick a free port of the managed range, skipping ``claimed`` numbers.

        ``busy`` (optional) tells ports some process outside Miasma holds.
        Raises :class:`ResourceExhausted` when every port is held, reserved,
        claimed or busy. Changes nothing: an allocation counts once :meth:`hold`
        records it.
        """
        start, size = self.managed.start, len(self.managed)
        offset = self._cursor.get(protocol, 0)
        for step in range(size):
            number = start + (offset + step) % size
            port = Port(number, protocol)
            if port in self._holders or port in self.reserved or number in claimed:
                continue
            if busy is not None and busy(port):
                continue
            return number
        raise ResourceExhausted(
            f"no free {protocol} port left in the range {self.managed}: "
            f"{self.in_use(protocol)} of {size} are in use",
            metadata={"range": str(self.managed), "protocol": str(protocol)},
        )

    def hold(self, app: str, ports: Iterable[Port]) -> None:
        """Record that ``app`` holds ``ports`` (after the store committed it).

        The next-fit cursor moves past newly held ports here, not in
        :meth:`allocate`, so previews and refused edits leave the next choice
        unchanged. Ports the app held already do not move it: an edit that
        keeps an old port must not send the cursor back into a crowded stretch
        of the range (with 20,000 ports held that cost milliseconds per edit).
        """
        fresh = [port for port in ports if self._holders.get(port) != app]
        for port in fresh:
            previous = self._holders.get(port)
            if previous is not None:
                self._forget(previous, port)
            self._holders[port] = app
            self._by_app.setdefault(app, set()).add(port)
        for protocol in Protocol:
            # Deterministic whatever order ``ports`` comes in (often a set).
            numbers = [
                p.number for p in fresh if p.protocol is protocol and p.number in self.managed
            ]
            if numbers:
                self._cursor[protocol] = (max(numbers) - self.managed.start + 1) % len(self.managed)

    def release(self, app: str, ports: Iterable[Port]) -> None:
        """Forget ``ports`` held by ``app``; ports held by others are untouched."""
        for port in ports:
            if self._holders.get(port) == app:
                del self._holders[port]
                self._forget(app, port)

    def _forget(self, app: str, port: Port) -> None:
        held = self._by_app[app]
        held.discard(port)
        if not held:
            del self._by_app[app]


TargetChooser = Callable[[Protocol, Collection[int]], int]


class RandomTargets:
    """Chooses auto target ports at random from a range.

    Each plan draws from a generator seeded by what it plans (:meth:`for_plan`: the app
    and its revision), so a dry run (``validate_only``) shows the very ports the same
    change then picks. A target port is the app's own (inside its container), so ports
    that can be foreseen cost nothing. Given ``rng``, every plan draws from it instead.
    """

    def __init__(self, targets: PortRange, rng: random.Random | None = None) -> None:
        self.range = targets
        self._given = rng is not None
        self._rng = rng or secrets.SystemRandom()

    def for_plan(self, key: str) -> RandomTargets:
        """The chooser for one plan, seeded by ``key`` (unless an ``rng`` was given)."""
        return self if self._given else RandomTargets(self.range, random.Random(key))

    def __call__(self, protocol: Protocol, taken: Collection[int]) -> int:
        """A random target port of the range not in ``taken``."""
        free = len(self.range) - sum(1 for n in taken if n in self.range)
        if free <= 0:
            raise ResourceExhausted(
                f"no free target port left in the range {self.range}",
                metadata={"range": str(self.range), "protocol": str(protocol)},
            )
        while True:
            number = self._rng.randint(self.range.start, self.range.end)
            if number not in taken:
                return number

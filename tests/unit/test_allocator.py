"""The published-port ledger, its next-fit allocator, and random auto targets."""

from __future__ import annotations

import random
import secrets

import pytest

from miasma_grpc.domain.allocator import PortLedger, RandomTargets
from miasma_grpc.domain.errors import ResourceExhausted
from miasma_grpc.domain.models import Port, PortRange, Protocol

TCP, UDP = Protocol.TCP, Protocol.UDP


def test_allocation_starts_at_the_bottom_of_the_range() -> None:
    """A fresh ledger hands out the first port of its managed range."""
    assert PortLedger(PortRange(3001, 3999)).allocate(TCP) == 3001


def test_allocation_does_not_record_the_port() -> None:
    """Allocating only proposes a port; nothing is held until hold()."""
    ledger = PortLedger(PortRange(3001, 3999))
    port = ledger.allocate(TCP)
    assert ledger.holder(Port(port)) is None
    assert len(ledger) == 0


def test_allocation_is_next_fit_after_the_last_held_port() -> None:
    """Allocation continues after the port held last; allocating alone reserves nothing."""
    ledger = PortLedger(PortRange(3001, 3999))
    assert ledger.allocate(TCP) == ledger.allocate(TCP) == 3001
    ledger.hold("a", [Port(3001)])
    ledger.release("a", [Port(3001)])
    assert ledger.allocate(TCP) == 3002


def test_holding_a_port_again_does_not_move_the_cursor_back() -> None:
    """An edit that keeps an app's old port leaves the next choice after the newest port.

    Otherwise, with most of the range held, every allocation after such an edit
    would walk the crowded stretch behind the old port again.
    """
    ledger = PortLedger(PortRange(3001, 3999))
    ledger.hold("a", [Port(n) for n in range(3001, 3501)])
    ledger.hold("b", [Port(3501)])
    ledger.hold("a", [Port(3010), Port(3502)])  # keeps 3010, takes 3502
    assert ledger.allocate(TCP) == 3503
    ledger.hold("a", [Port(3010)])  # nothing new
    assert ledger.allocate(TCP) == 3503
    assert ledger.held_by("b") == {Port(3501)}


def test_just_released_port_is_not_handed_out_again_at_once() -> None:
    """A port released by one app is not the next one another app gets."""
    ledger = PortLedger(PortRange(3001, 3005))
    ledger.hold("a", [Port(ledger.allocate(TCP))])
    ledger.release("a", [Port(3001)])
    assert ledger.allocate(TCP) == 3002


def test_allocation_wraps_around_the_range() -> None:
    """After the top of the range, next-fit continues from the bottom."""
    ledger = PortLedger(PortRange(3001, 3003))
    ledger.hold("a", [Port(3001)])
    ledger.hold("b", [Port(3003)])
    assert ledger.allocate(TCP) == 3002
    ledger.hold("c", [Port(3002)])
    ledger.release("a", [Port(3001)])
    assert ledger.allocate(TCP) == 3001


def test_allocation_skips_held_reserved_claimed_and_busy_ports() -> None:
    """Held, reserved, claimed and host-busy ports are all passed over."""
    ledger = PortLedger(PortRange(3001, 3010), reserved=[Port(3002)])
    ledger.hold("a", [Port(3001)])
    busy = {Port(3004)}
    assert ledger.allocate(TCP, claimed={3003}, busy=busy.__contains__) == 3005


def test_protocols_are_allocated_independently() -> None:
    """A TCP port held or reserved does not stop the same UDP number being allocated."""
    ledger = PortLedger(PortRange(3001, 3010), reserved=[Port(3002)])
    ledger.hold("a", [Port(3001)])
    assert ledger.allocate(UDP) == 3001
    assert ledger.allocate(TCP) == 3003


def test_exhausted_range_raises_naming_range_and_usage() -> None:
    """When nothing is free, ResourceExhausted names the range and how many are in use."""
    ledger = PortLedger(PortRange(3001, 3004), reserved=[Port(3004)])
    ledger.hold("a", [Port(3001), Port(3002)])
    with pytest.raises(ResourceExhausted) as caught:
        ledger.allocate(TCP, claimed={3003})
    assert "3001-3004" in caught.value.message
    assert "3 of 4" in caught.value.message
    assert caught.value.metadata == {"range": "3001-3004", "protocol": "tcp"}


def test_in_use_counts_held_and_reserved_ports_inside_the_range_only() -> None:
    """in_use counts one protocol's held and reserved ports within the managed range."""
    ledger = PortLedger(PortRange(3001, 3010), reserved=[Port(3002), Port(50051)])
    ledger.hold("a", [Port(3001), Port(8080), Port(3003, UDP)])
    assert ledger.in_use(TCP) == 2
    assert ledger.in_use(UDP) == 1


def test_hold_and_holder_track_ports_per_app() -> None:
    """holder() and held_by() report what hold() recorded."""
    ledger = PortLedger(PortRange(3001, 3010))
    ledger.hold("a", [Port(3001), Port(53, UDP)])
    ledger.hold("b", [Port(53)])
    assert ledger.holder(Port(53)) == "b"
    assert ledger.holder(Port(53, UDP)) == "a"
    assert ledger.held_by("a") == {Port(3001), Port(53, UDP)}
    assert len(ledger) == 3


def test_release_leaves_ports_of_other_apps_alone() -> None:
    """An app releasing a port it does not hold does not free it for its holder."""
    ledger = PortLedger(PortRange(3001, 3010))
    ledger.hold("a", [Port(3001)])
    ledger.release("b", [Port(3001)])
    assert ledger.holder(Port(3001)) == "a"
    ledger.release("a", [Port(3001)])
    assert ledger.holder(Port(3001)) is None


def test_random_targets_stay_in_range_and_avoid_taken_ports() -> None:
    """Random targets come from the range and never repeat a taken port."""
    choose = RandomTargets(PortRange(4000, 4004), random.Random(11))
    taken = {4000, 4001, 4003}
    assert {choose(TCP, taken) for _ in range(50)} == {4002, 4004}


def test_random_targets_with_same_seed_are_reproducible() -> None:
    """Two choosers with the same seeded source choose the same ports."""
    first = RandomTargets(PortRange(3000, 3999), random.Random(42))
    second = RandomTargets(PortRange(3000, 3999), random.Random(42))
    assert [first(TCP, ()) for _ in range(10)] == [second(TCP, ()) for _ in range(10)]


def test_random_targets_ignore_taken_ports_outside_range() -> None:
    """Explicit targets outside the range do not count against the range."""
    choose = RandomTargets(PortRange(4000, 4000), random.Random(0))
    assert choose(TCP, {80, 443}) == 4000


def test_random_targets_raise_when_range_is_full() -> None:
    """With every target taken, RandomTargets raises ResourceExhausted naming the range."""
    choose = RandomTargets(PortRange(4000, 4001), random.Random(0))
    with pytest.raises(ResourceExhausted, match="4000-4001"):
        choose(TCP, {4000, 4001})


def test_random_targets_default_to_a_cryptographic_source() -> None:
    """Without an injected source, targets come from secrets.SystemRandom."""
    choose = RandomTargets(PortRange(3000, 3999))
    assert isinstance(choose._rng, secrets.SystemRandom)
    assert choose(TCP, ()) in choose.range


def test_port_range_parses_and_measures() -> None:
    """PortRange parses START-END, is inclusive and knows its size."""
    ports = PortRange.parse("3001-3999")
    assert (ports.start, ports.end, len(ports), str(ports)) == (3001, 3999, 999, "3001-3999")
    assert 3001 in ports
    assert 3999 in ports
    assert 4000 not in ports


@pytest.mark.parametrize("text", ["3001", "0-10", "10-5", "1-65536", "a-b"])
def test_port_range_rejects_bad_ranges(text: str) -> None:
    """A range must be START-END within 1-65535 with START <= END."""
    with pytest.raises(ValueError, match=r"."):
        PortRange.parse(text)

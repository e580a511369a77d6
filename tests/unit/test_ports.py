"""Port planning rules of docs/design.md §1, one test per rule, against the pure planner."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Collection, Sequence
from typing import Any

import pytest

from miasma_grpc.domain.allocator import PortLedger, RandomTargets, TargetChooser
from miasma_grpc.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from miasma_grpc.domain.models import (
    Binding,
    Port,
    PortRange,
    Protocol,
    PublishMode,
    is_reserved_env_name,
    port_env,
)
from miasma_grpc.domain.ports import (
    CREATE_FIELDS,
    MAX_SLOTS,
    PortEdit,
    SlotChange,
    default_bindings,
    diff_bindings,
    plan_edit,
    published_ports,
)

MANAGED = PortRange(3001, 3999)
TARGETS = PortRange(3000, 3999)
UDP = Protocol.UDP


def lowest_free_target(protocol: Protocol, taken: Collection[int]) -> int:
    """A deterministic stand-in for :class:`RandomTargets`: the lowest free target."""
    return next(n for n in range(TARGETS.start, TARGETS.end + 1) if n not in taken)


def seeded_targets(seed: int = 0, targets: PortRange = TARGETS) -> RandomTargets:
    """Random targets, but reproducible."""
    return RandomTargets(targets, random.Random(seed))


def tcp(*numbers: int) -> tuple[Port, ...]:
    return tuple(Port(n) for n in numbers)


def plan(
    ledger: PortLedger,
    current: Sequence[Binding],
    edit: PortEdit = PortEdit(),
    *,
    app: str = "web",
    choose: TargetChooser = lowest_free_target,
    busy: Callable[[Port], bool] | None = None,
) -> tuple[Binding, ...]:
    return plan_edit(app, current, edit, ledger, choose, busy=busy)


def commit(
    ledger: PortLedger, old: Sequence[Binding], new: Sequence[Binding], *, app: str = "web"
) -> tuple[Binding, ...]:
    """Record ``new`` in the ledger the way the store does after a commit."""
    ledger.hold(app, published_ports(new))
    ledger.release(app, published_ports(old) - published_ports(new))
    return tuple(new)


def apply(
    ledger: PortLedger,
    current: Sequence[Binding],
    edit: PortEdit = PortEdit(),
    *,
    app: str = "web",
    choose: TargetChooser = lowest_free_target,
) -> tuple[Binding, ...]:
    """Plan ``edit`` and commit it."""
    return commit(ledger, current, plan(ledger, current, edit, app=app, choose=choose), app=app)


def ledger_state(ledger: PortLedger, apps: Collection[str] = ("web", "db", "other")) -> object:
    return len(ledger), {app: ledger.held_by(app) for app in apps}


@pytest.fixture
def ledger() -> PortLedger:
    return PortLedger(MANAGED)


# -- defaults and automatic ports ------------------------------------------------


def test_new_app_has_one_fully_auto_tcp_slot(ledger: PortLedger) -> None:
    """A new app gets one TCP slot whose published and target ports are both auto."""
    (binding,) = default_bindings("web", ledger, seeded_targets())
    assert binding.protocol is Protocol.TCP
    assert not binding.published_explicit
    assert not binding.target_explicit
    assert binding.published in MANAGED
    assert binding.target in TARGETS


def test_auto_published_port_skips_ports_held_by_other_apps(ledger: PortLedger) -> None:
    """An auto published port is never one another app holds."""
    ledger.hold("other", tcp(3001, 3002))
    assert plan(ledger, ())[0].published == 3003


def test_auto_published_port_skips_reserved_ports() -> None:
    """An auto published port is never a reserved port."""
    ledger = PortLedger(MANAGED, reserved=tcp(3001))
    assert plan(ledger, ())[0].published == 3002


def test_auto_published_port_skips_ports_busy_on_host(ledger: PortLedger) -> None:
    """An auto published port is never one a process outside Miasma listens on."""
    bindings = plan(ledger, (), busy=lambda port: port in tcp(3001, 3002))
    assert bindings[0].published == 3003


def test_auto_published_port_skips_ports_claimed_in_same_request(ledger: PortLedger) -> None:
    """An auto published port never repeats an explicit port of the same request."""
    bindings = plan(ledger, (), PortEdit(add_published=tcp(3001), add_target=tcp(80, 81)))
    assert [(b.published, b.target) for b in bindings] == [(3001, 80), (3002, 81)]


def test_auto_published_port_of_one_protocol_ignores_the_other(ledger: PortLedger) -> None:
    """A TCP port held elsewhere does not stop the same number being auto-chosen for UDP."""
    ledger.hold("other", tcp(3001))
    bindings = plan(ledger, (), PortEdit(add_target=(Port(5353, UDP),)))
    assert bindings[0].published_port == Port(3001, UDP)


def test_auto_targets_come_from_target_range() -> None:
    """Auto target ports are drawn from the configured target range."""
    targets = PortRange(4000, 4009)
    bindings = plan(
        PortLedger(MANAGED),
        (),
        PortEdit(add_published=tcp(8081, 8082, 8083)),
        choose=seeded_targets(3, targets),
    )
    assert all(b.target in targets for b in bindings)


def test_auto_targets_are_distinct_within_app() -> None:
    """No two slots of one app get the same auto target."""
    bindings = plan(
        PortLedger(MANAGED),
        (),
        PortEdit(add_published=tcp(8081, 8082, 8083)),
        choose=seeded_targets(7, PortRange(3000, 3002)),
    )
    assert sorted(b.target for b in bindings) == [3000, 3001, 3002]


# -- removals -------------------------------------------------------------------


def test_removing_published_port_returns_slot_to_auto(ledger: PortLedger) -> None:
    """Removing an explicit published port gives its slot a new auto port, keeping the target."""
    (before,) = apply(ledger, (), PortEdit(add_published=tcp(5432)))
    (after,) = plan(ledger, (before,), PortEdit(remove_published=tcp(5432)))
    assert not after.published_explicit
    assert after.published in MANAGED
    assert after.target == before.target


def test_removing_auto_published_port_allocates_a_new_one(ledger: PortLedger) -> None:
    """Removing the app's own auto published port replaces it with a different auto port."""
    (before,) = apply(ledger, ())
    (after,) = plan(ledger, (before,), PortEdit(remove_published=tcp(before.published)))
    assert after.published != before.published
    assert after.published in MANAGED
    assert not after.published_explicit


def test_removing_target_port_returns_slot_to_auto(ledger: PortLedger) -> None:
    """Removing an explicit target port gives its slot an auto target, keeping the published."""
    (before,) = apply(ledger, (), PortEdit(add_target=tcp(80)), choose=seeded_targets())
    (after,) = plan(ledger, (before,), PortEdit(remove_target=tcp(80)), choose=seeded_targets())
    assert not after.target_explicit
    assert after.target in TARGETS
    assert after.published == before.published


def test_removing_a_port_never_shifts_other_slots(ledger: PortLedger) -> None:
    """A slot whose published side is removed stays at its index; later slots stay too."""
    current = apply(ledger, (), PortEdit(add_published=tcp(8081, 8082), add_target=tcp(80, 81)))
    after = plan(ledger, current, PortEdit(remove_published=tcp(8081)))
    assert [(b.target, b.target_explicit) for b in after] == [(80, True), (81, True)]
    assert not after[0].published_explicit
    assert after[1] == current[1]


def test_removing_published_port_the_app_lacks_names_field_and_its_ports(
    ledger: PortLedger,
) -> None:
    """Removing a published port the app does not have is refused, listing the ports it has."""
    current = apply(ledger, (), PortEdit(add_published=tcp(5432)))
    with pytest.raises(InvalidArgument) as caught:
        plan(ledger, current, PortEdit(remove_published=tcp(5433)))
    assert [v.field for v in caught.value.violations] == ["remove_published_ports[0]"]
    assert "5432/tcp" in caught.value.message
    assert caught.value.reason == "PORT_NOT_HELD"


def test_removing_target_port_the_app_lacks_names_field_and_its_ports(ledger: PortLedger) -> None:
    """Removing a target port the app does not have is refused, listing its target ports."""
    current = apply(ledger, (), PortEdit(add_target=tcp(80)))
    with pytest.raises(InvalidArgument) as caught:
        plan(ledger, current, PortEdit(remove_target=tcp(8080)))
    assert [v.field for v in caught.value.violations] == ["remove_target_ports[0]"]
    assert "80/tcp" in caught.value.message


def test_refused_removal_lists_ports_from_before_the_request(ledger: PortLedger) -> None:
    """The refusal lists every port the app has, including ones removed earlier in the request."""
    current = apply(ledger, (), PortEdit(add_published=tcp(5432, 5433)))
    with pytest.raises(InvalidArgument) as caught:
        plan(ledger, current, PortEdit(remove_published=tcp(5432, 9999)))
    assert caught.value.violations[0].field == "remove_published_ports[1]"
    assert "5432/tcp" in caught.value.message
    assert "5433/tcp" in caught.value.message


def test_removing_port_of_other_protocol_is_refused(ledger: PortLedger) -> None:
    """Removing 53/tcp from an app that publishes 53/udp is refused."""
    current = apply(ledger, (), PortEdit(add_published=(Port(53, UDP),)))
    with pytest.raises(InvalidArgument, match="53/udp"):
        plan(ledger, current, PortEdit(remove_published=tcp(53)))


def test_removals_apply_before_additions(ledger: PortLedger) -> None:
    """A port added in the request that removes another takes over the freed slot."""
    (before,) = apply(ledger, (), PortEdit(add_published=tcp(8081)))
    after = plan(ledger, (before,), PortEdit(add_published=tcp(8082), remove_published=tcp(8081)))
    assert after == (Binding(8082, before.target, published_explicit=True),)


def test_removing_and_adding_the_same_port_keeps_it_explicit(ledger: PortLedger) -> None:
    """Removing and re-adding a port in one request leaves it explicit (removal runs first)."""
    current = apply(ledger, (), PortEdit(add_published=tcp(8081)))
    after = plan(ledger, current, PortEdit(add_published=tcp(8081), remove_published=tcp(8081)))
    assert after == current


# -- additions ------------------------------------------------------------------


def test_adding_published_port_the_app_has_is_a_noop(ledger: PortLedger) -> None:
    """Adding a published port the app already has explicitly changes nothing."""
    current = apply(ledger, (), PortEdit(add_published=tcp(8081, 8082)))
    assert plan(ledger, current, PortEdit(add_published=tcp(8082))) == current


def test_adding_published_port_fills_first_auto_published_slot(ledger: PortLedger) -> None:
    """An added published port goes into the first slot whose published side is auto."""
    current = apply(ledger, (), PortEdit(add_published=tcp(8081), add_target=tcp(80, 81)))
    assert [b.published_explicit for b in current] == [True, False]
    after = plan(ledger, current, PortEdit(add_published=tcp(8082)))
    assert after == (current[0], Binding(8082, 81, published_explicit=True, target_explicit=True))


def test_adding_published_port_keeps_the_slots_auto_target(ledger: PortLedger) -> None:
    """Filling a fully automatic slot with a published port keeps its auto target."""
    (before,) = apply(ledger, (), choose=seeded_targets())
    (after,) = plan(ledger, (before,), PortEdit(add_published=tcp(5432)))
    assert after == Binding(5432, before.target, published_explicit=True)


def test_adding_published_port_appends_slot_when_none_is_auto(ledger: PortLedger) -> None:
    """With no auto published side left, an added port gets a new slot with an auto target."""
    current = apply(ledger, (), PortEdit(add_published=tcp(8081)))
    after = plan(ledger, current, PortEdit(add_published=tcp(8082)))
    assert after[0] == current[0]
    assert after[1].published == 8082
    assert after[1].published_explicit
    assert not after[1].target_explicit
    assert after[1].target != after[0].target


def test_adding_published_port_skips_auto_slot_of_other_protocol(ledger: PortLedger) -> None:
    """A TCP port never fills a UDP slot's auto published side."""
    current = apply(ledger, (), PortEdit(add_target=(Port(5353, UDP),)))
    after = plan(ledger, current, PortEdit(add_published=tcp(8081)))
    assert after[0] == current[0]
    assert after[1].published_port == Port(8081)


def test_fully_auto_slot_adopts_protocol_of_added_port(ledger: PortLedger) -> None:
    """A fully automatic slot takes the protocol of the first port added to it."""
    current = apply(ledger, ())
    (after,) = plan(ledger, current, PortEdit(add_published=(Port(5353, UDP),)))
    assert after.protocol is UDP
    assert after.published_port == Port(5353, UDP)
    assert not after.target_explicit


def test_fully_auto_slot_adopting_udp_gets_a_free_udp_published_port(
    ledger: PortLedger,
) -> None:
    """A fully automatic slot switching to UDP re-chooses its published port among UDP ports."""
    current = apply(ledger, ())
    ledger.hold("other", [Port(current[0].published, UDP)])
    (after,) = plan(ledger, current, PortEdit(add_target=(Port(5353, UDP),)))
    assert after.protocol is UDP
    assert ledger.holder(after.published_port) is None
    assert after.published in MANAGED


def test_adding_target_port_fills_first_auto_target_slot(ledger: PortLedger) -> None:
    """An added target port goes into the first slot whose target side is auto."""
    current = apply(ledger, (), PortEdit(add_published=tcp(8081, 8082), add_target=tcp(80)))
    after = plan(ledger, current, PortEdit(add_target=tcp(81)))
    assert after == (current[0], Binding(8082, 81, published_explicit=True, target_explicit=True))


def test_adding_target_port_keeps_the_slots_auto_published_port(ledger: PortLedger) -> None:
    """Filling a fully automatic slot with a target port keeps its auto published port."""
    (before,) = apply(ledger, ())
    (after,) = plan(ledger, (before,), PortEdit(add_target=tcp(80)))
    assert after == Binding(before.published, 80, target_explicit=True)


def test_adding_target_port_the_app_has_is_a_noop(ledger: PortLedger) -> None:
    """Adding a target port the app already has explicitly changes nothing."""
    current = apply(ledger, (), PortEdit(add_target=tcp(80, 81)))
    assert plan(ledger, current, PortEdit(add_target=tcp(80))) == current


def test_adding_target_port_appends_slot_when_none_is_auto(ledger: PortLedger) -> None:
    """With no auto target side left, an added target gets a new slot with an auto published."""
    current = apply(ledger, (), PortEdit(add_target=tcp(80)))
    after = plan(ledger, current, PortEdit(add_target=tcp(81)))
    assert after[0] == current[0]
    assert after[1].target_port == Port(81)
    assert after[1].published in MANAGED
    assert after[1].published != after[0].published


def test_requesting_own_auto_published_port_makes_it_explicit(ledger: PortLedger) -> None:
    """Asking for the app's own auto published port turns it explicit in place."""
    (before,) = apply(ledger, ())
    after = plan(ledger, (before,), PortEdit(add_published=tcp(before.published)))
    assert after == (Binding(before.published, before.target, published_explicit=True),)


def test_requesting_own_auto_published_port_rechooses_it_in_its_slot(ledger: PortLedger) -> None:
    """When another slot takes the app's auto published port, its old slot gets a new one."""
    current = apply(ledger, (), PortEdit(add_target=tcp(80, 81)))
    taken = current[1].published
    after = plan(ledger, current, PortEdit(add_published=tcp(taken)))
    assert after[0] == Binding(taken, 80, published_explicit=True, target_explicit=True)
    assert after[1].target_port == Port(81)
    assert not after[1].published_explicit
    assert after[1].published not in {taken, current[0].published}


def test_requesting_own_auto_target_port_rechooses_it_in_its_slot(ledger: PortLedger) -> None:
    """When another slot takes the app's auto target port, its old slot gets a new one."""
    current = apply(ledger, (), PortEdit(add_published=tcp(8081, 8082)))
    taken = current[1].target
    after = plan(ledger, current, PortEdit(add_target=tcp(taken)))
    assert after[0] == Binding(8081, taken, published_explicit=True, target_explicit=True)
    assert after[1].published_port == Port(8082)
    assert not after[1].target_explicit
    assert after[1].target != taken


# -- dropping fully automatic slots --------------------------------------------


def test_slot_left_fully_auto_is_dropped_when_others_remain(ledger: PortLedger) -> None:
    """A slot whose explicit side is removed disappears if other slots remain."""
    current = apply(ledger, (), PortEdit(add_published=tcp(8081, 8082)))
    assert plan(ledger, current, PortEdit(remove_published=tcp(8081))) == current[1:]


def test_dropping_a_slot_moves_later_slots_up(ledger: PortLedger) -> None:
    """After a slot is dropped the later slots move up, and so do their PORT_n names."""
    current = apply(ledger, (), PortEdit(add_published=tcp(8081, 8082, 8083)))
    after = plan(ledger, current, PortEdit(remove_published=tcp(8082)))
    assert after == (current[0], current[2])
    assert port_env(after)["PORT_2"] == str(current[2].target)


def test_last_slot_left_fully_auto_is_kept(ledger: PortLedger) -> None:
    """An app never loses its last slot: it goes back to fully automatic."""
    current = apply(ledger, (), PortEdit(add_published=tcp(8081), add_target=tcp(80)))
    (after,) = plan(ledger, current, PortEdit(remove_published=tcp(8081), remove_target=tcp(80)))
    assert not after.published_explicit
    assert not after.target_explicit


# -- the seed examples (Miasma's port management page) --------------------------


def test_seed_two_published_ports_get_distinct_random_targets(ledger: PortLedger) -> None:
    """`--add-published-ports 8081 --add-published-ports 8082` gives 8081->auto, 8082->auto."""
    current = apply(ledger, (), choose=seeded_targets(1))
    after = plan(ledger, current, PortEdit(add_published=tcp(8081, 8082)), choose=seeded_targets(1))
    assert [(b.published, b.published_explicit, b.target_explicit) for b in after] == [
        (8081, True, False),
        (8082, True, False),
    ]
    assert after[0].target != after[1].target
    assert all(b.target in TARGETS for b in after)


def test_seed_hard_coded_targets_pair_in_order(ledger: PortLedger) -> None:
    """Adding published 8081, 8082 and targets 8081, 8082 pairs 8081->8081 and 8082->8082."""
    current = apply(ledger, ())
    edit = PortEdit(add_published=tcp(8081, 8082), add_target=tcp(8081, 8082))
    after = plan(ledger, current, edit)
    assert [(b.published, b.target) for b in after] == [(8081, 8081), (8082, 8082)]
    assert all(b.published_explicit and b.target_explicit for b in after)


def test_seed_order_matters_when_published_order_differs(ledger: PortLedger) -> None:
    """Adding published 8082, 8081 and targets 8081, 8082 pairs 8082->8081 and 8081->8082."""
    current = apply(ledger, ())
    edit = PortEdit(add_published=tcp(8082, 8081), add_target=tcp(8081, 8082))
    after = plan(ledger, current, edit)
    assert [(b.published, b.target) for b in after] == [(8082, 8081), (8081, 8082)]


def test_seed_removing_published_5432_goes_back_to_auto_port(ledger: PortLedger) -> None:
    """`--add-published-ports 5432` then `--rm-published-ports 5432` ends on an auto port."""
    created = apply(ledger, (), app="postgres")
    added = apply(ledger, created, PortEdit(add_published=tcp(5432)), app="postgres")
    assert added[0].published_port == Port(5432)
    (after,) = apply(ledger, added, PortEdit(remove_published=tcp(5432)), app="postgres")
    assert after.published in MANAGED
    assert not after.published_explicit
    assert ledger.holder(Port(5432)) is None


def test_seed_removing_target_80_goes_back_to_random_target(ledger: PortLedger) -> None:
    """`--add-target-ports 80` then `--rm-target-ports 80` ends on a random target in range."""
    choose = seeded_targets(5)
    created = apply(ledger, (), choose=choose)
    added = apply(ledger, created, PortEdit(add_target=tcp(80)), choose=choose)
    assert added[0].target_port == Port(80)
    (after,) = apply(ledger, added, PortEdit(remove_target=tcp(80)), choose=choose)
    assert after.target in TARGETS
    assert not after.target_explicit


# -- validation and conflicts ---------------------------------------------------

FIELDS = ("add_published", "remove_published", "add_target", "remove_target")


def edit_with(field: str, ports: tuple[Port, ...]) -> PortEdit:
    changes: dict[str, Any] = {field: ports}
    return dataclasses.replace(PortEdit(), **changes)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("number", [0, -1, 65536])
def test_port_outside_1_to_65535_is_refused_naming_the_field(
    ledger: PortLedger, field: str, number: int
) -> None:
    """A port outside 1-65535 is an invalid argument naming the list element."""
    with pytest.raises(InvalidArgument) as caught:
        plan(ledger, apply(ledger, ()), edit_with(field, (Port(80), Port(number))))
    assert [v.field for v in caught.value.violations] == [f"{field}_ports[1]"]
    assert caught.value.reason == "INVALID_PORT"


@pytest.mark.parametrize("field", FIELDS)
def test_duplicate_port_in_one_list_is_refused(ledger: PortLedger, field: str) -> None:
    """The same port twice in one list is an invalid argument naming the repeat."""
    with pytest.raises(InvalidArgument) as caught:
        plan(ledger, (), edit_with(field, tcp(80, 81, 80)))
    assert [v.field for v in caught.value.violations] == [f"{field}_ports[2]"]


def test_ports_1_and_65535_are_accepted(ledger: PortLedger) -> None:
    """The bounds of the port range are valid ports."""
    after = plan(ledger, (), PortEdit(add_published=tcp(1, 65535), add_target=tcp(65535, 1)))
    assert [(b.published, b.target) for b in after] == [(1, 65535), (65535, 1)]


def test_same_number_on_tcp_and_udp_is_not_a_duplicate(ledger: PortLedger) -> None:
    """53/tcp and 53/udp in one list are two different ports."""
    after = plan(ledger, (), PortEdit(add_published=(Port(53), Port(53, UDP))))
    assert [b.published_port for b in after] == [Port(53), Port(53, UDP)]


def test_create_request_errors_name_create_fields(ledger: PortLedger) -> None:
    """Errors of a create request name its own fields (`published_ports`)."""
    with pytest.raises(InvalidArgument) as caught:
        plan_edit(
            "web", (), PortEdit(add_published=tcp(0)), ledger, lowest_free_target, CREATE_FIELDS
        )
    assert caught.value.violations[0].field == "published_ports[0]"


def test_published_port_held_by_another_app_is_refused_naming_holder(
    ledger: PortLedger,
) -> None:
    """A published port another app holds fails with ALREADY_EXISTS naming that app."""
    apply(ledger, (), PortEdit(add_published=tcp(5432)), app="db")
    with pytest.raises(AlreadyExists) as caught:
        plan(ledger, apply(ledger, ()), PortEdit(add_published=tcp(8080, 5432)))
    assert caught.value.resource == "apps/db"
    assert caught.value.violations[0].field == "add_published_ports[1]"
    assert "db" in caught.value.message


def test_tcp_53_and_udp_53_are_held_independently(ledger: PortLedger) -> None:
    """One app holding 53/tcp neither blocks 53/udp for another nor lets it take 53/tcp."""
    apply(ledger, (), PortEdit(add_published=tcp(53)), app="db")
    after = plan(ledger, (), PortEdit(add_published=(Port(53, UDP),)))
    assert after[0].published_port == Port(53, UDP)
    with pytest.raises(AlreadyExists):
        plan(ledger, (), PortEdit(add_published=tcp(53)))


def test_reserved_published_port_is_refused() -> None:
    """A reserved port is refused with FAILED_PRECONDITION / PORT_RESERVED."""
    ledger = PortLedger(MANAGED, reserved=tcp(50051))
    with pytest.raises(FailedPrecondition) as caught:
        plan(ledger, (), PortEdit(add_published=tcp(50051)))
    assert caught.value.reason == "PORT_RESERVED"
    assert caught.value.violations[0].field == "add_published_ports[0]"


def test_published_port_busy_on_host_is_refused(ledger: PortLedger) -> None:
    """A port a process outside Miasma listens on is refused with PORT_BUSY_ON_HOST."""
    with pytest.raises(FailedPrecondition) as caught:
        plan(ledger, (), PortEdit(add_published=tcp(8080)), busy=lambda port: port == Port(8080))
    assert caught.value.reason == "PORT_BUSY_ON_HOST"
    assert caught.value.violations[0].field == "add_published_ports[0]"


def test_busy_check_ignores_ports_the_app_already_holds(ledger: PortLedger) -> None:
    """The app's own container listening on its port does not make that port busy."""
    current = apply(ledger, (), PortEdit(add_published=tcp(5432)))
    after = plan(ledger, current, PortEdit(add_published=tcp(5432)), busy=lambda p: True)
    assert after == current


def test_exhausted_range_is_refused_naming_range_and_usage() -> None:
    """With every managed port held or reserved, planning fails naming the range and usage."""
    ledger = PortLedger(PortRange(3001, 3003), reserved=tcp(3003))
    ledger.hold("other", tcp(3001, 3002))
    with pytest.raises(ResourceExhausted) as caught:
        plan(ledger, ())
    assert "3001-3003" in caught.value.message
    assert "3 of 3" in caught.value.message


def test_edit_giving_too_many_slots_is_refused(ledger: PortLedger) -> None:
    """An edit that would give more than MAX_SLOTS slots is refused."""
    edit = PortEdit(
        add_published=tcp(*range(10000, 10040)),
        add_target=tuple(Port(n, UDP) for n in range(20000, 20040)),
    )
    with pytest.raises(InvalidArgument, match=str(MAX_SLOTS)):
        plan(ledger, (), edit)


# -- stickiness and the ledger ---------------------------------------------------


def test_editing_one_slot_keeps_other_slots_auto_ports(ledger: PortLedger) -> None:
    """Changing one slot never changes another slot's auto published or target port."""
    edit = PortEdit(add_published=tcp(8081, 8082, 8083), add_target=tcp(80, 81))
    current = apply(ledger, (), edit)
    current = apply(ledger, current, PortEdit(remove_published=tcp(8082)))
    assert not current[1].published_explicit
    assert not current[2].target_explicit
    after = plan(ledger, current, PortEdit(add_published=tcp(9000)))
    assert after == (
        current[0],
        Binding(9000, 81, published_explicit=True, target_explicit=True),
        current[2],
    )
    after = plan(ledger, current, PortEdit(remove_target=tcp(80)))
    assert after[1:] == current[1:]
    assert after[0].published == 8081


def test_auto_ports_survive_unrelated_edits(ledger: PortLedger) -> None:
    """The first slot keeps its auto target while other ports come and go."""
    (first,) = apply(ledger, (), choose=seeded_targets(2))
    current = apply(ledger, (first,), PortEdit(add_published=tcp(8081)))
    current = apply(ledger, current, PortEdit(add_published=tcp(8082)))
    current = apply(ledger, current, PortEdit(remove_published=tcp(8082)))
    assert current == (Binding(8081, first.target, published_explicit=True),)


def test_empty_edit_returns_bindings_unchanged(ledger: PortLedger) -> None:
    """An edit that asks for nothing changes nothing."""
    current = apply(ledger, (), PortEdit(add_published=tcp(8081), add_target=tcp(80, 81)))
    assert plan(ledger, current) == current


def test_planning_never_changes_ledger_holdings(ledger: PortLedger) -> None:
    """The planner reads the ledger but records nothing in it."""
    current = apply(ledger, (), PortEdit(add_published=tcp(5432)), app="db")
    before = ledger_state(ledger)
    plan(ledger, current, PortEdit(add_published=tcp(8081), add_target=tcp(1, 2)), app="db")
    plan(ledger, (), PortEdit(add_target=tcp(80)), app="other")
    assert ledger_state(ledger) == before


def test_refused_edit_leaves_ledger_unchanged(ledger: PortLedger) -> None:
    """A refused edit records nothing in the ledger."""
    apply(ledger, (), PortEdit(add_published=tcp(5432)), app="db")
    before = ledger_state(ledger)
    with pytest.raises(AlreadyExists):
        plan(ledger, (), PortEdit(add_target=tcp(80, 81), add_published=tcp(5432)))
    assert ledger_state(ledger) == before


# -- env and diffs --------------------------------------------------------------


def test_port_env_exposes_slot_targets_as_port_and_port_n() -> None:
    """PORT and PORT_1 name slot 1's target; PORT_n names slot n's."""
    bindings = (Binding(3001, 80), Binding(3002, 81), Binding(3003, 82))
    assert port_env(bindings) == {"PORT": "80", "PORT_1": "80", "PORT_2": "81", "PORT_3": "82"}


@pytest.mark.parametrize(
    ("name", "reserved"),
    [("PORT", True), ("PORT_1", True), ("PORT_12", True), ("PORTS", False), ("PORT_X", False)],
)
def test_port_env_names_are_reserved(name: str, reserved: bool) -> None:
    """PORT and PORT_<n> are Miasma's names; look-alikes are not."""
    assert is_reserved_env_name(name) is reserved


def test_diff_bindings_reports_changed_added_and_removed_slots() -> None:
    """The diff lists each slot whose binding differs, with None for a missing slot."""
    old = (Binding(3001, 80), Binding(3002, 81))
    new = (Binding(3001, 80), Binding(3005, 81), Binding(3006, 82))
    assert diff_bindings(old, new) == (
        SlotChange(1, old[1], new[1]),
        SlotChange(2, None, new[2]),
    )
    assert diff_bindings(new, old)[-1] == SlotChange(2, new[2], None)


# -- publish modes (swarm) ----------------------------------------------------------


def test_publish_mode_is_set_by_adding_and_reset_by_removing(ledger: PortLedger) -> None:
    """`8080/host` makes a host-mode slot; re-adding with a mode changes it; removal resets it."""
    created = apply(ledger, ())
    hosted = apply(
        ledger, created, PortEdit(add_published=tcp(8080), modes={Port(8080): PublishMode.HOST})
    )
    assert [(b.published, b.mode) for b in hosted] == [(8080, PublishMode.HOST)]
    same = apply(ledger, hosted, PortEdit(add_published=tcp(8080)))
    assert same == hosted  # no mode named: adding a port the app has is a no-op
    ingress = apply(
        ledger, hosted, PortEdit(add_published=tcp(8080), modes={Port(8080): PublishMode.INGRESS})
    )
    assert ingress[0].mode is PublishMode.INGRESS
    removed = apply(ledger, hosted, PortEdit(remove_published=tcp(8080)))
    assert removed[0].mode is PublishMode.INGRESS
    assert removed[0].published in MANAGED
    assert removed[0].target == hosted[0].target

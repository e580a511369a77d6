"""Property tests: random edit sequences on apps sharing one ledger keep the port rules
of docs/design.md §1.

Each step plans an edit and, when it is accepted, records it in the ledger the way
the store does after a commit (hold the new published ports, release the old ones).
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from miasma_grpc.domain.allocator import PortLedger, RandomTargets
from miasma_grpc.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MiasmaError,
    ResourceExhausted,
)
from miasma_grpc.domain.models import (
    PORT_MAX,
    PORT_MIN,
    Binding,
    Port,
    PortRange,
    Protocol,
    port_env,
)
from miasma_grpc.domain.ports import PortEdit, default_bindings, plan_edit, published_ports

APPS = ("api", "db", "web")
# Small ranges, so that collisions, re-choices and exhaustion actually happen.
MANAGED = PortRange(3001, 3012)
TARGETS = PortRange(3000, 3015)
RESERVED = frozenset({Port(3003), Port(50051)})
BUSY = frozenset({Port(3005), Port(8090), Port(53, Protocol.UDP)})
NUMBERS = [53, 80, 3001, 3002, 3003, 3005, 3007, 3011, 8081, 8082, 8090, 50051, 65535]

ports = st.builds(Port, st.sampled_from(NUMBERS), st.sampled_from(Protocol))


def additions(own: list[Port]) -> st.SearchStrategy[list[Port]]:
    """Any ports, some of them the app's own (a no-op, or an auto port made explicit)."""
    return st.lists(st.sampled_from(own) | ports, max_size=3, unique=True) | st.lists(
        ports, max_size=3
    )


def removals(own: list[Port]) -> st.SearchStrategy[list[Port]]:
    """Mostly ports the app has; sometimes any port (which is usually refused)."""
    mine = st.lists(st.sampled_from(own), max_size=2, unique=True)
    anything = st.lists(ports, max_size=1)
    # one_of does not weight repeated branches: pick "anything" about one time in six.
    return st.integers(0, 5).flatmap(lambda n: anything if n == 3 else mine)


def busy(port: Port) -> bool:
    return port in BUSY


def unexplained_auto_changes(
    old: tuple[Binding, ...], new: tuple[Binding, ...], edit: PortEdit
) -> list[str]:
    """Auto sides of untouched slots that changed more than the request can explain.

    A slot with one explicit side is found again by that side (unique per side in
    an app). Unless the request removes one of its ports, its auto side may change
    only because of an added port of the same side and protocol, and each added port
    changes at most two slots: the one it lands in and the one whose auto port it took.
    """
    changed: Counter[tuple[str, Protocol]] = Counter()
    for slot in old:
        if slot.published_explicit == slot.target_explicit:
            continue
        if slot.published_port in edit.remove_published or slot.target_port in edit.remove_target:
            continue
        if slot.published_explicit:
            side = "target"
            twins = [
                b for b in new if b.published_explicit and b.published_port == slot.published_port
            ]
        else:
            side = "published"
            twins = [b for b in new if b.target_explicit and b.target_port == slot.target_port]
        if twins != [slot]:
            changed[side, slot.protocol] += 1
    added = {"published": edit.add_published, "target": edit.add_target}
    return [
        f"{count} auto {side} ports of {protocol} slots changed"
        for (side, protocol), count in changed.items()
        if count > 2 * sum(port.protocol is protocol for port in added[side])
    ]


class SharedLedger(RuleBasedStateMachine):
    """A few apps, one ledger, random edits."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = PortLedger(MANAGED, RESERVED)
        self.choose = RandomTargets(TARGETS, random.Random(1234))
        self.apps: dict[str, tuple[Binding, ...]] = {}

    def commit(self, app: str, new: tuple[Binding, ...]) -> None:
        """Record ``new`` in the ledger as the store does after a commit."""
        old = self.apps.get(app, ())
        for port in published_ports(new):
            assert self.ledger.holder(port) in (None, app), f"{port} would be held twice"
        self.ledger.hold(app, published_ports(new))
        self.ledger.release(app, published_ports(old) - published_ports(new))
        self.apps[app] = new

    def snapshot(self) -> object:
        return len(self.ledger), {app: self.ledger.held_by(app) for app in APPS}

    @initialize()
    def create_apps(self) -> None:
        for app in APPS:
            self.commit(app, default_bindings(app, self.ledger, self.choose))

    @rule(app=st.sampled_from(APPS), data=st.data())
    def edit(self, app: str, data: st.DataObject) -> None:
        """A random edit: any ports added, mostly the app's own ports removed."""
        old = self.apps[app]
        edit = PortEdit(
            add_published=tuple(
                data.draw(additions([b.published_port for b in old]), "add_published")
            ),
            remove_published=tuple(
                data.draw(removals([b.published_port for b in old]), "remove_published")
            ),
            add_target=tuple(data.draw(additions([b.target_port for b in old]), "add_target")),
            remove_target=tuple(data.draw(removals([b.target_port for b in old]), "remove_target")),
        )
        self.try_edit(app, edit)

    @rule(app=st.sampled_from(APPS), data=st.data())
    def grow(self, app: str, data: st.DataObject) -> None:
        """Add free explicit published ports, so apps often have several auto targets."""
        own_range = st.integers(10000 + 100 * APPS.index(app), 10009 + 100 * APPS.index(app))
        free = st.builds(Port, own_range, st.sampled_from(Protocol))
        self.try_edit(app, PortEdit(add_published=tuple(data.draw(st.lists(free, max_size=3)))))

    def try_edit(self, app: str, edit: PortEdit) -> None:
        """Plan ``edit``; commit it if accepted, else check that nothing changed."""
        old = self.apps[app]
        before = self.snapshot()
        try:
            new = plan_edit(app, old, edit, self.ledger, self.choose, busy=busy)
        except MiasmaError as exc:
            # A state machine cannot use pytest.raises: an edit may or may not be refused.
            self.check_refused(exc, before)
            return
        assert self.snapshot() == before, "the planner changed the ledger"
        self.check_accepted(app, old, new, edit)
        self.commit(app, new)

    @rule(app=st.sampled_from(APPS))
    def recreate(self, app: str) -> None:
        """Delete the app and create it again, as DeleteApp then CreateApp would."""
        self.ledger.release(app, published_ports(self.apps.pop(app)))
        try:
            bindings = default_bindings(app, self.ledger, self.choose)
        except ResourceExhausted:
            # Every managed port is held: create it on an explicit port instead.
            explicit = PortEdit(add_published=(Port(60000 + APPS.index(app)),))
            bindings = plan_edit(app, (), explicit, self.ledger, self.choose)
        self.commit(app, bindings)

    def check_refused(self, exc: MiasmaError, before: object) -> None:
        assert isinstance(
            exc, InvalidArgument | AlreadyExists | FailedPrecondition | ResourceExhausted
        )
        if not isinstance(exc, ResourceExhausted) and exc.reason != "TOO_MANY_BINDINGS":
            assert exc.violations, "every refusal names its field"
        assert self.snapshot() == before, "a refused edit changed the ledger"

    def check_accepted(
        self, app: str, old: tuple[Binding, ...], new: tuple[Binding, ...], edit: PortEdit
    ) -> None:
        for port in edit.add_published:
            assert port not in RESERVED
            assert self.ledger.holder(port) in (None, app)
            assert self.ledger.holder(port) == app or not busy(port)
            assert any(b.published_explicit and b.published_port == port for b in new)
        for port in edit.add_target:
            assert any(b.target_explicit and b.target_port == port for b in new)
        for port in set(edit.remove_published) - set(edit.add_published):
            assert not any(b.published_explicit and b.published_port == port for b in new)
        for port in set(edit.remove_target) - set(edit.add_target):
            assert not any(b.target_explicit and b.target_port == port for b in new)
        for binding in new:
            if not binding.published_explicit and binding.published_port not in published_ports(
                old
            ):
                # A newly chosen auto port is free, in range, not reserved, not busy.
                assert binding.published in MANAGED
                assert binding.published_port not in RESERVED
                assert not busy(binding.published_port)
                assert self.ledger.holder(binding.published_port) is None
        if edit == PortEdit():
            assert new == old
        assert unexplained_auto_changes(old, new, edit) == []
        # Slots never shift except by drops: explicit slots the edit does not name keep
        # their order. (A port removed and re-added in one request is re-placed by the
        # addition rule, possibly in another slot, so such slots are left out.)
        named = {*edit.add_published, *edit.remove_published, *edit.add_target, *edit.remove_target}
        kept = [
            b
            for b in new
            if b in old
            and (b.published_explicit or b.target_explicit)
            and not {b.published_port, b.target_port} & named
        ]
        assert kept == [b for b in old if b in kept], (old, new, edit)

    @invariant()
    def no_published_port_is_held_twice(self) -> None:
        counts = Counter(b.published_port for bindings in self.apps.values() for b in bindings)
        assert [port for port, n in counts.items() if n > 1] == []

    @invariant()
    def ledger_mirrors_bindings(self) -> None:
        for app, bindings in self.apps.items():
            assert self.ledger.held_by(app) == published_ports(bindings)
        assert len(self.ledger) == sum(len(b) for b in self.apps.values())

    @invariant()
    def every_slot_has_both_sides_set(self) -> None:
        for bindings in self.apps.values():
            assert bindings, "an app always has a slot"
            for b in bindings:
                assert PORT_MIN <= b.published <= PORT_MAX
                assert PORT_MIN <= b.target <= PORT_MAX

    @invariant()
    def auto_ports_come_from_their_ranges(self) -> None:
        for bindings in self.apps.values():
            for b in bindings:
                assert b.published_explicit or b.published in MANAGED
                assert b.target_explicit or b.target in TARGETS

    @invariant()
    def targets_are_distinct_within_each_app(self) -> None:
        for bindings in self.apps.values():
            targets = [b.target_port for b in bindings]
            assert len(set(targets)) == len(targets)

    @invariant()
    def port_env_matches_slots(self) -> None:
        for bindings in self.apps.values():
            env = port_env(bindings)
            assert env["PORT"] == env["PORT_1"] == str(bindings[0].target)
            for index, binding in enumerate(bindings, start=1):
                assert env[f"PORT_{index}"] == str(binding.target)
            assert len(env) == len(bindings) + 1

    @invariant()
    def fully_auto_slot_only_when_it_is_the_only_slot(self) -> None:
        for bindings in self.apps.values():
            fully_auto = [b for b in bindings if not (b.published_explicit or b.target_explicit)]
            assert len(fully_auto) <= 1
            assert not fully_auto or len(bindings) == 1


SharedLedger.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEditsOnASharedLedgerKeepPortInvariants = SharedLedger.TestCase

"""Property tests: random create/edit/start/stop/restart/update/delete sequences on the real
AppManager, with a real SQLite store on a temporary file, keep the port rules of
docs/design.md §1.

Docker is replaced by the in-memory runtime (``miasma_grpc.runtime.fake``), which records
what it was asked to run and can be told to refuse (``RuntimeFailure``) or to be away
(``Unavailable``) for the next call, so that reverts and pending rollouts happen; the real
Docker runtime is tested elsewhere. No port is ever bound here: every number is only
planned, recorded and compared."""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Coroutine, Sequence
from contextlib import closing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.allocator import PortLedger, RandomTargets
from miasma_grpc.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MiasmaError,
    NotFound,
    ResourceExhausted,
    RuntimeFailure,
    Unavailable,
)
from miasma_grpc.domain.events import EventKind, PortEvent
from miasma_grpc.domain.models import (
    PORT_MAX,
    PORT_MIN,
    App,
    Binding,
    DesiredState,
    Port,
    PortRange,
    Protocol,
    Volume,
)
from miasma_grpc.domain.ports import PortEdit
from miasma_grpc.domain.volumes import VolumeEdit
from miasma_grpc.runtime.fake import Failure, FakeRuntime
from miasma_grpc.store.sqlite import SqliteStore

T = TypeVar("T")

APPS = ("api", "db", "web")
INVALID_NAMES = ("Bad_Name", "")
# Small ranges, so that collisions, re-choices and exhaustion actually happen.
MANAGED = PortRange(21001, 21008)
TARGETS = PortRange(21000, 21015)
RESERVED = frozenset({Port(21003), Port(21502, Protocol.UDP)})
BUSY = frozenset({Port(21005), Port(21501, Protocol.UDP)})
NUMBERS = (21001, 21002, 21003, 21005, 21007, 21011, 21500, 21501, 21502, 21777)
INVALID_NUMBERS = (0, 65536, 2**32 - 1)
IMAGES = ("img:1", "img:2", "miasma-test/busybox:latest")
INVALID_IMAGES = ("", "two words", "x" * 513)
# About one image in eight is malformed (sampled_from weights by repetition).
images = st.sampled_from(IMAGES * 3 + INVALID_IMAGES)
EXPECTED_WITHOUT_FIELD = {"APP_EXISTS", "APP_STOPPED", "TOO_MANY_BINDINGS"}
ENVS: tuple[dict[str, str], ...] = (
    {},
    {"GREETING": "hi"},
    {},
    {"GREETING": "yo"},
    {"PORT": "1"},
    {"PORT_2": "2"},
)

# A few sources shared between apps, targets that nest, one relative (refused), one bind.
TARGETS_OF_VOLUMES = ("/data", "/srv", "/srv/sub", "/cache")
volumes = st.builds(
    Volume,
    st.sampled_from(("shared", "shared", "own-a", "own-b", "bad name", "/host")),
    st.sampled_from((*TARGETS_OF_VOLUMES, "relative")),
    st.booleans(),
)
valid_ports = st.builds(Port, st.sampled_from(NUMBERS), st.sampled_from(Protocol))
# Target ports no slot has yet: each one appended needs an auto published port (exhaustion).
new_slots = st.builds(Port, st.integers(21600, 21615), st.sampled_from(Protocol))
invalid_ports = st.builds(Port, st.sampled_from(INVALID_NUMBERS), st.sampled_from(Protocol))
# About one port in twenty is malformed.
any_port = st.integers(0, 19).flatmap(lambda n: invalid_ports if n == 0 else valid_ports)
# Mostly the apps' names, sometimes a malformed one (sampled_from weights by repetition).
names = st.sampled_from(APPS * 4 + INVALID_NAMES)
# Docker answers as asked three times in four; otherwise it refuses or is away.
failures: st.SearchStrategy[Failure] = st.sampled_from(
    (None, None, None, None, None, None, "refuse", "unavailable", "cancel")
)
states = st.sampled_from(DesiredState)
etags = st.sampled_from(("", "", "", "current", "stale"))


class FakeHostPorts:
    """A few ports are taken on the 'host' by something that is not a Miasma app."""

    def __init__(self, busy: frozenset[Port]) -> None:
        self.taken = busy
        self.refreshes = 0

    async def refresh(self) -> None:
        """Count the refresh (the manager refreshes before planning)."""
        self.refreshes += 1

    def busy(self, port: Port) -> bool:
        """True for the configured ports."""
        return port in self.taken


@dataclass(frozen=True)
class StoreState:
    """Everything a refused request must leave as it was."""

    apps: dict[str, App]
    table: dict[Port, str]
    revision: int
    events: tuple[PortEvent, ...] = field(repr=False)

    def content(self) -> tuple[dict[str, App], dict[Port, str]]:
        """Apps and ports without bookkeeping (revisions, update time), which reverts bump."""
        return {n: desired_only(a) for n, a in self.apps.items()}, self.table


# What the store keeps about an app besides what the user asked for.
BOOKKEEPING = frozenset({"revision", "update_time", "applied_revision"})


def desired_only(app: App) -> App:
    """``app`` with its bookkeeping fields at their defaults."""
    defaults: dict[str, Any] = {f.name: f.default for f in fields(app) if f.name in BOOKKEEPING}
    return replace(app, **defaults)


def table_ledger(path: Path) -> dict[Port, str]:
    """The ``published_ports`` table, read with a connection of its own."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT protocol, port, app FROM published_ports").fetchall()
    return {Port(port, Protocol(protocol)): app for protocol, port, app in rows}


def named_ports(edit: PortEdit) -> tuple[set[Port], set[Port]]:
    """Published and target ports an edit mentions (added or removed)."""
    return (
        {*edit.add_published, *edit.remove_published},
        {*edit.add_target, *edit.remove_target},
    )


def untouched(slot: Binding, edit: PortEdit) -> bool:
    """True if nothing in ``edit`` may change ``slot`` (so its auto ports must stay).

    An added port lands in the first slot whose side is auto and whose protocol matches
    (a fully automatic slot takes any protocol); a named port's slot changes; a slot whose
    explicit side is removed may become fully automatic and be dropped.
    """
    published, target = named_ports(edit)
    if slot.published_port in published or slot.target_port in target:
        return False
    fully_auto = not (slot.published_explicit or slot.target_explicit)
    sides = ((slot.published_explicit, edit.add_published), (slot.target_explicit, edit.add_target))
    for explicit, added in sides:
        if not explicit and any(fully_auto or p.protocol is slot.protocol for p in added):
            return False
    return True


class ManagerMachine(RuleBasedStateMachine):
    """Three apps on one real store, driven through the real AppManager in random order."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="miasma-props-"))
        self.store = SqliteStore(self.tmp / "miasma.db", PortLedger(MANAGED, RESERVED))
        self.run(self.store.__aenter__())
        self.runtime = FakeRuntime(images={IMAGES[1]: ["/data"]})  # img:2 declares a VOLUME
        self.host_ports = FakeHostPorts(BUSY)
        self.manager = AppManager(
            self.store, self.runtime, RandomTargets(TARGETS, random.Random(7)), self.host_ports
        )
        self.pending: set[str] = set()  # apps whose last rollout waits for Docker to return
        self.logged: tuple[PortEvent, ...] = ()  # the event log as the last step left it
        self.previous = self.state()

    def teardown(self) -> None:
        """Close the store and the event loop, remove the temporary directory."""
        try:
            self.run(self.store.__aexit__(None, None, None))
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on this machine's own event loop."""
        return self.loop.run_until_complete(coroutine)

    def state(self) -> StoreState:
        """The store as it is now: apps, ledger table, revision and event log."""
        apps = {app.name: app for app in self.run(self.store.list_apps())}
        events = self.run(self.store.read_events(after=0, app=None, limit=1_000_000))
        return StoreState(
            apps, table_ledger(self.store.path), self.run(self.store.revision()), tuple(events)
        )

    # -- driving one request ---------------------------------------------------

    def attempt(
        self, name: str, call: Coroutine[Any, Any, T], failure: Failure, *, rollout: bool = True
    ) -> tuple[T | None, StoreState]:
        """Run one manager call with Docker set to ``failure``; check a refusal changed nothing.

        ``rollout`` says whether the call changes desired state (so a Docker refusal is
        reverted and logged) or only asks Docker to act (restart). Returns the call's result
        (``None`` if refused) and the store state before it; ``self.previous`` is the state
        after it.
        """
        before = self.previous
        self.runtime.arm(failure)
        cancelled = False
        try:
            result: T | None = self.run(call)
            refusal: MiasmaError | None = None
        except MiasmaError as exc:
            # A state machine cannot use pytest.raises: a request may or may not be refused.
            result, refusal = None, exc
        except asyncio.CancelledError:
            # Cut short while Docker worked (a deadline, a shutdown): the outcome is unknown
            # to the caller; the invariants still hold (the ledger holds the new ports only).
            result, refusal, cancelled = None, None, True
        finally:
            self.runtime.armed = None
        self.previous = self.state()
        outcome = "ok" if refusal is None else f"{type(refusal).__name__} {refusal.reason}"
        outcome = "cancelled" if cancelled else outcome
        event(f"{getattr(call, '__qualname__', 'call')}: {outcome}")
        if refusal is not None:
            self.check_refusal(refusal, before, self.previous, rollout=rollout)
        self.track_rollout(name)
        return result, before

    def check_refusal(
        self, exc: MiasmaError, before: StoreState, after: StoreState, *, rollout: bool
    ) -> None:
        """A refused request leaves apps and ports as they were (and the log too, unless
        Docker refused: then the failed rollout and its revert are logged)."""
        fired = self.runtime.fired
        if isinstance(exc, RuntimeFailure):
            assert fired == "refuse", f"RuntimeFailure without a Docker refusal: {exc}"
        if isinstance(exc, RuntimeFailure) and rollout:
            assert after.content() == before.content(), "a refused rollout was not reverted"
            logged = after.events[len(before.events) :]
            assert EventKind.ROLLOUT_FAILED in {e.kind for e in logged}
            return
        if isinstance(exc, Unavailable):
            assert fired == "unavailable", f"Unavailable without Docker being away: {exc}"
        elif not isinstance(exc, RuntimeFailure):
            assert isinstance(
                exc,
                InvalidArgument
                | NotFound
                | AlreadyExists
                | FailedPrecondition
                | ResourceExhausted
                | Aborted,
            ), f"unexpected refusal {exc!r}"
            assert fired is None, "Docker was called for a request refused before any change"
        if isinstance(exc, InvalidArgument | AlreadyExists | FailedPrecondition):
            assert exc.violations or exc.reason in EXPECTED_WITHOUT_FIELD, exc
        assert after == before, f"refused request ({exc!r}) changed the store"

    def track_rollout(self, name: str) -> None:
        """Note whether ``name`` runs what the store says, or waits for Docker to return."""
        app = self.previous.apps.get(name)
        if app is None or self.deployment_matches(app):
            self.pending.discard(name)
        elif self.runtime.fired in ("unavailable", "cancel"):
            self.pending.add(name)

    def deployment_matches(self, app: App) -> bool:
        """True if the fake Docker runs exactly what the store wants for ``app``."""
        deployed = self.runtime.deployed.get(app.name)
        if deployed is None or deployed.desired_state is not app.desired_state:
            return False
        if app.desired_state is DesiredState.STOPPED:
            return True  # a stopped app's ports change in the store only
        mounted = tuple(m.volume for m in deployed.mounts if not m.image_path)
        return (deployed.image, deployed.command, deployed.bindings, deployed.env, mounted) == (
            app.image,
            app.command,
            app.bindings,
            app.container_env,
            app.volumes,
        )

    def expect_unchanged_except(self, before: StoreState, name: str | None) -> None:
        """Every app but ``name`` keeps its bindings exactly: auto ports are sticky."""
        after = self.previous
        for other, app in before.apps.items():
            if other != name:
                assert after.apps[other].bindings == app.bindings, f"{other}'s ports changed"
        others = {n for n in after.apps if n != name}
        assert others == {n for n in before.apps if n != name}

    # -- rules -------------------------------------------------------------------

    @initialize(desired_states=st.lists(states, min_size=len(APPS), max_size=len(APPS)))
    def create_apps(self, desired_states: list[DesiredState]) -> None:
        """Start with every app created on default ports, running or stopped."""
        for name, desired_state in zip(APPS, desired_states, strict=True):
            call = self.manager.create(name, image=IMAGES[0], desired_state=desired_state)
            created, _ = self.attempt(name, call, None)
            assert created is not None
            assert len(created.bindings) == 1

    @rule(
        name=names,
        published=st.lists(any_port, max_size=3),
        target_ports=st.lists(any_port, max_size=3),
        desired_state=states,
        image=images,
        env=st.sampled_from(ENVS),
        validate_only=st.sampled_from((False, False, False, True)),
        failure=failures,
    )
    def create(
        self,
        name: str,
        published: list[Port],
        target_ports: list[Port],
        desired_state: DesiredState,
        image: str,
        env: dict[str, str],
        validate_only: bool,
        failure: Failure,
    ) -> None:
        """Create an app with random ports; new apps get every port they asked for."""
        edit = PortEdit(add_published=tuple(published), add_target=tuple(target_ports))
        call = self.manager.create(
            name,
            image=image,
            command=("httpd", "-f"),
            env=env,
            desired_state=desired_state,
            ports=edit,
            validate_only=validate_only,
        )
        created, before = self.attempt(name, call, failure)
        if validate_only:
            assert self.previous == before, "a validate_only create changed the store"
        if created is None:
            return
        assert name not in before.apps
        self.check_requested_ports_present(created.bindings, edit)
        self.expect_unchanged_except(before, name)
        if not validate_only:
            assert desired_only(self.previous.apps[name]) == desired_only(created)

    @precondition(lambda self: len(self.previous.apps) < len(APPS))
    @rule(data=st.data(), desired_state=states, failure=failures)
    def recreate(self, data: st.DataObject, desired_state: DesiredState, failure: Failure) -> None:
        """Create a missing app again with a well-formed request (its ports may be taken)."""
        name = data.draw(st.sampled_from([a for a in APPS if a not in self.previous.apps]))
        published = data.draw(st.lists(valid_ports, max_size=2, unique=True), "published")
        self.create(name, published, [], desired_state, IMAGES[0], {}, False, failure)

    @rule(
        name=names,
        data=st.data(),
        validate_only=st.sampled_from((False, False, False, True)),
        etag=etags,
        failure=failures,
    )
    def edit_ports(
        self, name: str, data: st.DataObject, validate_only: bool, etag: str, failure: Failure
    ) -> None:
        """Add and remove random ports (some malformed, some not the app's, some held)."""
        own = self.previous.apps.get(name)
        own_published = [b.published_port for b in own.bindings] if own else []
        own_targets = [b.target_port for b in own.bindings] if own else []
        edit = PortEdit(
            add_published=tuple(data.draw(additions(own_published), "add_published")),
            remove_published=tuple(data.draw(removals(own_published), "remove_published")),
            add_target=tuple(data.draw(additions(own_targets), "add_target")),
            remove_target=tuple(data.draw(removals(own_targets), "remove_target")),
        )
        tag = {"": "", "current": own.etag if own else "", "stale": 'W/"0"'}[etag]
        self.try_edit(name, edit, validate_only=validate_only, etag=tag, failure=failure)

    @rule(app=st.sampled_from(APPS), data=st.data(), failure=failures)
    def move_ports(self, app: str, data: st.DataObject, failure: Failure) -> None:
        """Well-formed edits of an app's own ports, so that most edits are accepted."""
        own = self.previous.apps.get(app)
        bindings = own.bindings if own else ()
        edit = PortEdit(
            add_published=tuple(data.draw(st.lists(valid_ports, max_size=2, unique=True))),
            remove_published=tuple(
                data.draw(removals([b.published_port for b in bindings if b.published_explicit]))
            ),
            add_target=tuple(data.draw(st.lists(valid_ports | new_slots, max_size=3, unique=True))),
            remove_target=tuple(
                data.draw(removals([b.target_port for b in bindings if b.target_explicit]))
            ),
        )
        self.try_edit(app, edit, validate_only=False, etag="", failure=failure)

    def try_edit(
        self, name: str, edit: PortEdit, *, validate_only: bool, etag: str, failure: Failure
    ) -> None:
        """Edit ports; slots the edit does not touch keep their (auto) ports, other apps too."""
        own = self.previous.apps.get(name)
        refreshes = self.host_ports.refreshes
        call = self.manager.edit(name, ports=edit, validate_only=validate_only, etag=etag)
        result, before = self.attempt(name, call, failure)
        assert self.host_ports.refreshes == refreshes + 1, "busy host ports were not refreshed"
        if validate_only:
            assert self.previous == before, "a validate_only edit changed the store"
        if result is None:
            return
        assert own is not None
        new = result.app.bindings
        self.check_requested_ports_present(new, edit)
        for port in set(edit.remove_published) - set(edit.add_published):
            assert not any(b.published_explicit and b.published_port == port for b in new)
        for port in set(edit.remove_target) - set(edit.add_target):
            assert not any(b.target_explicit and b.target_port == port for b in new)
        kept = [slot for slot in own.bindings if untouched(slot, edit)]
        survivors = [b for b in new if b in kept]
        assert survivors == kept, f"untouched slots changed: {own.bindings} -> {new} by {edit}"
        changed_slots = {c.slot for c in result.changes}
        assert changed_slots == {
            i
            for i in range(max(len(own.bindings), len(new)))
            if own.bindings[i : i + 1] != new[i : i + 1]
        }
        self.expect_unchanged_except(before, None if validate_only else name)
        if not validate_only:
            assert self.previous.apps[name].bindings == new

    @rule(name=names, desired_state=states, failure=failures)
    def set_desired_state(self, name: str, desired_state: DesiredState, failure: Failure) -> None:
        """Start or stop an app: its ports stay exactly as they were."""
        app, before = self.attempt(
            name, self.manager.set_desired_state(name, desired_state), failure
        )
        self.expect_unchanged_except(before, None)
        if app is not None:
            assert self.previous.apps[name].desired_state is desired_state

    @rule(name=names, failure=failures)
    def restart(self, name: str, failure: Failure) -> None:
        """Restart a running app: the store does not change at all."""
        restarts = self.runtime.restarts.get(name, 0)
        app, before = self.attempt(name, self.manager.restart(name), failure, rollout=False)
        if app is not None:
            assert self.previous == before, "a restart changed the store"
            assert self.runtime.restarts[name] == restarts + 1

    @rule(
        name=names,
        image=images,
        env=st.none() | st.sampled_from(ENVS),
        etag=st.sampled_from(("", "", "", "stale")),
        failure=failures,
    )
    def update(
        self, name: str, image: str, env: dict[str, str] | None, etag: str, failure: Failure
    ) -> None:
        """Change image (and maybe env): the ports stay exactly as they were."""
        call = self.manager.update(name, image=image, env=env, etag='W/"0"' if etag else "")
        app, before = self.attempt(name, call, failure)
        self.expect_unchanged_except(before, None)
        if app is not None:
            assert self.previous.apps[name].image == image

    @precondition(lambda self: len(self.previous.apps) == len(APPS))
    @rule(name=names, etag=etags, delete_volumes=st.booleans())
    def delete(self, name: str, etag: str, delete_volumes: bool) -> None:
        """Delete an app (while all exist, so most steps act on apps): its ports are released,
        the others' stay; its volumes stay unless asked, and a volume others mount stays."""
        own = self.previous.apps.get(name)
        tag = {"": "", "current": own.etag if own else "", "stale": 'W/"0"'}[etag]
        volumes_before = set(self.runtime.volumes)
        call = self.manager.delete(name, etag=tag, delete_volumes=delete_volumes)
        result, before = self.attempt(name, call, None)
        self.expect_unchanged_except(before, name)
        if result is not None:
            after = self.previous
            assert name not in after.apps
            assert name not in after.table.values()
            assert name not in self.runtime.deployed
            _, deleted = result
            assert set(self.runtime.volumes) == volumes_before - set(deleted)
            mounted = {v.source for app in after.apps.values() for v in app.volumes}
            assert not set(deleted) & mounted, "a volume another app mounts was deleted"
            assert delete_volumes or deleted == ()

    @rule(
        name=names,
        add=st.lists(volumes, max_size=2),
        remove=st.lists(st.sampled_from(TARGETS_OF_VOLUMES), max_size=1),
        with_port=st.booleans(),
        failure=failures,
    )
    def edit_volumes(
        self, name: str, add: list[Volume], remove: list[str], with_port: bool, failure: Failure
    ) -> None:
        """Mount and unmount volumes (some malformed, some held by another app), with a port
        edit in the same request: all of it happens, or none of it."""
        own = self.previous.apps.get(name)
        ports = PortEdit(add_published=(Port(21007),)) if with_port else PortEdit()
        edit = VolumeEdit(add=tuple(add), remove=tuple(Volume("", t) for t in remove))
        result, _ = self.attempt(name, self.manager.edit(name, ports=ports, volumes=edit),
                                      failure)  # fmt: skip
        if result is None or own is None:
            return
        stored = self.previous.apps[name]
        assert stored.volumes == result.app.volumes
        for volume in add:
            assert any(v.source == volume.source and v.read_only == volume.read_only
                       for v in stored.volumes), volume  # fmt: skip
        if with_port:
            assert any(b.published_explicit and b.published == 21007 for b in stored.bindings)

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def docker_returns(self, data: st.DataObject) -> None:
        """Docker is back: converging a pending app applies what the store says."""
        name = data.draw(st.sampled_from(sorted(self.pending)), "pending app")
        _, before = self.attempt(name, self.manager.converge(name), None)
        assert name not in self.pending
        events = self.previous.events[len(before.events) :]
        assert [e.kind for e in events] == [EventKind.ROLLOUT_APPLIED]

    def check_requested_ports_present(self, bindings: Sequence[Binding], edit: PortEdit) -> None:
        """Every added port is an explicit side of some slot."""
        for port in edit.add_published:
            assert any(b.published_explicit and b.published_port == port for b in bindings)
            assert port not in RESERVED
        for port in edit.add_target:
            assert any(b.target_explicit and b.target_port == port for b in bindings)

    # -- invariants, checked after every step ---------------------------------------

    @invariant()
    def no_published_port_is_held_twice(self) -> None:
        """Per protocol, a published port belongs to at most one app, in bindings and ledger."""
        holders: dict[Port, str] = {}
        for name, app in self.previous.apps.items():
            for binding in app.bindings:
                assert binding.published_port not in holders, (
                    f"{binding.published_port} held by {holders.get(binding.published_port)} "
                    f"and {name}"
                )
                holders[binding.published_port] = name
        assert self.previous.table == holders, "published_ports table differs from the bindings"

    @invariant()
    def no_writable_volume_is_shared(self) -> None:
        """A named volume mounted by two apps is mounted read-only by both (one app may
        mount it at two targets)."""
        mounts: dict[str, list[tuple[str, Volume]]] = {}
        for app in self.previous.apps.values():
            for volume in app.volumes:
                if not volume.bind:
                    mounts.setdefault(volume.source, []).append((app.name, volume))
        for source, found in mounts.items():
            apps = {name for name, _ in found}
            assert len(apps) == 1 or all(v.read_only for _, v in found), source

    @invariant()
    def ledger_mirrors_table(self) -> None:
        """The in-memory ledger says exactly what the published_ports table says."""
        table = self.previous.table
        assert {port: self.store.ledger.holder(port) for port in table} == table
        assert len(self.store.ledger) == len(table)

    @invariant()
    def every_slot_is_complete(self) -> None:
        """Every app has a slot; every slot has both ports in 1-65535, auto ones in range."""
        for app in self.previous.apps.values():
            assert app.bindings
            targets = [b.target_port for b in app.bindings]
            assert len(set(targets)) == len(targets), "two slots share a target port"
            for b in app.bindings:
                assert PORT_MIN <= b.published <= PORT_MAX
                assert PORT_MIN <= b.target <= PORT_MAX
                assert b.published_explicit or b.published in MANAGED
                assert b.target_explicit or b.target in TARGETS
                assert b.published_explicit or b.published_port not in RESERVED | BUSY
            fully_auto = [
                b for b in app.bindings if not (b.published_explicit or b.target_explicit)
            ]
            assert not fully_auto or len(app.bindings) == 1

    @invariant()
    def docker_runs_what_the_store_says(self) -> None:
        """Unless a rollout waits for Docker, the fake Docker runs the stored spec; a running
        app's env has PORT = PORT_1 = slot 1's target and PORT_i = slot i's target."""
        for name, app in self.previous.apps.items():
            assert name in self.pending or self.deployment_matches(app), name
        assert set(self.runtime.deployed) <= set(self.previous.apps)
        for deployed in self.runtime.deployed.values():
            if deployed.desired_state is not DesiredState.RUNNING:
                continue
            env = deployed.env
            assert env["PORT"] == env["PORT_1"] == str(deployed.bindings[0].target)
            for index, binding in enumerate(deployed.bindings, start=1):
                assert env[f"PORT_{index}"] == str(binding.target)
            assert f"PORT_{len(deployed.bindings) + 1}" not in env

    @invariant()
    def event_log_is_append_only_and_ordered(self) -> None:
        """Revisions strictly increase, never pass the store's, and the latest binding event of
        each app carries its current bindings."""
        events = self.previous.events
        revisions = [e.revision for e in events]
        assert all(a < b for a, b in itertools.pairwise(revisions))
        assert not revisions or revisions[-1] <= self.previous.revision
        for app in self.previous.apps.values():
            assert app.revision <= self.previous.revision
            latest = [
                e
                for e in events
                if e.app == app.name and e.kind in (EventKind.ASSIGNED, EventKind.CHANGED)
            ][-1]
            assert latest.new == app.bindings, f"last event of {app.name} is not its bindings"

    @invariant()
    def event_log_only_grows(self) -> None:
        """What was logged before this step is still logged, unchanged."""
        events = self.previous.events
        assert events[: len(self.logged)] == self.logged
        self.logged = events


def additions(own: list[Port]) -> st.SearchStrategy[list[Port]]:
    """Any ports, sometimes the app's own (a no-op, or an auto port made explicit);
    about one list in ten repeats a port (which is refused)."""
    port = (st.sampled_from(own) | any_port) if own else any_port
    distinct = st.lists(port, max_size=3, unique=True)
    return st.integers(0, 9).flatmap(lambda n: st.lists(port, max_size=3) if n == 0 else distinct)


def removals(own: list[Port]) -> st.SearchStrategy[list[Port]]:
    """Mostly ports the app has; sometimes any port (which is usually refused)."""
    mine = st.lists(st.sampled_from(own), max_size=2, unique=True) if own else st.just([])
    anything = st.lists(any_port, max_size=1)
    return st.integers(0, 5).flatmap(lambda n: anything if n == 3 else mine)


ManagerMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRandomManagerRequestsKeepPortInvariants = ManagerMachine.TestCase

"""The use cases: create, edit, start, stop and delete apps.

Each change follows one pattern: plan in the pure domain, commit the new
desired state (SQLite is the source of truth), then drive Docker to it. If
Docker *refuses* the change, the previous state is committed back and the
error is returned, so the app keeps serving on its previous ports. If Docker
is merely *unreachable*, the change stays and the reconciler applies it
when Docker returns.

During a rollout an app holds both its old and new published ports in the
ledger, so a revert can never find its old ports taken by someone else.

Every change to an app's bindings is recorded as a port event in the same
transaction as the change; the result of each rollout (applied, failed,
pending) is recorded when Docker has answered.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from miasma_grpc.crashes import CrashLoops
from miasma_grpc.domain.allocator import PortLedger, RandomTargets, TargetChooser
from miasma_grpc.domain.env import EnvEdit, check_env
from miasma_grpc.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    RuntimeFailure,
    Unavailable,
)
from miasma_grpc.domain.events import EventKind, PortEvent
from miasma_grpc.domain.images import validate_image
from miasma_grpc.domain.models import (
    DEFAULT_STOP_GRACE,
    App,
    Binding,
    DesiredState,
    Observed,
    RolloutState,
    Route,
    Volume,
)
from miasma_grpc.domain.names import validate_app_name, validate_group
from miasma_grpc.domain.placement import PlacementEdit, validate_constraints
from miasma_grpc.domain.ports import (
    CREATE_FIELDS,
    EditFields,
    PortEdit,
    SlotChange,
    diff_bindings,
    plan_edit,
    published_ports,
)
from miasma_grpc.domain.routes import RouteEdit, taken, validate_routes
from miasma_grpc.domain.volumes import (
    VolumeEdit,
    VolumeInfo,
    check_holders,
    new_uid,
    normalized,
    plan_volumes,
    validate_volume_name,
    validate_volumes,
)
from miasma_grpc.locks import KeyedLocks
from miasma_grpc.readiness import Listening, Readiness
from miasma_grpc.runtime.base import PHASE, HostPorts, Runtime
from miasma_grpc.store.sqlite import SqliteStore, Transaction, now

log = logging.getLogger(__name__)

MAX_STOP_GRACE = 3600.0  # seconds
MAX_REQUEST_ID = 128
NOT_SEEN = Observed()  # an app Docker has not reported on
VolumeListing = list[tuple[VolumeInfo, tuple[str, ...]]]  # each volume with the apps mounting it


@dataclass(frozen=True)
class Failure:
    """The last rollout of an app that Docker refused, reported until it is resolved.

    ``sticky`` failures (a user's change that was reverted) stay until a newer
    revision rolls out; others (the reconciler could not converge) go as soon
    as a rollout of the same app succeeds.
    """

    revision: int
    message: str
    sticky: bool
    cause: tuple[str, int] = ("", 0)  # (reason, Docker's status): the same cause, once


@dataclass(frozen=True)
class EditResult:
    """An app after a port edit, with the slots that changed."""

    app: App
    changes: tuple[SlotChange, ...]


class AppManager:
    """Applies user requests to the store and the runtime."""

    def __init__(
        self,
        store: SqliteStore,
        runtime: Runtime,
        choose_target: TargetChooser,
        host_ports: HostPorts,
        *,
        instance: str = "miasma",
        allow_bind_mounts: bool = False,
        ready_timeout: float = 0.0,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.choose_target = choose_target
        self.host_ports = host_ports
        self.instance = instance  # names the volumes Miasma makes (docs/volumes.md)
        self.allow_bind_mounts = allow_bind_mounts
        self.observed: dict[str, Observed] = {}
        # Since when Docker cannot be watched (None: it can); set at start until the
        # first look, so that reads never pass off stale figures as current.
        self.blind_since: datetime | None = now()
        self.failures: dict[str, Failure] = {}
        self.locks = KeyedLocks()  # serialises the rollouts of each app
        self.phases: dict[str, str] = {}  # what a rollout under way does now, per app
        # Apps Docker is being driven for now: a change, or a repair that starts or
        # finishes something (not a repair that only finds the app as it should be).
        self.rolling: set[str] = set()
        self.crashes = CrashLoops()
        # Whether started apps listen on their ports (docs/design.md §4).
        self.readiness = Readiness(runtime.deaf_ports, ready_timeout, self._not_listening)

    async def close(self) -> None:
        """Stop the background work of apps (the server stops)."""
        await self.readiness.close()

    @property
    def ledger(self) -> PortLedger:
        """The published-port ledger (mirrors the store)."""
        return self.store.ledger

    # -- reads ---------------------------------------------------------------

    async def get(self, name: str) -> App:
        """One app as committed (its observed state follows Docker's events: no call)."""
        return await self.store.get_app(name)

    async def list(
        self,
        *,
        after: str,
        limit: int,
        group: str | None = None,
        desired: DesiredState | None = None,
        rollout: RolloutState | None = None,
        hidden: bool | None = None,
    ) -> tuple[int, list[App]]:
        """A page of apps in name order, and the revision it was read at; only those of
        ``group``, of ``desired`` state, whose latest change stands at ``rollout``, where
        given."""
        keep = None if rollout is None else lambda app: self.observed_state(app).rollout is rollout
        return await self.store.list_page(
            after=after, limit=limit, group=group, desired=desired, hidden=hidden, keep=keep
        )

    def _placement(self, constraints: Sequence[str], field: str) -> tuple[str, ...]:
        """Checked constraints; refused when this runtime cannot honour them (one engine)."""
        checked = validate_constraints(constraints, field)
        if checked and self.runtime.mode == "container":
            raise FailedPrecondition(
                f"{field}: placement constraints choose a swarm node; this server runs the "
                "container runtime (one engine) and cannot honour them",
                reason="SWARM_ONLY",
                violations=[FieldViolation(field, "needs the swarm runtime")],
            )
        return checked

    def runs_as_asked(self, app: App) -> bool:
        """Whether Docker last reported ``app`` running as many replicas as it should."""
        observed = self.observed.get(app.name, NOT_SEEN)
        return observed.running >= observed.total

    def lose_sight(self, since: datetime) -> None:
        """Docker cannot be watched from ``since`` on: reads say so (``unknown_since``)."""
        if self.blind_since is None:
            self.blind_since = since

    def regain_sight(self) -> None:
        """Docker is watched again (and looked at in full): reads are current."""
        self.blind_since = None

    def observed_state(self, app: App) -> Observed:
        """What Docker last reported for ``app``, with where its latest change stands.

        While replicas are missing, a refused rollout's error beats Docker's own
        words ("not running: …"), and a rollout still owed (Docker was away, or
        the server stopped mid-rollout) is pending, not failed. On every read:
        made with one constructor call, no copies.
        """
        seen = self.observed.get(app.name, NOT_SEEN)
        rollout, error = self._rollout_state(app, seen)
        phase, deaf = self.phases.get(app.name, ""), tuple[int, ...]()
        listening = self.readiness.state.get(app.name)
        if listening is not None and seen.running and rollout is not RolloutState.FAILED:
            phase = phase or listening.phase
            if listening.over:
                deaf, error = listening.ports, error or listening.verdict
        return Observed(
            running=seen.running,
            total=seen.total,
            last_error=error,
            node=seen.node,
            rollout=rollout,
            unknown_since=self.blind_since,
            phase=phase,
            not_listening=deaf,
        )

    def observation_key(self, app: App) -> tuple[object, ...]:
        """All that :meth:`observed_state` of ``app`` is made of: while the key stays equal
        (mostly the same objects), so does the state. Replies are kept on it."""
        name = app.name
        return (
            app,
            self.observed.get(name),
            self.failures.get(name),
            name in self.rolling,
            self.blind_since,
            self.phases.get(name),
            self.readiness.state.get(name),
        )

    def _rollout_state(self, app: App, seen: Observed) -> tuple[RolloutState, str]:
        """Where ``app``'s latest change stands, and the error to show."""
        if seen.rollout is RolloutState.PENDING:  # Docker was away when last asked
            return seen.rollout, seen.last_error
        if app.name in self.rolling:
            return RolloutState.IN_PROGRESS, seen.last_error
        short = seen.total == 0 or seen.running < seen.total
        if short and (failure := self.failures.get(app.name)):
            return RolloutState.FAILED, failure.message
        if app.rollout_owed:
            detail = f" ({seen.last_error})" if seen.last_error else ""
            return RolloutState.PENDING, f"revision {app.revision} is not rolled out yet{detail}"
        failed = short and bool(seen.last_error)
        return (RolloutState.FAILED if failed else RolloutState.APPLIED), seen.last_error

    # -- changes -------------------------------------------------------------

    async def create(
        self,
        name: str,
        *,
        image: str,
        command: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        desired_state: DesiredState = DesiredState.RUNNING,
        constraints: Sequence[str] = (),
        ports: PortEdit = PortEdit(),
        volumes: Sequence[Volume] = (),
        stop_grace: float = DEFAULT_STOP_GRACE,
        group: str = "",
        hidden: bool = False,
        routes: Sequence[Route] = (),
        validate_only: bool = False,
        request_id: str = "",
    ) -> App:
        """Create an app with one auto/auto slot (plus ``ports``) and start it.

        A retry of a create already made (same ``request_id``) returns the app as it is.
        """
        validate_app_name(name, "app_id")
        validate_group(group)
        _validate_request_id(request_id)
        _validate_spec(image, command, env or {}, stop_grace)
        placement = self._placement(constraints, "app.constraints")
        mounts = validate_volumes(volumes, "app.volumes", allow_bind=self.allow_bind_mounts)
        await self._refresh_host_ports()
        async with self._hold(name):
            async with self.store.transaction() as tx:
                if _done_before(tx, request_id, name):
                    return tx.get_app(name)
                if validate_only:
                    _absent(tx, name)
                bindings = self._plan(name, (), ports, fields=CREATE_FIELDS)
                stamp = now()
                app = App(
                    name=name,
                    image=image,
                    bindings=bindings,
                    command=tuple(command),
                    env=dict(env or {}),
                    desired_state=desired_state,
                    constraints=placement,
                    volumes=mounts,
                    stop_grace=stop_grace,
                    group=group,
                    hidden=hidden,
                    uid=new_uid(),
                    create_time=stamp,
                    update_time=stamp,
                    routes=validate_routes(routes, bindings, "app.routes"),
                )
                check_holders(app, tx.state.apps, self.instance, field="app.volumes", new=mounts)
                _routes_free(tx, app)
                if validate_only:  # the transaction ends with nothing to write
                    return app
                app = replace(app, revision=tx.next_revision())
                tx.insert_app(app)
                if request_id:
                    tx.remember_request(request_id, name)
                _record(tx, EventKind.ASSIGNED, app, app.revision, new=bindings)
            try:
                applied = await self._apply(app)
            except RuntimeFailure as exc:
                async with self.store.transaction() as tx:
                    _record(tx, EventKind.ROLLOUT_FAILED, app, new=bindings, message=exc.message)
                    tx.delete_app(name)
                    _record(tx, EventKind.RELEASED, app, old=bindings)
                self.observed.pop(name, None)
                raise
            return await self._record_result(app, applied)

    async def edit(
        self,
        name: str,
        *,
        ports: PortEdit = PortEdit(),
        volumes: VolumeEdit = VolumeEdit(),
        env: EnvEdit = EnvEdit(),
        placement: PlacementEdit = PlacementEdit(),
        group: str | None = None,
        hidden: bool | None = None,
        routes: RouteEdit = RouteEdit(),
        validate_only: bool = False,
        etag: str = "",
        request_id: str = "",
    ) -> EditResult:
        """Add/remove ports and volumes, set/unset variables, atomically; see docs/design.md
        §1 and docs/volumes.md.

        A retry of an edit already made (same ``request_id``) changes nothing and returns
        the app as it is.
        """
        _validate_request_id(request_id)
        if group is not None:
            validate_group(group)
        if placement.add:
            self._placement(placement.add, "add_constraints")
        await self._refresh_host_ports()
        async with self._hold(name):
            async with self.store.transaction() as tx:
                if _done_before(tx, request_id, name):
                    return EditResult(tx.get_app(name), ())
                old = tx.get_app(name)
                _check_etag(old, etag)
                planned = replace(
                    old,
                    bindings=self._plan(name, old.bindings, ports, revision=old.revision),
                    constraints=placement.applied_to(old.constraints),
                    group=old.group if group is None else group,
                    hidden=old.hidden if hidden is None else hidden,
                )
                if env:
                    planned = replace(planned, env=env.applied_to(old.env))
                if volumes:
                    planned = replace(
                        planned,
                        volumes=plan_volumes(
                            old.volumes, volumes, allow_bind=self.allow_bind_mounts
                        ),
                    )
                    check_holders(
                        planned, tx.state.apps, self.instance, field="add_volumes",
                        new=[normalized(v) for v in volumes.add],  # as planned, in order
                    )  # fmt: skip
                if routes or (old.routes and planned.bindings != old.bindings):
                    # a port edit may take away a slot a route goes to: refused
                    planned = replace(
                        planned, routes=routes.applied_to(old.routes, planned.bindings)
                    )
                    _routes_free(tx, planned)
                if validate_only:  # the transaction ends with nothing to write
                    return EditResult(planned, diff_bindings(old.bindings, planned.bindings))
                if planned == old:
                    return EditResult(old, ())
                revision = tx.next_revision()
                stopped = old.desired_state is DesiredState.STOPPED
                # Nothing for Docker in a stopped app, or in a change of group or visibility
                # alone: this revision is applied as stored (unless a rollout is still owed:
                # Docker was away).
                bookkeeping = stopped or _bookkeeping(old, planned)
                new = replace(
                    planned,
                    revision=revision,
                    update_time=now(),
                    applied_revision=(
                        revision if bookkeeping and not old.rollout_owed else old.applied_revision
                    ),
                )
                tx.update_app(new)
                if request_id:
                    tx.remember_request(request_id, name)
                if new.bindings != old.bindings:
                    tx.hold_ports(name, published_ports(new.bindings))
                    _record(
                        tx, EventKind.CHANGED, new, new.revision, old=old.bindings, new=new.bindings
                    )
                    if stopped:
                        tx.release_ports_except(name, published_ports(new.bindings))
                elif new.routes != old.routes:
                    _record(tx, EventKind.ROUTES_CHANGED, new, new.revision, new=new.bindings)
            if new.rollout_owed and new.desired_state is DesiredState.RUNNING:
                new = await self._rollout(old, new)
            return EditResult(new, diff_bindings(old.bindings, new.bindings))

    async def update(
        self,
        name: str,
        *,
        image: str | None = None,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        env_edit: EnvEdit | None = None,
        constraints: Sequence[str] | None = None,
        volumes: Sequence[Volume] | None = None,
        stop_grace: float | None = None,
        group: str | None = None,
        hidden: bool | None = None,
        image_digest: str | None = None,
        etag: str = "",
        request_id: str = "",
    ) -> App:
        """Change image, command, env (all of it, or ``env_edit``'s variables), constraints,
        volumes, the stop grace period or the group (``None`` leaves a field as it is). A
        retry (same ``request_id``) changes nothing."""
        _validate_request_id(request_id)
        if group is not None:
            validate_group(group)
        async with self._hold(name):
            async with self.store.transaction() as tx:
                if _done_before(tx, request_id, name):
                    return tx.get_app(name)
                old = tx.get_app(name)
                _check_etag(old, etag)
                new = replace(
                    old,
                    image=old.image if image is None else image,
                    # Pinned by an upgrade; a new reference is its tag again.
                    image_digest=(
                        image_digest
                        if image_digest is not None
                        else old.image_digest
                        if image in (None, old.image)
                        else ""
                    ),
                    command=old.command if command is None else tuple(command),
                    env=old.env if env is None else dict(env),
                    constraints=(
                        old.constraints
                        if constraints is None
                        else self._placement(constraints, "app.constraints")
                    ),
                    stop_grace=old.stop_grace if stop_grace is None else stop_grace,
                    group=old.group if group is None else group,
                    hidden=old.hidden if hidden is None else hidden,
                )
                if env_edit is not None:
                    new = replace(new, env=env_edit.applied_to(new.env, "app.env"))
                _validate_spec(new.image, new.command, new.env, new.stop_grace)
                if volumes is not None:
                    mounts = validate_volumes(
                        volumes, "app.volumes", allow_bind=self.allow_bind_mounts, known=old.volumes
                    )
                    new = replace(new, volumes=mounts)
                    check_holders(
                        new, tx.state.apps, self.instance, field="app.volumes", new=mounts
                    )
                if new == old:
                    return old
                # Only the group or visibility: nothing for Docker to do (unless a rollout is
                # owed anyway).
                bookkeeping = _bookkeeping(old, new) and not old.rollout_owed
                new = replace(new, revision=tx.next_revision(), update_time=now())
                if bookkeeping:
                    new = replace(new, applied_revision=new.revision)
                tx.update_app(new)
                if request_id:
                    tx.remember_request(request_id, name)
            return new if bookkeeping else await self._rollout(old, new)

    async def upgrade(self, name: str) -> tuple[App, bool]:
        """Pull the app's image again; roll it out only if the registry had another image
        (the app is then pinned to it: App.image_digest). The app, and whether it changed.

        The pull runs outside the app's lock (it may take minutes); the change is made
        with the etag read before it, so a change made meanwhile is ABORTED, not lost.
        """
        app = await self.get(name)
        running = app.image_digest or await self.runtime.image_id(app.image)
        with self._following(name):
            pulled = await self.runtime.pull(app.image)
        pin = self.runtime.pin(pulled)
        if pin == app.image_digest or (not app.image_digest and pulled.id == running):
            return app, False
        return await self.update(name, image_digest=pin, etag=app.etag), True

    async def rename(
        self, name: str, new_name: str, *, etag: str = "", validate_only: bool = False
    ) -> App:
        """Give app ``name`` the name ``new_name``: one transaction moves it, its ports and
        its volumes' ownership (docs/design.md §4); then its container is made again under
        the new name, the old one stopped first (it holds the ports)."""
        validate_app_name(new_name, "new_app_id")
        if new_name == name:
            raise InvalidArgument.field("new_app_id", f"is already the name of app {name!r}")
        async with self._hold(min(name, new_name)), self._hold(max(name, new_name)):
            async with self.store.transaction() as tx:
                old = tx.get_app(name)
                _check_etag(old, etag)
                _absent(tx, new_name)
                renamed = replace(old, name=new_name, volume_stem=old.volume_owner)
                if validate_only:  # the transaction ends with nothing to write
                    return renamed
                released = tx.next_revision()
                renamed = replace(renamed, revision=tx.next_revision(), update_time=now())
                tx.delete_app(name)
                tx.insert_app(renamed)
                note = f"renamed to {new_name!r}"
                _record(tx, EventKind.RELEASED, old, released, old=old.bindings, message=note)
                _record(tx, EventKind.ASSIGNED, renamed, renamed.revision, new=renamed.bindings,
                        message=f"renamed from {name!r}")  # fmt: skip
            for state in (self.observed, self.failures):
                state.pop(name, None)
            self.readiness.forget(name)
            self.crashes.forget(name)
            try:
                with self._following(new_name):
                    await self.runtime.remove(name, old.stop_grace)
            except Unavailable as exc:  # the reconciler removes it (an orphan) when it can
                log.warning("could not remove the containers of %s yet: %s", name, exc.message)
            try:
                applied = await self._apply(renamed)
            except RuntimeFailure as exc:
                self.failures[new_name] = Failure(renamed.revision, exc.message, sticky=False)
                await self._record_result(renamed, True, failure=exc.message)
                raise
            return await self._record_result(renamed, applied)

    async def set_desired_state(self, name: str, state: DesiredState) -> App:
        """Start or stop an app; ports are kept either way."""
        async with self._hold(name):
            async with self.store.transaction() as tx:
                old = tx.get_app(name)
                if old.desired_state is state:
                    new = old
                else:
                    new = replace(
                        old,
                        desired_state=state,
                        revision=tx.next_revision(),
                        update_time=now(),
                    )
                    tx.update_app(new)
            return await self._rollout(old, new)

    async def restart(self, name: str) -> App:
        """Restart a running app's container."""
        async with self._hold(name):
            app = await self.store.get_app(name)
            if app.desired_state is not DesiredState.RUNNING:
                raise FailedPrecondition(
                    f"app {name!r} is stopped: start it instead of restarting it",
                    reason="APP_STOPPED",
                    resource=f"apps/{name}",
                )
            self.crashes.forget(name)
            try:
                with self._following(name):
                    self.observed[name] = await self.runtime.restart(app)
            except Unavailable as exc:
                self._pending(name, exc)
                raise
            await self._watch_listening(app)
            return app

    async def delete(
        self, name: str, *, etag: str = "", delete_volumes: bool = False
    ) -> tuple[App, tuple[str, ...]]:
        """Remove the app's containers, then the app and its ports; its volumes only if asked.

        Returns the app as it was and the volumes deleted. Deleting volumes needs
        Docker now (:class:`Unavailable` otherwise, and nothing changes); a named
        volume another app mounts too stays.
        """
        async with self._hold(name):
            app = await self.store.get_app(name)
            _check_etag(app, etag)
            try:
                with self._following(name):
                    await self.runtime.remove(name, app.stop_grace)
            except Unavailable:
                if delete_volumes:
                    raise
                log.warning("Docker unreachable: the container of %s is removed on reconcile", name)
            deleted: tuple[str, ...] = ()
            if delete_volumes:
                shared = {
                    v.source for other in (await self.store.list_apps()) if other.name != name
                    for v in other.volumes
                }  # fmt: skip
                deleted = await self.runtime.delete_volumes(app, keep=shared)
            async with self.store.transaction() as tx:
                tx.delete_app(name)
                _record(tx, EventKind.RELEASED, app, old=app.bindings)
            self.observed.pop(name, None)
            self.failures.pop(name, None)
            self.readiness.forget(name)
            self.crashes.forget(name)
        return app, deleted

    async def list_volumes(self) -> VolumeListing:
        """The volumes Miasma made, each with the apps that mount it now (none: left over)."""
        apps = await self.store.list_apps()
        return [(info, _holders(info, apps)) for info in await self.runtime.list_volumes()]

    async def delete_volume(
        self, name: str, *, allowed: Callable[[VolumeInfo], Awaitable[object]] | None = None
    ) -> VolumeInfo:
        """Delete a volume Miasma made that no app mounts (and that ``allowed`` lets go:
        it raises if not)."""
        info = await self.runtime.inspect_volume(validate_volume_name(name))
        if allowed is not None:
            await allowed(info)
        if holders := _holders(info, await self.store.list_apps()):
            raise FailedPrecondition(
                f"volume {name!r} is mounted by app {holders[0]!r}: remove it from the app "
                "first (apps:edit --rm-volume), or delete the app with its volumes",
                reason="VOLUME_IN_USE",
                resource=f"apps/{holders[0]}",
            )
        await self.runtime.delete_volume(name)
        return info

    async def converge(self, name: str) -> None:
        """Drive Docker to the stored state of ``name`` (used by the reconciler).

        A rollout still owed (Docker was away, or the server stopped mid-rollout)
        gets its result event now. A failure is reported on the app, and logged
        as an event once per distinct error rather than on every pass.
        """
        async with self._hold(name):
            app = await self.store.get_app(name)
            try:
                down = (
                    app.desired_state is DesiredState.RUNNING
                    and not app.rollout_owed
                    and await self._crash_gate(app)
                )
                applied = await self._apply(app, rolling=down or app.rollout_owed)
                if down and applied:
                    self.crashes.starting(name)
            except RuntimeFailure as exc:
                previous = self.failures.get(name)
                cause = (exc.reason, exc.docker_status)
                self.failures[name] = Failure(app.revision, exc.message, sticky=False, cause=cause)
                # Docker's words change on every try (new endpoint IDs): the cause does not.
                if previous is None or previous.cause != cause:
                    await self._record_result(app, True, failure=exc.message)
                raise
            failure = self.failures.get(name)
            if failure is not None and not failure.sticky:
                del self.failures[name]
            if applied:
                await self._release_old_ports(app)  # a rollout cut short held old ones too
            if applied and app.rollout_owed:
                await self._record_result(app, True)

    async def _crash_gate(self, app: App) -> bool:
        """Before an app that went down by itself is started again: in a crash loop, wait
        its turn (docs/design.md §4); :class:`RuntimeFailure` ``CRASH_LOOP`` until then.
        Whether it is down (a start follows)."""
        seen = await self.runtime.observe(app)
        if seen.running >= seen.total:
            return False  # it runs: nothing is started
        wait = self.crashes.wait(app.name)
        if wait <= 0:
            return True
        self.observed[app.name] = seen
        raise RuntimeFailure(
            f"crash loop: started again {self.crashes.starts(app.name)} times and down again "
            f"each time; next start in {math.ceil(wait)} s; {seen.last_error}",
            reason="CRASH_LOOP",
            metadata={"retry_in": f"{wait:.1f}"},
        )

    def restart_wait(self, name: str) -> float:
        """Seconds before ``name``, down in a crash loop, may be started again (0: now)."""
        return self.crashes.wait(name)

    # -- internals -----------------------------------------------------------

    def _plan(
        self,
        name: str,
        current: Sequence[Binding],
        edit: PortEdit,
        fields: EditFields = EditFields(),
        revision: int = 0,
    ) -> tuple[Binding, ...]:
        choose = self.choose_target
        if isinstance(choose, RandomTargets):  # a dry run shows what the change will pick
            choose = choose.for_plan(f"{self.instance}/{name}@{revision}")
        return plan_edit(
            name, current, edit, self.ledger, choose, fields, busy=self.host_ports.busy
        )

    async def _refresh_host_ports(self) -> None:
        """Learn which ports others hold; without Docker, plan with what is known."""
        try:
            await self.host_ports.refresh()
        except (Unavailable, RuntimeFailure) as exc:
            log.debug("could not refresh busy ports: %s", exc.message)

    async def _apply(self, app: App, *, rolling: bool = True) -> bool:
        """Drive Docker to ``app``: True if applied, False if pending (Docker away). While
        it works, reads say IN_PROGRESS if ``rolling`` (a change, or a real repair)."""
        if rolling:
            self.rolling.add(app.name)
        try:
            with self._following(app.name):
                observed = self.observed[app.name] = await self.runtime.apply(app)
        except Unavailable as exc:
            self._pending(app.name, exc)
            return False
        except RuntimeFailure as exc:
            self.observed[app.name] = Observed(running=0, total=1, last_error=exc.message)
            raise
        if observed.node and observed.node != app.node:
            # The app's data now lives on that node: it stays there (docs/volumes.md).
            async with self.store.transaction() as tx:
                tx.update_app(replace(tx.get_app(app.name), node=observed.node))
        failure = self.failures.get(app.name)
        if failure is not None and app.revision > failure.revision:
            del self.failures[app.name]  # a newer change rolled out: the old refusal is history
        return True

    @contextlib.asynccontextmanager
    async def _hold(self, name: str) -> AsyncIterator[None]:
        """Hold app ``name``'s lock (its rollouts are one at a time); a rollout made under
        it is over (no longer IN_PROGRESS) when it is released."""
        async with self.locks.hold(name):
            try:
                yield
            finally:
                self.rolling.discard(name)

    @contextlib.contextmanager
    def _following(self, name: str) -> Iterator[None]:
        """Meanwhile, what the runtime says it does for ``name`` is the app's phase."""
        token = PHASE.set(functools.partial(self.phases.__setitem__, name))
        try:
            yield
        finally:
            PHASE.reset(token)
            self.phases.pop(name, None)

    async def _not_listening(self, app: App, listening: Listening) -> None:
        """The verdict of a listening watch, as an event: nothing answers on those ports
        (not for an app that is down: its rollout failed, and says why)."""
        if not self.observed.get(app.name, NOT_SEEN).running:
            return
        async with self.store.transaction() as tx:
            current = tx.get_app(app.name)
            _record(tx, EventKind.NOT_LISTENING, current, new=current.bindings,
                    message=listening.verdict)  # fmt: skip

    async def _watch_listening(self, app: App) -> None:
        """A rollout (re)started ``app``, or stopped it: see whether it listens."""
        seen = self.observed.get(app.name, NOT_SEEN)
        if app.desired_state is DesiredState.RUNNING and seen.running:
            await self.readiness.watch(app)
        else:
            self.readiness.forget(app.name)

    async def _record_result(self, app: App, applied: bool, failure: str = "") -> App:
        """Log a rollout's result: applied, failed (``failure``, or applied but not running:
        a process that exited at once, with Docker's words and its last output) or pending;
        the app after."""
        seen = self.observed.get(app.name, NOT_SEEN)
        if failure:
            kind, message = EventKind.ROLLOUT_FAILED, failure
        elif applied and seen.running < seen.total and seen.last_error:
            kind, message = EventKind.ROLLOUT_FAILED, seen.last_error  # rolled out, not running
        elif applied:
            kind, message = EventKind.ROLLOUT_APPLIED, ""
        else:
            kind, message = EventKind.ROLLOUT_PENDING, seen.last_error
        async with self.store.transaction() as tx:
            _record(tx, kind, app, new=app.bindings, message=message)
            if applied and not failure:
                tx.mark_applied(app.name, app.revision)
            recorded = tx.get_app(app.name)
        if kind is EventKind.ROLLOUT_APPLIED:
            await self._watch_listening(app)
        return recorded

    async def _rollout(self, old: App, new: App) -> App:
        """Apply ``new``; on refusal commit ``old`` back and re-raise. The app after."""
        self.crashes.forget(new.name)  # a user's change: a crash loop is counted afresh
        try:
            applied = await self._apply(new)
        except RuntimeFailure as exc:
            async with self.store.transaction() as tx:
                _record(
                    tx, EventKind.ROLLOUT_FAILED, new, old=old.bindings, new=new.bindings,
                    message=exc.message,
                )  # fmt: skip
                restored = replace(old, revision=tx.next_revision(), update_time=now())
                tx.update_app(restored)
                tx.release_ports_except(old.name, published_ports(old.bindings))
                if restored.bindings != new.bindings:
                    _record(
                        tx, EventKind.CHANGED, restored, restored.revision, old=new.bindings,
                        new=restored.bindings, message="reverted: " + exc.message,
                    )  # fmt: skip
            try:
                if await self._apply(restored):
                    async with self.store.transaction() as tx:
                        tx.mark_applied(restored.name, restored.revision)
            except RuntimeFailure as restore_exc:
                log.error(
                    "could not restore app %s after a failed change: %s", old.name, restore_exc
                )
            self.failures[old.name] = Failure(restored.revision, exc.message, sticky=True)
            raise
        except BaseException:
            # Cut short (the caller's deadline, a shutdown): the change stands and the
            # reconciler finishes its rollout, so the app holds its new ports only.
            await self._release_old_ports(new)
            raise
        await self._release_old_ports(new)
        return await self._record_result(new, applied)

    async def _release_old_ports(self, app: App) -> None:
        """Release the published ports ``app`` held for a rollout that no binding uses now."""
        async with self.store.transaction() as tx:
            tx.release_ports_except(app.name, published_ports(tx.get_app(app.name).bindings))

    def _pending(self, name: str, exc: Unavailable) -> None:
        self.observed[name] = Observed(
            running=0,
            total=1,
            last_error=f"{exc.message}; applied when Docker returns",
            rollout=RolloutState.PENDING,
        )


def _record(
    tx: Transaction,
    kind: EventKind,
    app: App,
    revision: int = 0,
    *,
    old: tuple[Binding, ...] = (),
    new: tuple[Binding, ...] = (),
    message: str = "",
) -> None:
    """Log a port event in ``tx``, at ``revision`` or at a fresh one."""
    revision = revision or tx.next_revision()
    tx.record(PortEvent(revision, app.name, kind, old, new, message, now(), app.group, app.routes))


def _holders(info: VolumeInfo, apps: Sequence[App]) -> tuple[str, ...]:
    """The apps that mount the volume ``info`` now: the app it was made for, if that is an
    image's volume and the app still lives, and every app that names it."""
    return tuple(
        a.name
        for a in apps
        if (info.image_path and (a.volume_owner, a.uid) == (info.app, info.uid))
        or any(v.source == info.name for v in a.volumes)
    )


def _validate_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
        raise InvalidArgument.field(
            "request_id", f"at most {MAX_REQUEST_ID} printable characters (a UUID, say)"
        )


def _done_before(tx: Transaction, request_id: str, name: str) -> bool:
    """Whether the change ``request_id`` names was made already (this is a retry)."""
    if not request_id:
        return False
    made_to = tx.request(request_id)
    if made_to is not None and made_to != name:
        raise InvalidArgument.field(
            "request_id", f"was used for a change of app {made_to!r}: use a new one per change"
        )
    return made_to is not None


def _absent(tx: Transaction, name: str) -> None:
    try:
        tx.get_app(name)
    except NotFound:
        return
    raise AlreadyExists.app(name)


def _check_etag(app: App, etag: str) -> None:
    if etag and etag != app.etag:
        raise Aborted(
            f"etag {etag!r} does not match the current etag {app.etag!r} of app {app.name!r}: "
            "re-read the app and retry",
            resource=f"apps/{app.name}",
        )


def _bookkeeping(old: App, new: App) -> bool:
    """Whether ``new`` differs from ``old`` only in what Docker never sees."""
    return replace(new, group=old.group, hidden=old.hidden, routes=old.routes) == old


def _routes_free(tx: Transaction, app: App) -> None:
    """ALREADY_EXISTS naming the app that has one of ``app``'s hosts and paths already."""
    if app.routes:
        others = (
            (name, other.routes)
            for name in tx.state.apps.keys() | tx.apps.keys()
            if name != app.name and (other := tx.app_or_none(name)) is not None
        )
        taken(app.routes, others)


def _validate_spec(
    image: str, command: Sequence[str], env: Mapping[str, str], stop_grace: float
) -> None:
    validate_image(image)
    if not 0 <= stop_grace <= MAX_STOP_GRACE:
        raise InvalidArgument.field(
            "app.stop_grace",
            f"must be between 0 and {MAX_STOP_GRACE:g} seconds, got {stop_grace:g}",
        )
    check_env(env)
    if any("\x00" in arg for arg in command):
        raise InvalidArgument.field("app.command", "arguments may not contain NUL characters")

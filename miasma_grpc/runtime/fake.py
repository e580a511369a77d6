"""An in-memory :class:`~miasma_grpc.runtime.base.Runtime`, for fast tests of everything above
the Docker edge (as httpx's ``MockTransport`` is for its clients).

It records what it was asked to run, the volumes it made (for the app's own
named volumes and for the ``VOLUME`` paths of ``images``), and can be told
to refuse (:class:`RuntimeFailure`) or to be away (:class:`Unavailable`)
on the next call. The real runtimes are tested against a real engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from miasma_grpc.domain.errors import FailedPrecondition, NotFound, RuntimeFailure, Unavailable
from miasma_grpc.domain.images import PulledImage
from miasma_grpc.domain.logs import LogLine, LogSource, Stream
from miasma_grpc.domain.models import (
    DEFAULT_STOP_GRACE,
    App,
    Binding,
    DesiredState,
    Observed,
)
from miasma_grpc.domain.volumes import Mount, VolumeInfo, app_mounts
from miasma_grpc.runtime.base import RuntimeInfo, Survey, say

# refuse: Docker says no; unavailable: Docker is away; cancel: the call is cut short
# (the caller's deadline, a shutdown) while Docker works.
Failure = Literal["refuse", "unavailable", "cancel"] | None


@dataclass(frozen=True)
class Deployed:
    """What the fake Docker was last asked to run for one app."""

    image: str
    command: tuple[str, ...]
    bindings: tuple[Binding, ...]
    env: dict[str, str]
    desired_state: DesiredState
    mounts: tuple[Mount, ...] = ()


@dataclass
class FakeRuntime:
    """An in-memory Runtime; ``images`` maps an image to the ``VOLUME`` paths it declares."""

    images: Mapping[str, Sequence[str]] = field(default_factory=dict)
    instance: str = "miasma"
    node: str = ""  # when set, an app with mounts is reported running there (swarm-like)
    reachable: bool = True  # what info() says
    removed: list[str] = field(default_factory=list)  # names remove() was called for
    events: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)  # for changes()
    mode: str = "fake"
    deployed: dict[str, Deployed] = field(default_factory=dict)
    volumes: dict[str, VolumeInfo] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    armed: Failure = None
    fired: Failure = None  # the failure the last armed call raised
    refusals: int = 0
    applies: int = 0  # calls of apply that got through
    # Per container ID (f"{app}-{generation}"), the lines it wrote; a new generation per
    # apply that changes what runs, as Docker makes a new container.
    output: dict[str, list[LogLine]] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    # Images by ID on the (fake) engine, and what a pull of a reference gets from its
    # registry (a reference missing there: the pull fails).
    image_ids: dict[str, str] = field(default_factory=dict)
    registry: dict[str, str] = field(default_factory=dict)
    # Apps whose process exits at once (what observe reports of them while running).
    exits: dict[str, str] = field(default_factory=dict)
    # Apps that accept no connection on these TCP target ports (None: ports unknowable,
    # as on a swarm); every other running app listens on all of its ports.
    deaf: dict[str, frozenset[int] | None] = field(default_factory=dict)
    written: asyncio.Condition = field(default_factory=asyncio.Condition)

    def arm(self, failure: Failure) -> None:
        """Make the next apply/restart fail as ``failure`` says (once)."""
        self.armed, self.fired = failure, None

    def _maybe_fail(self, app: App | str, action: str) -> None:
        failure, self.armed = self.armed, None
        if failure is None:
            return
        self.fired = failure
        name = app if isinstance(app, str) else app.name
        if failure == "refuse":
            self.refusals += 1  # in the message, as Docker puts new IDs in each of its own
            raise RuntimeFailure(
                f"fake Docker refused to {action} {name!r} (endpoint {self.refusals:08x})",
                docker_status=500,
            )
        if failure == "cancel":
            raise asyncio.CancelledError
        raise Unavailable(f"fake Docker is away and could not {action} {name!r}")

    async def info(self) -> RuntimeInfo:
        """Reachable unless ``reachable`` says otherwise."""
        return RuntimeInfo(reachable=self.reachable, mode=self.mode)

    async def apply(self, app: App) -> Observed:
        """Record ``app`` as what runs, making its volumes (unless armed to fail)."""
        self._maybe_fail(app, "apply")
        self.applies += 1
        say(f"applying revision {app.revision}")
        mounts = app_mounts(app, self.images.get(app.image, ()), self.instance)
        for mount in mounts:
            if not mount.volume.bind and mount.volume.source not in self.volumes:
                self.volumes[mount.volume.source] = VolumeInfo(
                    mount.volume.source,
                    app=app.volume_owner if mount.image_path else app.name,
                    uid=app.uid if mount.image_path else "",
                    image_path=mount.image_path,
                )
        deployed = Deployed(
            app.image_digest or app.image, app.command, app.bindings, app.container_env,
            app.desired_state, mounts,
        )  # fmt: skip
        before = self.deployed.get(app.name)
        if before is None or replace(before, desired_state=deployed.desired_state) != deployed:
            self.generations[app.name] = self.generations.get(app.name, 0) + 1  # not on a stop
        self.deployed[app.name] = deployed
        await self._wake_readers()  # a follow of the container it replaced ends
        observed = await self.observe(app)
        if self.node and mounts and not app.constraints and observed.running:
            return Observed(observed.running, observed.total, node=app.node or self.node)
        return observed

    async def restart(self, app: App) -> Observed:
        """Like apply, and count the restart."""
        self._maybe_fail(app, "restart")
        observed = await self.apply(app)
        self.restarts[app.name] = self.restarts.get(app.name, 0) + 1
        return observed

    async def remove(self, name: str, stop_grace: float = DEFAULT_STOP_GRACE) -> None:
        """Forget the app (its volumes stay)."""
        self.removed.append(name)
        self.deployed.pop(name, None)
        await self._wake_readers()

    async def survey(self, apps: Sequence[App]) -> Survey:
        """Apps that have a recorded deployment; none is taken as in sync (all converge)."""
        return Survey(found=frozenset(self.deployed))

    async def observe(self, app: App) -> Observed:
        """1/1 when it was last applied running, 0/0 when stopped."""
        deployed = self.deployed.get(app.name)
        if deployed is None:
            return Observed(running=0, total=1, last_error="no container")
        if deployed.desired_state is DesiredState.STOPPED:
            return Observed(running=0, total=0)
        if why := self.exits.get(app.name):
            return Observed(running=0, total=1, last_error=why)
        return Observed(running=1, total=1)

    async def deaf_ports(self, app: App) -> frozenset[int] | None:
        """What ``deaf`` says of the app; nothing (all ports) while it does not run."""
        observed = await self.observe(app)
        if not observed.running:
            return frozenset(b.target for b in app.bindings)
        return self.deaf.get(app.name, frozenset())

    async def changes(self) -> AsyncIterator[str]:
        """What tests put in ``events``; ``None`` put there breaks the stream (and while not
        ``reachable``, it cannot be opened)."""
        if not self.reachable:
            raise Unavailable("fake Docker is away: no event stream")
        yield ""
        while (name := await self.events.get()) is not None:
            yield name
        raise Unavailable("fake Docker's event stream ended")

    async def image_id(self, image: str) -> str:
        """The ID ``image`` has on the engine ("" when none)."""
        return self.image_ids.get(image, "")

    async def pull(self, image: str) -> PulledImage:
        """What the registry has for ``image`` (a RuntimeFailure when it has nothing)."""
        self._maybe_fail(image, "pull")
        if image not in self.registry:
            raise RuntimeFailure(f"fake registry has no {image!r}", reason="IMAGE_PULL_FAILED")
        self.image_ids[image] = self.registry[image]
        return PulledImage(
            self.registry[image], f"{image.rsplit(':', 1)[0]}@{self.registry[image]}"
        )

    def pin(self, pulled: PulledImage) -> str:
        """The image ID, as the container runtime pins."""
        return pulled.id

    def container(self, name: str) -> str:
        """The ID of the app's current (fake) container."""
        return f"{name}-{self.generations.get(name, 0)}"

    async def write(self, name: str, text: str, stream: Stream = Stream.STDOUT) -> LogLine:
        """The app's current container writes a line of ``text`` now."""
        source = self.container(name)
        lines = self.output.setdefault(source, [])
        after = lines[-1].time + 1 if lines else 0
        line = LogLine(max(time.time_ns(), after), stream, text, source[:12])
        lines.append(line)
        await self._wake_readers()
        return line

    async def _wake_readers(self) -> None:
        async with self.written:
            self.written.notify_all()

    async def log_source(self, app: App) -> LogSource | None:
        """The current container, running unless the app is stopped; None before any."""
        deployed = self.deployed.get(app.name)
        if deployed is None:
            return None
        running = deployed.desired_state is DesiredState.RUNNING
        return LogSource(self.container(app.name), running)

    async def logs(
        self, source: LogSource, *, tail: int, since: int | None, follow: bool
    ) -> AsyncIterator[LogLine]:
        """Lines of ``source`` as Docker gives them; a follow ends when the app's current
        container is another one (or it stops)."""
        lines = self.output.setdefault(source.ident, [])
        kept = [line for line in lines if since is None or line.time >= since]
        sent = len(lines) - len(kept[-tail:] if tail else kept)
        name = source.ident.rpartition("-")[0]
        while True:
            while sent < len(lines):
                sent += 1
                yield lines[sent - 1]
            deployed = self.deployed.get(name)
            if (
                not follow
                or self.container(name) != source.ident
                or deployed is None
                or deployed.desired_state is DesiredState.STOPPED
            ):
                return
            async with self.written:
                if sent == len(lines):  # checked under the lock: no wake-up is missed
                    await self.written.wait()

    async def delete_volumes(self, app: App, keep: Collection[str] = ()) -> tuple[str, ...]:
        """Delete the volumes made for ``app`` (as the Docker runtimes do)."""
        self._maybe_fail(app, "delete the volumes of")
        own = {v.source for v in app.volumes if not v.bind}
        made = [
            v.name
            for v in self.volumes.values()
            if (v.image_path and (v.app, v.uid) == (app.volume_owner, app.uid))
            or (v.name in own and v.name not in keep)
        ]
        for name in made:
            await self.delete_volume(name)
        return tuple(sorted(made))

    async def list_volumes(self) -> list[VolumeInfo]:
        """Every volume made, in name order."""
        return sorted(self.volumes.values(), key=lambda v: v.name)

    async def inspect_volume(self, name: str) -> VolumeInfo:
        """One volume; :class:`NotFound` if none was made of that name."""
        if name not in self.volumes:
            raise NotFound(f"no volume {name!r}", reason="VOLUME_NOT_FOUND")
        return self.volumes[name]

    async def delete_volume(self, name: str) -> None:
        """Delete one volume; refused while a deployed app mounts it."""
        for app, deployed in self.deployed.items():
            if any(m.volume.source == name for m in deployed.mounts):
                raise FailedPrecondition(f"volume {name!r} is in use by {app!r}")
        self.volumes.pop(name, None)

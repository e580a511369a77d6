"""The interface the rest of Miasma needs from a Docker runtime.

Runtimes raise :class:`~miasma_grpc.domain.errors.RuntimeFailure` when Docker
answered but refused (pull failed, port taken) and
:class:`~miasma_grpc.domain.errors.Unavailable` when Docker could not be
reached at all; callers treat the two differently (revert vs. retry later).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from miasma_grpc.domain.images import PulledImage
from miasma_grpc.domain.logs import LogLine, LogSource
from miasma_grpc.domain.models import DEFAULT_STOP_GRACE, App, Observed, Port
from miasma_grpc.domain.volumes import VolumeInfo

LABEL_APP = "io.miasma.app"
LABEL_SPEC = "io.miasma.spec-hash"
LABEL_MANAGED = "io.miasma.instance"  # value: the Miasma instance that owns it
# On volumes Miasma makes for an image's VOLUME paths: the app's uid and the path.
LABEL_UID = "io.miasma.app-uid"
LABEL_IMAGE_PATH = "io.miasma.image-path"

# Where a runtime tells what the rollout under way does now (ObservedState.phase): set
# by the caller around a runtime call, for that call only (docs/design.md §4).
PHASE: ContextVar[Callable[[str], None] | None] = ContextVar("miasma_phase", default=None)


def say(phase: str) -> None:
    """Tell whoever follows the rollout under way what it does now ("pulling …")."""
    if (sink := PHASE.get()) is not None:
        sink(phase)


@dataclass(frozen=True)
class RuntimeInfo:
    """What the engine says about itself."""

    reachable: bool
    mode: str
    docker_version: str = ""
    swarm_id: str = ""
    join_command: str = ""


@dataclass(frozen=True)
class Survey:
    """What one listing of Docker says about every app, for a reconcile pass.

    ``in_sync`` maps the apps Docker visibly runs as stored (nothing to do) to
    what it reports for them; every other app needs a full :meth:`Runtime.apply`.
    ``found`` names the apps that have Docker objects of this Miasma (orphans
    are those without an app).
    """

    found: frozenset[str]
    in_sync: Mapping[str, Observed] = field(default_factory=dict)


class Runtime(Protocol):
    """Drives Docker for apps; implementations are async context managers."""

    mode: str

    async def info(self) -> RuntimeInfo:
        """Ping the engine; never raises."""
        ...

    async def apply(self, app: App) -> Observed:
        """Make Docker match ``app`` (create, recreate, start or stop as needed)."""
        ...

    async def restart(self, app: App) -> Observed:
        """Restart the app's container(s), creating them if missing."""
        ...

    async def remove(self, name: str, stop_grace: float = DEFAULT_STOP_GRACE) -> None:
        """Stop (``stop_grace`` seconds before SIGKILL) and remove everything Docker runs
        for the app called ``name``; its volumes stay."""
        ...

    async def delete_volumes(self, app: App, keep: Collection[str] = ()) -> tuple[str, ...]:
        """Delete the volumes Miasma made for ``app`` (but those in ``keep``); their names."""
        ...

    async def list_volumes(self) -> list[VolumeInfo]:
        """Every volume this Miasma made."""
        ...

    async def inspect_volume(self, name: str) -> VolumeInfo:
        """One volume this Miasma made; :class:`NotFound` for any other."""
        ...

    async def delete_volume(self, name: str) -> None:
        """Delete one volume (refused by Docker while a container uses it)."""
        ...

    async def survey(self, apps: Sequence[App]) -> Survey:
        """One look at everything Docker runs for this Miasma, compared with ``apps``."""
        ...

    async def observe(self, app: App) -> Observed:
        """What is running for ``app`` right now."""
        ...

    async def deaf_ports(self, app: App) -> frozenset[int] | None:
        """The app's TCP target ports that accept no connection now (all of them while it
        does not run); None where the runtime cannot reach the app to tell."""
        ...

    def changes(self) -> AsyncIterator[str]:
        """Names of apps whose Docker objects changed, as Docker reports it, until the
        stream breaks (:class:`Unavailable`). Yields ``""`` first, once it is open: what
        happened before then is to be read by a full look (:meth:`survey`)."""
        ...

    async def image_id(self, image: str) -> str:
        """The ID of ``image`` on the engine now; "" when it has none."""
        ...

    async def pull(self, image: str) -> PulledImage:
        """Pull ``image`` from its registry even if the engine has it (an upgrade)."""
        ...

    def pin(self, pulled: PulledImage) -> str:
        """What an app upgraded to ``pulled`` is to run (App.image_digest)."""
        ...

    async def log_source(self, app: App) -> LogSource | None:
        """Where the app's output is read from now (its current container, or its
        service); None when Docker has nothing of it."""
        ...

    def logs(
        self, source: LogSource, *, tail: int, since: int | None, follow: bool
    ) -> AsyncIterator[LogLine]:
        """The last ``tail`` lines (0: all) of ``source`` written at or after ``since``
        (ns since the epoch), then, with ``follow``, new lines until it stops."""
        ...


class HostPorts(Protocol):
    """Tells whether something outside Miasma holds a port (on the host, or in the swarm)."""

    async def refresh(self) -> None:
        """Bring what :meth:`busy` knows up to date (called before each plan)."""
        ...

    def busy(self, port: Port) -> bool:
        """True if ``port`` is taken by something that is not an app of this Miasma."""
        ...

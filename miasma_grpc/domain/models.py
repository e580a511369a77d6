"""Plain data the rest of Miasma talks in: apps, ports and their bindings.

Everything here is immutable (frozen dataclasses, a named tuple, enums) so that values can be
shared between the store, the runtime and the API without defensive copies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

PORT_MIN = 1
PORT_MAX = 65535
DEFAULT_STOP_GRACE = 10.0  # seconds, as `docker stop`


class Protocol(enum.StrEnum):
    """Transport protocol of a published/target port pair."""

    TCP = "tcp"
    UDP = "udp"


class DesiredState(enum.StrEnum):
    """Whether the user wants the app's container running."""

    RUNNING = "running"
    STOPPED = "stopped"


class PublishMode(enum.StrEnum):
    """How the swarm runtime publishes a port (the container runtime ignores it)."""

    INGRESS = "ingress"  # every node routes the port to the app
    HOST = "host"  # only the node running the task listens


class Port(NamedTuple):
    """A port number together with its protocol (``5353/udp``).

    A named tuple, not a dataclass: ports are the keys of the ledger and of
    every allocation step, where C-level hashing and comparison count.
    """

    number: int
    protocol: Protocol = Protocol.TCP

    def __str__(self) -> str:
        return f"{self.number}/{self.protocol}"


@dataclass(frozen=True)
class Binding:
    """One slot: published port *i* paired with target port *i*.

    ``published_explicit`` / ``target_explicit`` say whether the user asked
    for that number; otherwise Miasma chose it and keeps it (sticky).
    """

    published: int
    target: int
    protocol: Protocol = Protocol.TCP
    published_explicit: bool = False
    target_explicit: bool = False
    mode: PublishMode = PublishMode.INGRESS

    @property
    def published_port(self) -> Port:
        """The published side as a :class:`Port`."""
        return Port(self.published, self.protocol)

    @property
    def target_port(self) -> Port:
        """The target side as a :class:`Port`."""
        return Port(self.target, self.protocol)


def env_names(slot_index: int) -> tuple[str, ...]:
    """Environment variable names that expose the target of slot ``slot_index`` (0-based)."""
    if slot_index == 0:
        return ("PORT", "PORT_1")
    return (f"PORT_{slot_index + 1}",)


def port_env(bindings: tuple[Binding, ...] | list[Binding]) -> dict[str, str]:
    """The ``PORT``/``PORT_N`` variables a container gets for ``bindings``."""
    env: dict[str, str] = {}
    for index, binding in enumerate(bindings):
        for name in env_names(index):
            env[name] = str(binding.target)
    return env


def is_reserved_env_name(name: str) -> bool:
    """True for ``PORT`` and ``PORT_<n>``: Miasma owns these names."""
    if name == "PORT":
        return True
    prefix, _, suffix = name.partition("_")
    return prefix == "PORT" and suffix.isdigit()


@dataclass(frozen=True)
class PortRange:
    """An inclusive range of port numbers."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not PORT_MIN <= self.start <= self.end <= PORT_MAX:
            raise ValueError(f"invalid port range {self.start}-{self.end}")

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """Parse ``"3001-3999"``."""
        start, sep, end = text.partition("-")
        if not sep:
            raise ValueError(f"expected START-END, got {text!r}")
        return cls(int(start), int(end))


@dataclass(frozen=True)
class Volume:
    """A mount of an app: a named volume or (if allowed) a host path, at ``target``.

    ``source`` is a Docker volume name (``pgdata``) or an absolute host path
    (a bind mount); :mod:`miasma_grpc.domain.volumes` validates both.
    """

    source: str
    target: str
    read_only: bool = False

    @property
    def bind(self) -> bool:
        """Whether the source is a host path (a bind mount) rather than a named volume."""
        return self.source.startswith("/")

    def __str__(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


class RolloutState(enum.StrEnum):
    """Where an app's latest change stands with Docker (a fact, not a word in a message)."""

    APPLIED = "applied"  # Docker runs the app's current revision (or stopped it, as asked)
    PENDING = "pending"  # accepted; waits for Docker (away, or a rollout cut short)
    IN_PROGRESS = "in_progress"  # a rollout is under way
    FAILED = "failed"  # Docker refused it, or the app does not run as it should


@dataclass(frozen=True)
class Observed:
    """What the runtime last reported for an app.

    ``node`` is the swarm node that runs an app whose data lives on it (empty
    otherwise): the first one is recorded, and the app stays there. ``rollout`` is
    decided by the manager from what it knows (``None`` until then).
    ``unknown_since`` is set while Miasma cannot see Docker (unreachable, or its
    event stream is down): the rest is as it was last seen.
    """

    running: int = 0
    total: int = 0
    last_error: str = ""
    node: str = ""
    rollout: RolloutState | None = None
    # Set while Docker cannot be watched: the figures above are as of then.
    unknown_since: datetime | None = None
    phase: str = ""  # what a rollout under way is doing now, in words
    not_listening: tuple[int, ...] = ()  # TCP target ports not answering after the wait


@dataclass(frozen=True, order=True)
class Route:
    """``host`` (and ``path``, "" for every path) to the app's port ``slot``; ``tls``: on
    the router's HTTPS port too."""

    host: str
    path: str = ""
    slot: int = 0
    tls: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """What may belong to one app only: the host and the path."""
        return (self.host, self.path)

    def __str__(self) -> str:
        return f"{self.host}{self.path}"


@dataclass(frozen=True)
class App:
    """An app's desired state as stored, plus bookkeeping."""

    name: str
    image: str
    bindings: tuple[Binding, ...]
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    desired_state: DesiredState = DesiredState.RUNNING
    revision: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None
    constraints: tuple[str, ...] = ()
    applied_revision: int = 0  # the revision Docker last finished rolling out
    volumes: tuple[Volume, ...] = ()
    stop_grace: float = DEFAULT_STOP_GRACE  # seconds from the stop signal to SIGKILL
    # Random, given at creation: names the volumes Miasma makes for this app, so that a
    # later app of the same name does not silently pick up this one's data.
    uid: str = ""
    node: str = ""  # swarm: the node the app's data lives on (empty: not pinned)
    group: str = ""  # the user's grouping of apps (Miasma's --group); empty: none
    hidden: bool = False  # left out of listings unless asked for (Miasma's --hidden)
    # The image as apps:upgrade last pulled it ("sha256:…", or "repo@sha256:…" on a swarm):
    # what runs, rather than whatever the tag points at on the engine. Empty: the tag.
    image_digest: str = ""
    # The name the app had when it was created, once it is renamed ("": its name): the
    # volumes Miasma makes for its image are named after it, and stay so (docs/volumes.md).
    volume_stem: str = ""
    routes: tuple[Route, ...] = ()  # host names the router sends to the app's ports

    @property
    def volume_owner(self) -> str:
        """The name the volumes Miasma makes for the app's image carry."""
        return self.volume_stem or self.name

    @property
    def rollout_owed(self) -> bool:
        """Whether Docker has not yet finished rolling out this revision."""
        return self.applied_revision < self.revision

    @property
    def etag(self) -> str:
        """Opaque version tag for optimistic concurrency."""
        return f'W/"{self.revision}"'

    @property
    def container_env(self) -> dict[str, str]:
        """User env plus the Miasma-owned ``PORT`` variables (which win)."""
        return {**self.env, **port_env(self.bindings)}

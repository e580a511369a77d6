"""Port-change events: what the event log records and watchers receive.

Every event has the server-wide revision of the transaction that wrote it,
so a watcher that remembers the last revision it saw can resume exactly
after it. Rollout results are events too, written after Docker answered.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from miasma_grpc.domain.models import Binding, Route


class EventKind(enum.StrEnum):
    """What happened to an app's ports (the proto enum has the same names)."""

    SNAPSHOT = "snapshot"  # current bindings, sent to a watcher that starts at 0; never stored
    ASSIGNED = "assigned"
    CHANGED = "changed"
    RELEASED = "released"
    ROLLOUT_APPLIED = "rollout_applied"
    ROLLOUT_FAILED = "rollout_failed"
    ROLLOUT_PENDING = "rollout_pending"
    NOT_LISTENING = "not_listening"  # runs, but not on its ports after the ready timeout
    ROUTES_CHANGED = "routes_changed"  # its routes changed (no rollout: the router's part)


@dataclass(frozen=True)
class PortEvent:
    """One entry of the event log."""

    revision: int
    app: str
    kind: EventKind
    old: tuple[Binding, ...] = ()
    new: tuple[Binding, ...] = ()
    message: str = ""
    time: datetime | None = None
    group: str = ""  # the app's group when the event was written
    routes: tuple[Route, ...] = ()  # the app's routes when the event was written


@dataclass(frozen=True)
class SnapshotComplete:
    """Marks the end of the snapshot; live events follow."""

    revision: int


@dataclass(frozen=True)
class Progress:
    """Heartbeat: every event up to ``revision`` has been sent."""

    revision: int


WatchItem = PortEvent | SnapshotComplete | Progress


@dataclass(frozen=True)
class Retention:
    """How much of the event log is kept: at most ``max_events``, none older than ``max_age``."""

    max_events: int = 100_000
    max_age: timedelta | None = timedelta(days=7)

"""One atomic change, decided in memory and written later as a list of SQL statements.

A transaction reads and changes the store's *working state* (every app, the
revision counter and the port ledger, as of the last transaction queued)
without waiting for the disk: its methods are plain functions, so a
transaction body cannot suspend and two bodies can never interleave. What it
changes is kept aside until the body ends; then it is applied to the working
state and its statements are written with the next group commit.

The schema stays the final guard: a port another app holds fails the
statement that claims it (:class:`Op.conflict`), whatever memory said.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from miasma_grpc.domain.allocator import PortLedger
from miasma_grpc.domain.errors import AlreadyExists, MiasmaError, NotFound
from miasma_grpc.domain.events import PortEvent
from miasma_grpc.domain.models import App, Port
from miasma_grpc.store import events
from miasma_grpc.store.rows import APP_COLUMNS, app_row, binding_rows, iso

COLUMNS = APP_COLUMNS.split(", ")
UPDATED = [c for c in COLUMNS if c not in ("name", "create_time", "uid")]  # never change


@dataclass(frozen=True, slots=True)
class Op:
    """One SQL statement (``many``: run once per parameter row).

    ``conflict`` makes a statement that changed no row an error: it builds
    the error from the database as it is.
    """

    sql: str
    params: Any = ()
    many: bool = False
    conflict: Callable[[sqlite3.Connection], MiasmaError] | None = None

    def run(self, db: sqlite3.Connection) -> None:
        """Execute on ``db`` (inside the caller's transaction)."""
        cursor = (
            db.executemany(self.sql, self.params)
            if self.many
            else db.execute(self.sql, self.params)
        )
        if self.conflict is not None and cursor.rowcount == 0:
            raise self.conflict(db)


@dataclass
class WorkingState:
    """Every app, the revision and the ledger, as of the last transaction queued; and the
    request IDs of the changes of the last day (request ID -> app)."""

    apps: dict[str, App]
    revision: int
    ledger: PortLedger
    requests: dict[str, str] = field(default_factory=dict)


@dataclass
class Transaction:
    """Changes to the working state, applied together when the body ends."""

    state: WorkingState
    ops: list[Op] = field(default_factory=list)
    # (held?, app, ports) in the order they happened: replayed in that order after
    # the body, so a port held and then released in one transaction ends released.
    ledger_changes: list[tuple[bool, str, list[Port]]] = field(default_factory=list)
    revision: int = 0  # the last revision this transaction took, 0 if none
    events: list[PortEvent] = field(default_factory=list)
    apps: dict[str, App | None] = field(default_factory=dict)  # changed here; None: deleted
    new_requests: dict[str, str] = field(default_factory=dict)  # request ID -> app
    _holders: dict[Port, str | None] = field(default_factory=dict)  # port moves made here

    # -- reads ---------------------------------------------------------------

    def get_app(self, name: str) -> App:
        """The app as this transaction sees it; :class:`NotFound` if there is none."""
        app = self.app_or_none(name)
        if app is None:
            raise NotFound(f"app {name!r} not found", resource=f"apps/{name}")
        return app

    def app_or_none(self, name: str) -> App | None:
        """The app as this transaction sees it; None if there is none."""
        return self.apps[name] if name in self.apps else self.state.apps.get(name)

    def request(self, request_id: str) -> str | None:
        """The app a change with ``request_id`` was made to, if one was (retries)."""
        return self.new_requests.get(request_id) or self.state.requests.get(request_id)

    def holder(self, port: Port) -> str | None:
        """Who holds ``port`` as this transaction sees it."""
        if port in self._holders:
            return self._holders[port]
        return self.state.ledger.holder(port)

    def held_by(self, app: str) -> set[Port]:
        """The ports ``app`` holds as this transaction sees it."""
        held = self.state.ledger.held_by(app)
        for port, name in self._holders.items():
            if name == app:
                held.add(port)
            else:
                held.discard(port)
        return held

    # -- changes -------------------------------------------------------------

    def next_revision(self) -> int:
        """Bump and return the server-wide revision."""
        self.revision = (self.revision or self.state.revision) + 1
        return self.revision  # stored with the batch that writes this transaction

    def insert_app(self, app: App) -> None:
        """Insert a new app with its bindings and hold its published ports."""
        if self._exists(app.name):
            raise AlreadyExists.app(app.name)
        self.apps[app.name] = app
        row = app_row(app)
        self.ops.append(
            Op(
                f"INSERT INTO apps ({APP_COLUMNS}) VALUES ({', '.join('?' * len(row))}) "
                "ON CONFLICT (name) DO NOTHING",
                row,
                conflict=lambda _db: AlreadyExists.app(app.name),
            )
        )
        self._write_bindings(app)
        self.hold_ports(app.name, [b.published_port for b in app.bindings])

    def update_app(self, app: App) -> None:
        """Overwrite an app's fields, bindings and applied revision (ports are held separately).

        Only what changed is written: a port edit rewrites the revision and the
        bindings, not the command, env and constraints.
        """
        old = self.get_app(app.name)
        self.apps[app.name] = app
        if _spec(old) == _spec(app):
            self.ops.append(
                Op(
                    "UPDATE apps SET revision = ?, update_time = ?, applied_revision = ? "
                    "WHERE name = ?",
                    (app.revision, iso(app.update_time), app.applied_revision, app.name),
                )
            )
        else:
            row = dict(zip(COLUMNS, app_row(app), strict=True))
            self.ops.append(
                Op(
                    f"UPDATE apps SET {', '.join(f'{c} = ?' for c in UPDATED)} WHERE name = ?",
                    (*(row[c] for c in UPDATED), app.name),
                )
            )
        if old.bindings != app.bindings:
            self.ops.append(Op("DELETE FROM bindings WHERE app = ?", (app.name,)))
            self._write_bindings(app)

    def mark_applied(self, name: str, revision: int) -> None:
        """Record that Docker finished rolling out ``revision`` of app ``name``."""
        app = self.get_app(name)
        self.apps[name] = replace(app, applied_revision=max(app.applied_revision, revision))
        self.ops.append(
            Op(
                "UPDATE apps SET applied_revision = max(applied_revision, ?) WHERE name = ?",
                (revision, name),
            )
        )

    def delete_app(self, name: str) -> None:
        """Delete an app; its bindings and ledger rows go with it (ON DELETE CASCADE)."""
        ports = self.held_by(name)
        self.apps[name] = None
        self.ops.append(Op("DELETE FROM apps WHERE name = ?", (name,)))
        self._release(name, ports)

    def remember_request(self, request_id: str, app: str) -> None:
        """Keep ``request_id`` with this change, so that a retry of it is not applied again."""
        self.new_requests[request_id] = app
        self.ops.append(
            Op(
                "INSERT INTO requests (id, app, revision, time) VALUES (?, ?, ?, ?)",
                (request_id, app, self.revision, iso(None)),
            )
        )

    def record(self, event: PortEvent) -> None:
        """Append ``event`` to the log, written (or dropped) with this transaction."""
        self.ops.append(Op(events.INSERT, events.row(event)))
        self.events.append(event)

    def hold_ports(self, app: str, ports: Iterable[Port]) -> None:
        """Record ``ports`` as held by ``app`` (no-op for ports it already holds).

        Raises :class:`AlreadyExists` if another app holds one; the table's
        primary key checks the same again when the statements are written.
        """
        wanted = list(ports)
        for port in wanted:
            holder = self.holder(port)
            if holder is not None and holder != app:
                raise _port_in_use(port, holder)
        for port in wanted:
            self._holders[port] = app
            self.ops.append(
                Op(
                    "INSERT INTO published_ports (protocol, port, app) VALUES (?, ?, ?) "
                    "ON CONFLICT (protocol, port) DO UPDATE SET app = app "
                    "WHERE app = excluded.app",
                    (str(port.protocol), port.number, app),
                    conflict=lambda db, port=port: _port_in_use(port, _holder_in(db, port)),  # type: ignore[misc]
                )
            )
        self.ledger_changes.append((True, app, wanted))

    def release_ports_except(self, app: str, keep: Iterable[Port]) -> None:
        """Release every port ``app`` holds that is not in ``keep``."""
        kept = set(keep)
        dropped = [p for p in self.held_by(app) if p not in kept]
        if dropped:
            self.ops.append(
                Op(
                    "DELETE FROM published_ports WHERE protocol = ? AND port = ? AND app = ?",
                    [(str(p.protocol), p.number, app) for p in dropped],
                    many=True,
                )
            )
            self._release(app, dropped)

    # -- internals -----------------------------------------------------------

    def apply(self) -> None:
        """Make this transaction's changes part of the working state."""
        for name, app in self.apps.items():
            if app is None:
                self.state.apps.pop(name, None)
            else:
                self.state.apps[name] = app
        self.state.requests.update(self.new_requests)
        for held, app_name, ports in self.ledger_changes:
            if held:
                self.state.ledger.hold(app_name, ports)
            else:
                self.state.ledger.release(app_name, ports)
        if self.revision:
            self.state.revision = self.revision

    def _exists(self, name: str) -> bool:
        try:
            self.get_app(name)
        except NotFound:
            return False
        return True

    def _release(self, app: str, ports: Iterable[Port]) -> None:
        ports = list(ports)
        for port in ports:
            self._holders[port] = None
        self.ledger_changes.append((False, app, ports))

    def _write_bindings(self, app: App) -> None:
        self.ops.append(
            Op(
                "INSERT INTO bindings (app, slot, protocol, published, target, "
                "published_explicit, target_explicit, publish_mode) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                binding_rows(app.name, app.bindings),
                many=True,
            )
        )


def _spec(app: App) -> App:
    """Every stored field of ``app`` but those every change writes (and its bindings)."""
    return replace(app, bindings=(), revision=0, update_time=None, applied_revision=0)


def _port_in_use(port: Port, holder: str) -> AlreadyExists:
    return AlreadyExists(
        f"published port {port} is already used by app {holder!r}",
        reason="PORT_IN_USE",
        resource=f"apps/{holder}",
    )


def _holder_in(db: sqlite3.Connection, port: Port) -> str:
    row = db.execute(
        "SELECT app FROM published_ports WHERE protocol = ? AND port = ?",
        (str(port.protocol), port.number),
    ).fetchone()
    return str(row[0]) if row else "?"


def run_ops(db: sqlite3.Connection, ops: Sequence[Op]) -> None:
    """Execute ``ops`` in order (inside the caller's transaction)."""
    for op in ops:
        op.run(db)

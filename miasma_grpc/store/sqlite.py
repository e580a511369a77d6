"""SQLite persistence of desired state (aiosqlite), the source of truth.

One writer connection runs every change in a ``BEGIN IMMEDIATE``
transaction, serialised by an :class:`asyncio.Lock`; a second connection
serves reads, which WAL lets run beside the writer and which never see
uncommitted changes. The in-memory :class:`PortLedger` mirrors the
``published_ports`` table and is updated only after a commit, when the
commit's revision and events are also handed to the subscribers (the event
hub): commits happen one at a time, so subscribers see revisions in order.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite

from miasma_grpc.domain.allocator import PortLedger
from miasma_grpc.domain.errors import AlreadyExists, NotFound
from miasma_grpc.domain.events import PortEvent, Retention
from miasma_grpc.domain.models import App, Binding, DesiredState, Port, Protocol, PublishMode
from miasma_grpc.store import events
from miasma_grpc.store.migrations import MIGRATIONS

CommitListener = Callable[[int, Sequence[PortEvent]], None]

_APP_COLUMNS = (
    "name, image, command, env, desired_state, revision, create_time, update_time, constraints, "
    "applied_revision"
)
_APP_COLUMNS_OF_A = ", ".join(f"a.{c}" for c in _APP_COLUMNS.split(", "))


async def _connect(path: Path) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        db.row_factory = sqlite3.Row
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute(
            "PRAGMA synchronous = NORMAL"
        )  # survives process crashes; an OS crash may lose the last commits
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute("PRAGMA busy_timeout = 5000")
    except BaseException:
        # An unclosed connection's (non-daemon) thread would keep the process alive.
        await db.close()
        raise
    return db


async def _user_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


class SqliteStore:
    """Apps, bindings and the published-port ledger in one SQLite file."""

    def __init__(self, path: Path, ledger: PortLedger) -> None:
        self.path = path
        self.ledger = ledger
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._listeners: list[CommitListener] = []

    def subscribe(self, listener: CommitListener) -> None:
        """Call ``listener(revision, events)`` after every commit that bumped the revision."""
        self._listeners.append(listener)

    async def __aenter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await _connect(self.path)
            await self._migrate(self._writer)
            await self._release_orphaned_ports(self._writer)
            self._reader = await _connect(self.path)
            await self._load_ledger()
        except BaseException:
            # __aexit__ does not run when __aenter__ fails: close what was opened.
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for db in (self._reader, self._writer):
            if db is not None:
                await db.close()
        self._reader = self._writer = None

    @property
    def _db(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("store is not open")
        return self._reader

    @staticmethod
    async def _migrate(db: aiosqlite.Connection) -> None:
        while (version := await _user_version(db)) < len(MIGRATIONS):
            try:
                # executescript commits first; the version bump is part of the script.
                await db.executescript(
                    f"BEGIN IMMEDIATE;\n{MIGRATIONS[version]}\n"
                    f"PRAGMA user_version = {version + 1};\nCOMMIT;"
                )
            except sqlite3.OperationalError:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                # Another connection (a second store or process opening the same new
                # file) may have applied this migration between our version check and
                # our BEGIN IMMEDIATE: go on from the version it left, else fail.
                if await _user_version(db) == version:
                    raise

    @staticmethod
    async def _release_orphaned_ports(db: aiosqlite.Connection) -> None:
        # A rollout holds old and new ports until it finishes; if the server died
        # in between, the ports no binding uses are released here, at start-up.
        await db.execute(
            "DELETE FROM published_ports WHERE NOT EXISTS (SELECT 1 FROM bindings AS b "
            "WHERE b.app = published_ports.app AND b.protocol = published_ports.protocol "
            "AND b.published = published_ports.port)"
        )

    async def _load_ledger(self) -> None:
        async with self._db.execute("SELECT protocol, port, app FROM published_ports") as cursor:
            async for row in cursor:
                self.ledger.hold(row["app"], [Port(row["port"], Protocol(row["protocol"]))])

    # -- reads ---------------------------------------------------------------

    async def get_app(self, name: str) -> App:
        """The app called ``name``; :class:`NotFound` if there is none."""
        return await _get_app(self._db, name)

    async def list_apps(self, *, after: str = "", limit: int | None = None) -> list[App]:
        """Apps in name order, starting after ``after``."""
        return await _select_apps(
            self._db,
            "WHERE a.name IN (SELECT name FROM apps WHERE name > ? ORDER BY name LIMIT ?)",
            (after, -1 if limit is None else limit),
        )

    async def revision(self) -> int:
        """The server-wide revision of the last committed change."""
        async with self._db.execute("SELECT value FROM meta WHERE key = 'revision'") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def snapshot(self, app: str | None = None) -> tuple[int, list[App]]:
        """The current revision and the apps (or one app) as of that revision."""
        return await _snapshot(self._db, app)

    async def read_events(self, *, after: int, app: str | None, limit: int) -> list[PortEvent]:
        """Logged events after revision ``after`` (of one app, or all), oldest first."""
        return await events.read(self._db, after=after, app=app, limit=limit)

    async def events_floor(self) -> int:
        """The lowest revision a watch can resume from."""
        return await events.floor(self._db)

    async def compact_events(self, retention: Retention) -> int:
        """Apply ``retention`` to the event log; returns the new floor."""
        async with self.transaction() as tx:
            return await events.compact(tx.db, retention, now())

    # -- writes --------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One atomic change: committed on normal exit, rolled back on error."""
        if self._writer is None:
            raise RuntimeError("store is not open")
        async with self._lock:
            tx = Transaction(self._writer)
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")
            for held, app, ports in tx.ledger_changes:
                if held:
                    self.ledger.hold(app, ports)
                else:
                    self.ledger.release(app, ports)
            if tx.revision:
                for listener in self._listeners:
                    listener(tx.revision, tx.events)


class Transaction:
    """Write operations inside one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        # (held?, app, ports) in the order they happened: replayed in that order after
        # the commit, so a port held and then released in one transaction ends released.
        self.ledger_changes: list[tuple[bool, str, list[Port]]] = []
        self.revision = 0  # the last revision this transaction took, 0 if none
        self.events: list[PortEvent] = []

    async def get_app(self, name: str) -> App:
        """The app as this transaction sees it."""
        return await _get_app(self.db, name)

    async def next_revision(self) -> int:
        """Bump and return the server-wide revision."""
        async with self.db.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value"
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None  # the row is created by migration 1
        self.revision = int(row[0])
        return self.revision

    async def mark_applied(self, name: str, revision: int) -> None:
        """Record that Docker finished rolling out ``revision`` of app ``name``."""
        await self.db.execute(
            "UPDATE apps SET applied_revision = max(applied_revision, ?) WHERE name = ?",
            (revision, name),
        )

    async def record(self, event: PortEvent) -> None:
        """Append ``event`` to the log, committed (or rolled back) with this transaction."""
        await events.insert(self.db, event)
        self.events.append(event)

    async def insert_app(self, app: App) -> None:
        """Insert a new app with its bindings and hold its published ports."""
        try:
            await self.db.execute(
                f"INSERT INTO apps ({_APP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _app_row(app),
            )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists.app(app.name) from exc
        await self._write_bindings(app.name, app.bindings)
        await self.hold_ports(app.name, [b.published_port for b in app.bindings])

    async def update_app(self, app: App) -> None:
        """Overwrite an app's fields and bindings (ports are held separately)."""
        await self.db.execute(
            "UPDATE apps SET image = ?, command = ?, env = ?, desired_state = ?, revision = ?, "
            "update_time = ?, constraints = ? WHERE name = ?",
            (
                *_app_row(app)[1:6],
                _iso(app.update_time),
                json.dumps(list(app.constraints)),
                app.name,
            ),
        )
        await self.db.execute("DELETE FROM bindings WHERE app = ?", (app.name,))
        await self._write_bindings(app.name, app.bindings)

    async def delete_app(self, name: str) -> None:
        """Delete an app; its bindings and ledger rows go with it."""
        async with self.db.execute(
            "SELECT protocol, port FROM published_ports WHERE app = ?", (name,)
        ) as cursor:
            ports = [Port(r["port"], Protocol(r["protocol"])) for r in await cursor.fetchall()]
        await self.db.execute("DELETE FROM apps WHERE name = ?", (name,))
        self.ledger_changes.append((False, name, ports))

    async def hold_ports(self, app: str, ports: Iterable[Port]) -> None:
        """Record ``ports`` as held by ``app`` (no-op for ports it already holds).

        Raises :class:`AlreadyExists` if the table says another app holds one:
        the in-memory ledger is checked first, this is the guarantee behind it.
        """
        wanted = list(ports)
        for port in wanted:
            # RETURNING yields a row when inserted or already ours, none when another app holds it.
            async with self.db.execute(
                "INSERT INTO published_ports (protocol, port, app) VALUES (?, ?, ?) "
                "ON CONFLICT (protocol, port) DO UPDATE SET app = app WHERE app = excluded.app "
                "RETURNING app",
                (str(port.protocol), port.number, app),
            ) as cursor:
                if await cursor.fetchone() is not None:
                    continue
            async with self.db.execute(
                "SELECT app FROM published_ports WHERE protocol = ? AND port = ?",
                (str(port.protocol), port.number),
            ) as cursor:
                row = await cursor.fetchone()
            holder = row["app"] if row else "?"
            raise AlreadyExists(
                f"published port {port} is already used by app {holder!r}",
                reason="PORT_IN_USE",
                resource=f"apps/{holder}",
            )
        self.ledger_changes.append((True, app, wanted))

    async def release_ports_except(self, app: str, keep: Iterable[Port]) -> None:
        """Release every port ``app`` holds that is not in ``keep``."""
        kept = set(keep)
        async with self.db.execute(
            "SELECT protocol, port FROM published_ports WHERE app = ?", (app,)
        ) as cursor:
            held = [Port(r["port"], Protocol(r["protocol"])) for r in await cursor.fetchall()]
        dropped = [p for p in held if p not in kept]
        await self.db.executemany(
            "DELETE FROM published_ports WHERE protocol = ? AND port = ? AND app = ?",
            [(str(p.protocol), p.number, app) for p in dropped],
        )
        self.ledger_changes.append((False, app, dropped))

    async def _write_bindings(self, app: str, bindings: Sequence[Binding]) -> None:
        await self.db.executemany(
            "INSERT INTO bindings (app, slot, protocol, published, target, published_explicit, "
            "target_explicit, publish_mode) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    app,
                    slot,
                    str(b.protocol),
                    b.published,
                    b.target,
                    int(b.published_explicit),
                    int(b.target_explicit),
                    str(b.mode),
                )
                for slot, b in enumerate(bindings)
            ],
        )


def now() -> datetime:
    """The current time in UTC (what timestamps are stored in)."""
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str:
    return (value or now()).isoformat()


def _app_row(app: App) -> tuple[Any, ...]:
    return (
        app.name,
        app.image,
        json.dumps(list(app.command)),
        json.dumps(app.env, sort_keys=True),
        str(app.desired_state),
        app.revision,
        _iso(app.create_time),
        _iso(app.update_time),
        json.dumps(list(app.constraints)),
        app.applied_revision,
    )


def _app_from_row(row: sqlite3.Row, bindings: Sequence[Binding]) -> App:
    return App(
        name=row["name"],
        image=row["image"],
        command=tuple(json.loads(row["command"])),
        env=dict(json.loads(row["env"])),
        desired_state=DesiredState(row["desired_state"]),
        revision=row["revision"],
        create_time=datetime.fromisoformat(row["create_time"]),
        update_time=datetime.fromisoformat(row["update_time"]),
        bindings=tuple(bindings),
        constraints=tuple(json.loads(row["constraints"])),
        applied_revision=row["applied_revision"],
    )


async def _get_app(db: aiosqlite.Connection, name: str) -> App:
    apps = await _select_apps(db, "WHERE a.name = ?", (name,))
    if not apps:
        raise NotFound(f"app {name!r} not found", resource=f"apps/{name}")
    return apps[0]


_BINDING_COLUMNS_OF_B = (
    "b.protocol, b.published, b.target, b.published_explicit, b.target_explicit, b.publish_mode"
)


async def _select_apps(db: aiosqlite.Connection, where: str, params: tuple[Any, ...]) -> list[App]:
    # One statement for apps and their bindings: SQLite runs it on one snapshot,
    # so a concurrent commit can never pair new app fields with old bindings.
    sql = (
        f"SELECT 0 AS snapshot_revision, {_APP_COLUMNS_OF_A}, {_BINDING_COLUMNS_OF_B} "
        f"FROM apps AS a LEFT JOIN bindings AS b ON b.app = a.name {where} ORDER BY a.name, b.slot"
    )
    return (await _query_apps(db, sql, params))[1]


async def _snapshot(db: aiosqlite.Connection, app: str | None) -> tuple[int, list[App]]:
    # The revision comes from the same statement as the apps, so from the same
    # snapshot; the meta row on the left keeps one row even when no app matches.
    where = "" if app is None else "AND a.name = ?"
    sql = (
        f"SELECT m.value AS snapshot_revision, {_APP_COLUMNS_OF_A}, {_BINDING_COLUMNS_OF_B} "
        f"FROM meta AS m LEFT JOIN apps AS a ON 1 {where} "
        f"LEFT JOIN bindings AS b ON b.app = a.name "
        f"WHERE m.key = 'revision' ORDER BY a.name, b.slot"
    )
    return await _query_apps(db, sql, () if app is None else (app,))


async def _query_apps(
    db: aiosqlite.Connection, sql: str, params: tuple[Any, ...]
) -> tuple[int, list[App]]:
    """Group the rows of an apps-join-bindings statement into apps (plus its revision column)."""
    revision = 0
    rows: list[sqlite3.Row] = []
    bindings: dict[str, list[Binding]] = {}
    async with db.execute(sql, params) as cursor:
        async for r in cursor:
            revision = r["snapshot_revision"]
            if r["name"] is None:
                continue
            if not rows or rows[-1]["name"] != r["name"]:
                rows.append(r)
            if r["protocol"] is not None:
                bindings.setdefault(r["name"], []).append(_binding_from_row(r))
    return revision, [_app_from_row(r, bindings.get(r["name"], ())) for r in rows]


def _binding_from_row(r: sqlite3.Row) -> Binding:
    return Binding(
        published=r["published"],
        target=r["target"],
        protocol=Protocol(r["protocol"]),
        published_explicit=bool(r["published_explicit"]),
        target_explicit=bool(r["target_explicit"]),
        mode=PublishMode(r["publish_mode"]),
    )

"""SQLite persistence of desired state, the source of truth.

Writes go through one writer thread with its own connection, in *group
commits*: a transaction (:mod:`miasma_grpc.store.transaction`) is decided in
memory, against the working state every transaction before it left, and
queued; the writer then writes everything queued in one ``BEGIN IMMEDIATE``
… ``COMMIT`` (again transaction by transaction, in savepoints, if a statement
fails, so one refusal does not fail the rest), and only then are the callers
acknowledged and the subscribers (the event hub) told, in
revision order. One thread hop and one commit serve a whole batch, where a
statement-at-a-time driver pays a hop per statement (about 180 µs each on a
small VM): that is what keeps a port edit close to the cost of its RPC.

Reads of apps (GetApp, ListApps, watch snapshots) are served from memory, from
the apps as committed (:mod:`miasma_grpc.store.readmodel`), which a commit
updates before its callers are answered. Reads of the event log (watch
catch-up) run on a second connection through aiosqlite, which WAL lets read
beside the writer and which never sees a change before it is committed.

One server per database file. A second writer is noticed (``PRAGMA
data_version``) and the schema refuses what would break it (a port held
twice, a name used twice); the working state is then read again from disk.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiosqlite

from miasma_grpc.domain.access import CALLER
from miasma_grpc.domain.allocator import PortLedger
from miasma_grpc.domain.audit import AUDITED, AuditRecord
from miasma_grpc.domain.errors import Aborted, MiasmaError, NotFound, Unavailable
from miasma_grpc.domain.events import PortEvent, Retention
from miasma_grpc.domain.models import App, DesiredState, Port, Protocol
from miasma_grpc.store import audit, events
from miasma_grpc.store.migrations import MIGRATIONS
from miasma_grpc.store.readmodel import CommittedApps
from miasma_grpc.store.rows import group_apps, now, select_snapshot
from miasma_grpc.store.transaction import Op, Transaction, WorkingState, run_ops

__all__ = ["CommitListener", "SqliteStore", "Transaction", "now"]

log = logging.getLogger(__name__)

CommitListener = Callable[[int, Sequence[PortEvent]], None]
REQUEST_IDS_KEPT = timedelta(days=1)  # a retry comes within seconds; a day is generous
T = TypeVar("T")
# How a commit reaches the disk, by --durability. FULL: each commit (a group of
# transactions) is fsynced to the WAL before its callers are acknowledged, so an
# acknowledged change survives a power loss. NORMAL: the WAL is fsynced at
# checkpoints only; a crash of the process loses nothing, one of the machine may lose
# the last commits.
SYNCHRONOUS = {"full": "FULL", "fast": "NORMAL"}
PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
)


class SqliteStore:
    """Apps, bindings, the published-port ledger and the event log in one SQLite file."""

    def __init__(self, path: Path, ledger: PortLedger, *, durability: str = "full") -> None:
        self.path = path
        self.ledger = ledger
        self.synchronous = SYNCHRONOUS[durability]
        self._state = WorkingState({}, 0, ledger)
        self._committed = CommittedApps()  # what reads see: the apps as on disk
        self._listeners: list[CommitListener] = []
        self._writer_thread: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None  # used on the writer thread only
        self._data_version = 0  # writer thread only: changes when another process commits
        self._reader: aiosqlite.Connection | None = None
        self._queue: list[tuple[Transaction, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._applied = 0  # transactions applied to the working state so far

    def subscribe(self, listener: CommitListener) -> None:
        """Call ``listener(revision, events)`` after every commit that bumped the revision."""
        self._listeners.append(listener)

    async def __aenter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="miasma-sqlite-writer")
        try:
            await self._on_writer(self._open_writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute("PRAGMA busy_timeout = 5000")
            self._reader.row_factory = sqlite3.Row
            self._load(await self._on_writer(_read_state, self._db_writer))
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
        if self._committer is not None:
            await asyncio.wait([self._committer])  # acknowledge what is queued before closing
        if self._reader is not None:
            await self._reader.close()
        if self._writer_thread is not None:
            if self._writer is not None:
                await self._on_writer(lambda: self._writer.close() if self._writer else None)
            self._writer_thread.shutdown(wait=True)
        self._reader = self._writer = self._writer_thread = None

    # -- reads (what is committed) -------------------------------------------

    @property
    def committed(self) -> CommittedApps:
        """The apps as committed (read it, never change it)."""
        return self._committed

    @property
    def _db(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("store is not open")
        return self._reader

    async def get_app(self, name: str) -> App:
        """The app called ``name`` as committed; :class:`NotFound` if there is none."""
        return self._committed.get(name)

    async def list_apps(self, *, after: str = "", limit: int | None = None) -> list[App]:
        """Apps in name order, starting after ``after``, as committed."""
        return self._committed.page(after, limit)

    async def revision(self) -> int:
        """The server-wide revision of the last committed change."""
        return self._committed.revision

    async def list_page(
        self,
        *,
        after: str,
        limit: int,
        group: str | None = None,
        desired: DesiredState | None = None,
        hidden: bool | None = None,
        keep: Callable[[App], bool] | None = None,
    ) -> tuple[int, list[App]]:
        """The current revision and a page of apps in name order, as of that revision (only
        those of ``group``, of ``desired`` state, ``hidden`` or not and that ``keep`` keeps,
        where given)."""
        page = self._committed.page(
            after, limit, group=group, desired=desired, hidden=hidden, keep=keep
        )
        return self._committed.revision, page

    async def snapshot(self, app: str | None = None) -> tuple[int, list[App]]:
        """The current revision and the apps (or one app) as of that revision."""
        if app is None:
            return self._committed.revision, self._committed.page()
        try:
            return self._committed.revision, [self._committed.get(app)]
        except NotFound:
            return self._committed.revision, []

    async def read_events(self, *, after: int, app: str | None, limit: int) -> list[PortEvent]:
        """Logged events after revision ``after`` (of one app, or all), oldest first."""
        return await events.read(self._db, after=after, app=app, limit=limit)

    async def read_log(
        self, *, after: int, app: str | None, limit: int
    ) -> tuple[int, list[PortEvent]]:
        """The log's floor and the events after ``after``, as one consistent read."""
        return await events.read_with_floor(self._db, after=after, app=app, limit=limit)

    async def events_floor(self) -> int:
        """The lowest revision a watch can resume from."""
        return await events.floor(self._db)

    # -- writes --------------------------------------------------------------

    def transaction(self) -> _Commit:
        """One atomic change (``async with store.transaction() as tx:``), acknowledged
        (the block is left) once it is committed to disk.

        The body must not await: it runs against the working state in one go
        (checked). An exception in the body drops the transaction. Once the
        body has ended the change is final: cancelling the caller while it
        waits for the disk does not undo it.
        """
        if self._writer_thread is None:
            raise RuntimeError("store is not open")
        return _Commit(self)

    def _queue_commit(self, tx: Transaction) -> asyncio.Future[None]:
        """Apply ``tx`` to the working state and queue it for the writer."""
        tx.apply()
        self._applied += 1
        done = asyncio.get_running_loop().create_future()
        self._queue.append((tx, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued(), name="sqlite-commit")
        return done

    async def record_audit(self, record: AuditRecord) -> None:
        """Write an audit record of its own (a refusal, or how a call ended)."""
        async with self.transaction() as tx:
            tx.ops.append(Op(audit.INSERT, audit.row(record)))

    async def read_audit(
        self, *, app: str, identity: str, since: datetime | None, before_id: int, limit: int
    ) -> list[AuditRecord]:
        """Audit records newest first (see :func:`miasma_grpc.store.audit.read`)."""
        return await audit.read(
            self._db, app=app, identity=identity, since=since, before_id=before_id, limit=limit
        )

    async def compact_events(self, retention: Retention) -> int:
        """Apply ``retention`` to the event log (and the audit log); returns the new floor."""

        def compact(db: sqlite3.Connection) -> tuple[int, set[str]]:
            with db:  # BEGIN … COMMIT (ROLLBACK on error)
                db.execute("BEGIN IMMEDIATE")
                expired = (now() - REQUEST_IDS_KEPT).isoformat()
                gone = {row[0] for row in db.execute(
                    "DELETE FROM requests WHERE time < ? RETURNING id", (expired,)
                )}  # fmt: skip
                audit.compact(db, retention, now())
                return events.compact(db, retention, now()), gone

        try:
            floor, forgotten = await self._on_writer(compact, self._db_writer)
        except sqlite3.DatabaseError as exc:
            raise Unavailable(f"the database could not compact the event log: {exc}") from exc
        for request_id in forgotten:
            self._state.requests.pop(request_id, None)
        return floor

    async def _commit_queued(self) -> None:
        """Write what is queued, batch after batch, until the queue is empty."""
        while self._queue:
            # Let the handlers that are ready run first: under load they join this batch.
            await asyncio.sleep(0)
            batch, self._queue = self._queue, []
            try:
                results, fresh = await self._on_writer(self._write, [tx for tx, _ in batch])
            except Exception as exc:  # every waiter must hear back, whatever went wrong
                log.exception("could not write %d transactions", len(batch))
                failure = Unavailable(f"the database could not be written: {exc}")
                results, fresh = [failure] * len(batch), None
                try:
                    fresh = await self._on_writer(_read_state, self._db_writer)
                except Exception:
                    log.exception("could not read the database back")
            for (tx, done), error in zip(batch, results, strict=True):
                if error is None:
                    self._committed.commit(tx.revision, tx.apps)  # before anyone hears of it
                    self._notify(tx)
                _settle(done, error)
            if fresh is not None:
                # Queued transactions were decided on a state that did not happen.
                for _, done in self._queue:
                    _settle(done, _retry())
                self._queue = []
                self._load(fresh)

    def _write(self, batch: list[Transaction]) -> tuple[list[MiasmaError | None], _State | None]:
        """On the writer thread: one commit for the batch; the state read back if it diverged.

        The batch is written in one go; only if a statement fails is it written
        again transaction by transaction, each in a savepoint, so that one
        refused transaction does not take the others with it.
        """
        db = self._db_writer
        version = _data_version(db)  # our own commits leave it as it is
        changed_elsewhere, self._data_version = version != self._data_version, version
        try:
            with db:  # BEGIN … COMMIT (ROLLBACK on error)
                db.execute("BEGIN IMMEDIATE")
                for tx in batch:
                    run_ops(db, tx.ops)
                _store_revision(db, batch)
            results: list[MiasmaError | None] = [None] * len(batch)
        except (MiasmaError, sqlite3.IntegrityError):
            results = _write_one_by_one(db, batch)
        if changed_elsewhere or any(r is not None for r in results):
            return results, _read_state(db)
        return results, None

    def _notify(self, tx: Transaction) -> None:
        if tx.revision:
            for listener in self._listeners:
                try:
                    listener(tx.revision, tx.events)
                except Exception:  # the commit stands, and its callers must still hear back
                    log.exception("a commit listener failed at revision %d", tx.revision)

    def _load(self, state: _State) -> None:
        revision, apps, ports, requests = state
        self._committed.load(revision, apps)
        self._state.requests = requests
        self._state.revision = revision
        self._state.apps = {app.name: app for app in apps}
        self.ledger.clear()
        for app, held in ports.items():
            self.ledger.hold(app, held)

    # -- the writer thread ---------------------------------------------------

    @property
    def _db_writer(self) -> sqlite3.Connection:
        if self._writer is None:
            raise RuntimeError("store is not open")
        return self._writer

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._writer_thread is not None
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

    def _open_writer(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        self._writer = db
        db.row_factory = sqlite3.Row
        for pragma in PRAGMAS:
            db.execute(pragma)
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        _migrate(db)
        # A rollout holds old and new ports until it finishes; if the server died
        # in between, the ports no binding uses are released here, at start-up.
        db.execute(
            "DELETE FROM published_ports WHERE NOT EXISTS (SELECT 1 FROM bindings AS b "
            "WHERE b.app = published_ports.app AND b.protocol = published_ports.protocol "
            "AND b.published = published_ports.port)"
        )
        self._data_version = _data_version(db)


_State = tuple[int, list[App], dict[str, list[Port]], dict[str, str]]


class _Commit:
    """The context of :meth:`SqliteStore.transaction` (a class: it runs on every change)."""

    __slots__ = ("applied", "store", "tx")

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.tx = Transaction(store._state)
        self.applied = store._applied

    async def __aenter__(self) -> Transaction:
        return self.tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            return  # the body failed: nothing of it was applied
        if self.store._applied != self.applied:
            raise RuntimeError("a transaction body awaited while another transaction ran")
        if self.tx.ops or self.tx.revision:
            call = AUDITED.get()
            if call is not None and not call.changes and self.tx.revision:
                # A caller's change: every app it touches is in the caller's scope, before
                # and after (the last guard: the handlers check first, to say it sooner);
                # its record goes with it (once per call: what follows, a rollout's result
                # or a revert, is the change's own consequence).
                _check_scope(self.tx)
                call.changes += 1
                self.tx.ops.append(Op(audit.INSERT, audit.row(call.record("OK", self.tx.revision))))
            # Cancelling the waiter cancels only this future: the batch keeps the change.
            await self.store._queue_commit(self.tx)


def _check_scope(tx: Transaction) -> None:
    caller = CALLER.get()
    if caller.scope is None:
        return
    for name, after in tx.apps.items():
        for app in (tx.state.apps.get(name), after):
            if app is not None:
                caller.check_app(app.name, app.group)


def _write_one_by_one(db: sqlite3.Connection, batch: list[Transaction]) -> list[MiasmaError | None]:
    results: list[MiasmaError | None] = []
    with db:
        db.execute("BEGIN IMMEDIATE")
        for tx in batch:
            db.execute("SAVEPOINT tx")
            try:
                run_ops(db, tx.ops)
                results.append(None)
            except MiasmaError as exc:
                db.execute("ROLLBACK TO tx")
                results.append(exc)
            except sqlite3.IntegrityError as exc:
                db.execute("ROLLBACK TO tx")
                log.warning("refused by the schema: %s", exc)
                results.append(_retry())
            db.execute("RELEASE tx")
        _store_revision(db, [tx for tx, error in zip(batch, results, strict=True) if not error])
    return results


def _store_revision(db: sqlite3.Connection, written: list[Transaction]) -> None:
    top = max((tx.revision for tx in written), default=0)
    if top:
        db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'revision'", (top,))


def _read_state(db: sqlite3.Connection) -> _State:
    """The revision, every app, every held port and the recent request IDs, from one read
    transaction."""
    with db:
        db.execute("BEGIN")
        revision, apps = group_apps(db.execute(select_snapshot(one_app=False)))
        ports: dict[str, list[Port]] = {}
        for row in db.execute("SELECT protocol, port, app FROM published_ports"):
            ports.setdefault(row["app"], []).append(Port(row["port"], Protocol(row["protocol"])))
        requests = {row["id"]: row["app"] for row in db.execute("SELECT id, app FROM requests")}
    return revision, apps, ports, requests


def _migrate(db: sqlite3.Connection) -> None:
    while (version := _user_version(db)) < len(MIGRATIONS):
        try:
            # executescript commits first; the version bump is part of the script.
            db.executescript(
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[version]}\n"
                f"PRAGMA user_version = {version + 1};\nCOMMIT;"
            )
        except sqlite3.OperationalError:
            if db.in_transaction:
                db.execute("ROLLBACK")
            # Another connection (a second store or process opening the same new
            # file) may have applied this migration between our version check and
            # our BEGIN IMMEDIATE: go on from the version it left, else fail.
            if _user_version(db) == version:
                raise


def _user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _data_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA data_version").fetchone()[0])


def _retry() -> Aborted:
    return Aborted(
        "the change was decided on a state the database did not confirm (another process "
        "writes to the same file, or an earlier write failed): retry"
    )


def _settle(done: asyncio.Future[None], error: MiasmaError | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)

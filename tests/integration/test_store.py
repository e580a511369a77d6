"""The SQLite store on real files: transactions, the published-port ledger, reopening."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from miasma_grpc.domain.allocator import PortLedger
from miasma_grpc.domain.errors import AlreadyExists, NotFound, Unavailable
from miasma_grpc.domain.models import (
    App,
    Binding,
    DesiredState,
    Port,
    PortRange,
    Protocol,
    Volume,
)
from miasma_grpc.store.migrations import MIGRATIONS
from miasma_grpc.store.sqlite import SqliteStore, Transaction

MANAGED = PortRange(3001, 3999)
UDP = Protocol.UDP
STAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Boom(Exception):
    """Raised by tests inside a transaction to force a rollback."""


def make_app(name: str, *published: Port, revision: int = 1) -> App:
    """An app whose slot *i* publishes ``published[i]`` on target 4000 + i."""
    return App(
        name=name,
        image="busybox:test",
        bindings=tuple(
            Binding(port.number, 4000 + i, port.protocol, published_explicit=True)
            for i, port in enumerate(published)
        ),
        command=("httpd", "-f"),
        env={"GREETING": "hello"},
        revision=revision,
        create_time=STAMP,
        update_time=STAMP,
    )


def table_ledger(path: Path) -> dict[Port, str]:
    """The ``published_ports`` table, read with a connection of its own."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT protocol, port, app FROM published_ports").fetchall()
    return {Port(port, Protocol(protocol)): app for protocol, port, app in rows}


def assert_ledger_mirrors_table(store: SqliteStore) -> None:
    table = table_ledger(store.path)
    assert {port: store.ledger.holder(port) for port in table} == table
    assert len(store.ledger) == len(table)


async def insert(store: SqliteStore, app: App) -> None:
    async with store.transaction() as tx:
        tx.next_revision()
        tx.insert_app(app)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "miasma.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(db_path, PortLedger(MANAGED)) as opened:
        yield opened


# -- transactions -----------------------------------------------------------------


async def test_committed_insert_is_readable_and_held_in_ledger(store: SqliteStore) -> None:
    """After a commit the app reads back whole and the ledger holds its ports."""
    app = make_app("web", Port(8080), Port(53, UDP))
    await insert(store, app)
    assert await store.get_app("web") == app
    assert store.ledger.held_by("web") == {Port(8080), Port(53, UDP)}
    assert_ledger_mirrors_table(store)


async def test_uncommitted_changes_are_invisible_to_reads_and_ledger(store: SqliteStore) -> None:
    """Inside a transaction neither store reads nor the ledger see its changes."""
    async with store.transaction() as tx:
        tx.insert_app(make_app("web", Port(8080)))
        assert (tx.get_app("web")).name == "web"
        with pytest.raises(NotFound):
            await store.get_app("web")
        assert store.ledger.holder(Port(8080)) is None
    assert store.ledger.holder(Port(8080)) == "web"


async def test_exception_in_transaction_leaves_database_and_ledger_unchanged(
    store: SqliteStore,
) -> None:
    """An exception inside the transaction rolls back every write and touches no ledger entry."""
    db = make_app("db", Port(5432))
    await insert(store, db)
    before = (await store.revision(), table_ledger(store.path), store.ledger.held_by("db"))

    async def change_everything_then_fail() -> None:
        async with store.transaction() as tx:
            tx.next_revision()
            tx.insert_app(make_app("web", Port(8080)))
            tx.update_app(make_app("db", Port(5433), revision=9))
            tx.hold_ports("db", [Port(5433)])
            tx.release_ports_except("db", [Port(5433)])
            raise Boom

    with pytest.raises(Boom):
        await change_everything_then_fail()
    assert (await store.revision(), table_ledger(store.path), store.ledger.held_by("db")) == before
    assert await store.get_app("db") == db
    with pytest.raises(NotFound):
        await store.get_app("web")
    assert store.ledger.holder(Port(8080)) is None


async def test_cancelled_transaction_rolls_back_and_frees_the_writer(store: SqliteStore) -> None:
    """A task cancelled inside a transaction rolls it back; the next transaction proceeds."""
    inserted = asyncio.Event()

    async def stuck() -> None:
        async with store.transaction() as tx:
            tx.insert_app(make_app("web", Port(8080)))
            inserted.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(stuck())
    await inserted.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await insert(store, make_app("db", Port(8080)))
    assert store.ledger.holder(Port(8080)) == "db"
    assert [app.name for app in await store.list_apps()] == ["db"]


async def test_next_revision_counts_up_and_rollback_undoes_it(store: SqliteStore) -> None:
    """Committed revision bumps are reported by revision(); rolled-back ones are not."""
    async with store.transaction() as tx:
        assert tx.next_revision() == 1
        assert tx.next_revision() == 2

    async def bump_then_fail() -> None:
        async with store.transaction() as tx:
            tx.next_revision()
            raise Boom

    with pytest.raises(Boom):
        await bump_then_fail()
    assert await store.revision() == 2


async def test_concurrent_transactions_serialise(store: SqliteStore) -> None:
    """Many concurrent transactions, each taking the lowest free port, all get distinct ports.

    Each body sees the working state every transaction queued before it left,
    even those not yet on disk.
    """

    async def create(index: int) -> tuple[int, int]:
        async with store.transaction() as tx:
            port = next(
                n for n in range(MANAGED.start, MANAGED.end) if store.ledger.holder(Port(n)) is None
            )
            revision = tx.next_revision()
            tx.insert_app(make_app(f"app{index}", Port(port), revision=revision))
        return port, revision

    results = await asyncio.gather(*(create(i) for i in range(30)))
    assert sorted(port for port, _ in results) == list(range(3001, 3031))
    assert sorted(revision for _, revision in results) == list(range(1, 31))
    assert_ledger_mirrors_table(store)


# -- group commit -----------------------------------------------------------------


async def test_concurrent_transactions_share_commits_and_each_is_on_disk_when_acknowledged(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transactions queued together are written by one commit; none returns before it.

    Subscribers hear of them in revision order, after the commit.
    """
    commits = 0
    write = SqliteStore._write

    def counting(self: SqliteStore, batch: list[Transaction]) -> object:
        nonlocal commits
        commits += 1
        return write(self, batch)

    monkeypatch.setattr(SqliteStore, "_write", counting)
    heard: list[int] = []
    store.subscribe(lambda revision, events: heard.append(revision))

    async def create(index: int) -> None:
        async with store.transaction() as tx:
            revision = tx.next_revision()
            tx.insert_app(make_app(f"app{index}", Port(3001 + index), revision=revision))
        with closing(sqlite3.connect(store.path)) as db:  # another connection sees it now
            row = db.execute("SELECT revision FROM apps WHERE name = ?", (f"app{index}",))
            assert row.fetchone() == (revision,)

    await asyncio.gather(*(create(i) for i in range(40)))
    assert heard == list(range(1, 41))
    assert commits < 40
    assert await store.revision() == 40
    assert_ledger_mirrors_table(store)


async def test_a_failing_listener_does_not_hold_up_the_commit(store: SqliteStore) -> None:
    """A subscriber that raises is logged; the change is acknowledged and the next one works."""

    def broken(revision: int, events: object) -> None:
        raise ValueError("listener bug")

    heard: list[int] = []
    store.subscribe(broken)
    store.subscribe(lambda revision, events: heard.append(revision))
    async with asyncio.timeout(10):
        await insert(store, make_app("a", Port(3001)))
        await insert(store, make_app("b", Port(3002)))
    assert heard == [1, 2]
    assert [app.name for app in await store.list_apps()] == ["a", "b"]


async def test_transaction_body_must_not_await_while_another_commits(store: SqliteStore) -> None:
    """A body that suspends while another transaction is applied is refused, unwritten."""
    entered, other_done = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        async with store.transaction() as tx:
            tx.insert_app(make_app("slow", Port(3001)))
            entered.set()
            await other_done.wait()

    task = asyncio.create_task(slow())
    await entered.wait()
    await insert(store, make_app("fast", Port(3002)))
    other_done.set()
    with pytest.raises(RuntimeError, match="awaited"):
        await task
    assert [app.name for app in await store.list_apps()] == ["fast"]
    assert store.ledger.holder(Port(3001)) is None


async def test_caller_cancelled_while_waiting_for_the_disk_still_commits(
    store: SqliteStore,
) -> None:
    """Once the body has ended the change is final: cancelling the waiter does not undo it."""

    async def create() -> None:
        async with store.transaction() as tx:
            tx.next_revision()
            tx.insert_app(make_app("web", Port(3001)))

    task = asyncio.create_task(create())
    await asyncio.sleep(0)  # the body runs and the task waits for the commit
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await insert(store, make_app("db", Port(3002)))  # queued behind it: written after it
    assert [app.name for app in await store.list_apps()] == ["db", "web"]
    assert_ledger_mirrors_table(store)


async def test_refused_transaction_does_not_take_its_batch_with_it(store: SqliteStore) -> None:
    """One transaction the schema refuses fails alone; the rest of its commit is written."""
    await insert(store, make_app("a", Port(3001)))
    store.ledger.release("a", [Port(3001)])  # memory now wrongly says 3001 is free
    results = await asyncio.gather(
        insert(store, make_app("b", Port(3001))),
        insert(store, make_app("c", Port(3002))),
        return_exceptions=True,
    )
    assert isinstance(results[0], AlreadyExists)
    assert results[0].resource == "apps/a"
    assert results[1] is None
    assert [app.name for app in await store.list_apps()] == ["a", "c"]
    assert store.ledger.holder(Port(3001)) == "a"  # the working state was read back from disk
    assert_ledger_mirrors_table(store)


async def test_failed_write_fails_its_waiters_and_the_queue_then_recovers(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write the disk refuses is UNAVAILABLE for its callers; nothing of it stays in memory."""
    await insert(store, make_app("a", Port(3001)))
    write = SqliteStore._write

    def broken(self: SqliteStore, batch: list[Transaction]) -> object:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SqliteStore, "_write", broken)
    with pytest.raises(Unavailable, match="disk I/O error"):
        await insert(store, make_app("b", Port(3002)))
    assert store.ledger.holder(Port(3002)) is None
    monkeypatch.setattr(SqliteStore, "_write", write)
    await insert(store, make_app("c", Port(3002)))
    assert [app.name for app in await store.list_apps()] == ["a", "c"]
    assert_ledger_mirrors_table(store)


async def test_changes_by_another_process_are_read_back(store: SqliteStore) -> None:
    """After another connection writes the file, the working state follows the disk."""
    await insert(store, make_app("a", Port(3001)))
    with closing(sqlite3.connect(store.path)) as db, db:
        db.execute(
            "INSERT INTO apps (name, image, command, env, desired_state, revision, create_time, "
            "update_time) VALUES ('other', 'x', '[]', '{}', 'running', 7, ?, ?)",
            (STAMP.isoformat(), STAMP.isoformat()),
        )
        db.execute(
            "INSERT INTO published_ports (protocol, port, app) VALUES ('tcp', 3005, 'other')"
        )
        db.execute("UPDATE meta SET value = 7 WHERE key = 'revision'")
    await insert(store, make_app("b", Port(3002)))  # this commit notices the other writer
    assert store.ledger.holder(Port(3005)) == "other"
    async with store.transaction() as tx:
        assert tx.get_app("other").revision == 7
        assert tx.next_revision() == 8


# -- the published-port ledger ------------------------------------------------------


async def test_table_refuses_port_held_by_another_app_when_ledger_is_bypassed(
    store: SqliteStore,
) -> None:
    """Even with a stale in-memory ledger, the table refuses a second holder of a port."""
    await insert(store, make_app("a", Port(3001)))
    store.ledger.release("a", [Port(3001)])  # the in-memory ledger now wrongly says "free"
    with pytest.raises(AlreadyExists) as caught:
        await insert(store, make_app("b", Port(3001)))
    assert caught.value.resource == "apps/a"
    assert table_ledger(store.path) == {Port(3001): "a"}
    with pytest.raises(NotFound):
        await store.get_app("b")


async def test_two_stores_with_own_ledgers_cannot_hold_the_same_port(db_path: Path) -> None:
    """A second store whose ledger predates another's commit still cannot take its port."""
    async with (
        SqliteStore(db_path, PortLedger(MANAGED)) as first,
        SqliteStore(db_path, PortLedger(MANAGED)) as second,
    ):
        await insert(first, make_app("a", Port(3001)))
        assert second.ledger.holder(Port(3001)) is None
        with pytest.raises(AlreadyExists) as caught:
            await insert(second, make_app("b", Port(3001)))
        assert caught.value.resource == "apps/a"


async def test_primary_key_refuses_a_second_row_for_one_port(
    store: SqliteStore, db_path: Path
) -> None:
    """The schema itself makes (protocol, port) unique, whatever code writes to it."""
    await insert(store, make_app("a", Port(3001)))
    await insert(store, make_app("b", Port(3002)))
    with closing(sqlite3.connect(db_path)) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO published_ports (protocol, port, app) VALUES ('tcp', 3001, 'b')")


async def test_same_number_on_tcp_and_udp_can_have_two_holders(store: SqliteStore) -> None:
    """53/tcp and 53/udp are different ports, held by different apps."""
    await insert(store, make_app("a", Port(53)))
    await insert(store, make_app("b", Port(53, UDP)))
    assert table_ledger(store.path) == {Port(53): "a", Port(53, UDP): "b"}
    assert_ledger_mirrors_table(store)


async def test_holding_a_port_twice_for_one_app_is_a_noop(store: SqliteStore) -> None:
    """An app re-holding its own port changes nothing."""
    await insert(store, make_app("a", Port(3001)))
    async with store.transaction() as tx:
        tx.hold_ports("a", [Port(3001), Port(3002)])
    assert table_ledger(store.path) == {Port(3001): "a", Port(3002): "a"}
    assert_ledger_mirrors_table(store)


async def test_release_ports_except_keeps_only_listed_ports(store: SqliteStore) -> None:
    """release_ports_except drops the app's other ports and never another app's."""
    await insert(store, make_app("a", Port(3001), Port(3002), Port(3003)))
    await insert(store, make_app("b", Port(3004)))
    async with store.transaction() as tx:
        tx.release_ports_except("a", [Port(3002)])
    assert table_ledger(store.path) == {Port(3002): "a", Port(3004): "b"}
    assert_ledger_mirrors_table(store)


async def test_port_held_then_released_in_one_transaction_ends_released(
    store: SqliteStore,
) -> None:
    """The ledger replays a transaction's holds and releases in order, like the table."""
    await insert(store, make_app("a", Port(3001)))
    async with store.transaction() as tx:
        tx.hold_ports("a", [Port(5000)])
        tx.release_ports_except("a", [Port(3001)])
    assert store.ledger.holder(Port(5000)) is None
    assert_ledger_mirrors_table(store)


async def test_app_inserted_then_deleted_in_one_transaction_holds_nothing(
    store: SqliteStore,
) -> None:
    """Creating and deleting an app in one transaction leaves no port held."""
    async with store.transaction() as tx:
        tx.insert_app(make_app("tmp", Port(3001)))
        tx.delete_app("tmp")
    assert store.ledger.holder(Port(3001)) is None
    assert_ledger_mirrors_table(store)


async def test_delete_app_removes_it_its_bindings_and_its_ports(store: SqliteStore) -> None:
    """Deleting an app removes its row, its bindings and its published ports."""
    await insert(store, make_app("a", Port(3001), Port(53, UDP)))
    await insert(store, make_app("b", Port(3002)))
    async with store.transaction() as tx:
        tx.delete_app("a")
    with pytest.raises(NotFound):
        await store.get_app("a")
    with closing(sqlite3.connect(store.path)) as db:
        assert db.execute("SELECT count(*) FROM bindings WHERE app = 'a'").fetchone() == (0,)
    assert table_ledger(store.path) == {Port(3002): "b"}
    assert_ledger_mirrors_table(store)


# -- apps ---------------------------------------------------------------------------


async def test_inserting_an_existing_name_fails_naming_the_app(store: SqliteStore) -> None:
    """A second app with the same name is ALREADY_EXISTS and changes nothing."""
    await insert(store, make_app("web", Port(3001)))
    with pytest.raises(AlreadyExists) as caught:
        await insert(store, make_app("web", Port(3002)))
    assert caught.value.resource == "apps/web"
    assert table_ledger(store.path) == {Port(3001): "web"}


async def test_getting_a_missing_app_is_not_found(store: SqliteStore) -> None:
    """get_app of an unknown name raises NotFound naming the resource."""
    with pytest.raises(NotFound) as caught:
        await store.get_app("ghost")
    assert caught.value.resource == "apps/ghost"


async def test_update_app_rewrites_fields_and_bindings(store: SqliteStore) -> None:
    """update_app replaces the app's fields and its whole binding list."""
    await insert(store, make_app("web", Port(3001), Port(3002)))
    later = datetime(2026, 2, 3, tzinfo=UTC)
    new = App(
        name="web",
        image="busybox:v2",
        bindings=(Binding(3002, 80, UDP, published_explicit=True, target_explicit=True),),
        command=(),
        env={},
        desired_state=DesiredState.STOPPED,
        revision=7,
        create_time=STAMP,
        update_time=later,
    )
    async with store.transaction() as tx:
        tx.update_app(new)
    assert await store.get_app("web") == new


async def test_list_apps_pages_in_name_order(store: SqliteStore) -> None:
    """list_apps returns apps by name, a page at a time after a given name."""
    for index, name in enumerate(["delta", "alpha", "echo", "charlie", "bravo"]):
        await insert(store, make_app(name, Port(3001 + index)))
    pages: list[list[str]] = []
    after = ""
    while page := await store.list_apps(after=after, limit=2):
        pages.append([app.name for app in page])
        after = page[-1].name
    assert pages == [["alpha", "bravo"], ["charlie", "delta"], ["echo"]]
    everything = await store.list_apps()
    assert [app.name for app in everything] == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert everything[0].bindings == (Binding(3002, 4000, published_explicit=True),)


# -- the file -----------------------------------------------------------------------


async def test_reopening_preserves_apps_bindings_ledger_and_revision(db_path: Path) -> None:
    """Closing and reopening the file brings back every app, binding, held port and revision."""
    apps = [make_app("a", Port(3001), Port(53, UDP)), make_app("b", Port(3002), revision=2)]
    async with SqliteStore(db_path, PortLedger(MANAGED)) as store:
        for app in apps:
            await insert(store, app)
    ledger = PortLedger(MANAGED)
    async with SqliteStore(db_path, ledger) as reopened:
        assert await reopened.list_apps() == apps
        assert await reopened.revision() == 2
        assert ledger.held_by("a") == {Port(3001), Port(53, UDP)}
        assert ledger.held_by("b") == {Port(3002)}
        assert_ledger_mirrors_table(reopened)


async def test_second_store_on_same_file_sees_same_ledger(
    store: SqliteStore, db_path: Path
) -> None:
    """A store opened on a file in use loads the ports committed so far."""
    await insert(store, make_app("a", Port(3001), Port(53, UDP)))
    ledger = PortLedger(MANAGED)
    async with SqliteStore(db_path, ledger):
        assert ledger.held_by("a") == {Port(3001), Port(53, UDP)}
        assert len(ledger) == 2


async def test_ports_no_binding_uses_are_released_on_open(db_path: Path) -> None:
    """Ports held for an interrupted rollout (no binding uses them) are released at open."""
    async with SqliteStore(db_path, PortLedger(MANAGED)) as store:
        await insert(store, make_app("a", Port(3001)))
        async with store.transaction() as tx:
            tx.hold_ports("a", [Port(3005)])
    ledger = PortLedger(MANAGED)
    async with SqliteStore(db_path, ledger) as reopened:
        assert ledger.held_by("a") == {Port(3001)}
        assert_ledger_mirrors_table(reopened)


async def test_database_uses_wal_and_records_schema_version(
    store: SqliteStore, db_path: Path
) -> None:
    """The file is in WAL mode and PRAGMA user_version counts the applied migrations."""
    with closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


def empty_wal_database(path: Path) -> None:
    """An empty database already in WAL mode (user_version 0, no tables)."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE scratch (x)")  # the first write makes WAL mode stick
        db.execute("DROP TABLE scratch")


async def test_stores_migrating_one_file_at_once_apply_each_migration_once(
    tmp_path: Path,
) -> None:
    """Stores racing to migrate the same empty file all open; migrations run once."""

    async def open_and_read(path: Path) -> int:
        async with SqliteStore(path, PortLedger(MANAGED)) as store:
            return await store.revision()

    for attempt in range(5):
        path = tmp_path / f"race{attempt}.db"
        empty_wal_database(path)
        results = await asyncio.gather(
            *(open_and_read(path) for _ in range(4)), return_exceptions=True
        )
        assert results == [0] * 4
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


def prepare_not_a_database(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database\n" * 64)


def prepare_failing_migration(path: Path) -> None:
    # A table of migration 1 already exists but user_version says 0: migration 1 fails.
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE meta (key TEXT)")


@pytest.mark.parametrize("prepare", [prepare_not_a_database, prepare_failing_migration])
async def test_failed_open_closes_its_connections(db_path: Path, prepare: object) -> None:
    """A store that fails to open leaves no connection (or its thread) behind."""
    assert callable(prepare)
    prepare(db_path)
    before = set(threading.enumerate())
    with pytest.raises(sqlite3.DatabaseError):
        async with SqliteStore(db_path, PortLedger(MANAGED)):
            pass
    leftover = set(threading.enumerate()) - before
    for thread in leftover:
        thread.join(timeout=5)
    assert [thread for thread in leftover if thread.is_alive()] == []


@pytest.mark.parametrize(
    "change",
    [
        {"hidden": True},
        {"image_digest": "sha256:" + "a" * 64},
        {"group": "backend"},
        {"node": "node-1"},
        {"stop_grace": 3.0},
        {"image": "busybox:v2"},
        {"command": ("sleep", "1")},
        {"env": {"A": "1"}},
        {"constraints": ("node.labels.zone==a",)},
        {"volumes": (Volume("data", "/data"),)},
        {"desired_state": DesiredState.STOPPED},
    ],
    ids=lambda change: next(iter(change)),
)
async def test_a_change_of_any_one_field_is_on_disk(
    db_path: Path, change: dict[str, object]
) -> None:
    """Each field an update may change alone reads back after a reopen (a change of
    visibility or of the pinned image alone once stayed in memory only)."""
    async with SqliteStore(db_path, PortLedger(MANAGED)) as store:
        await insert(store, make_app("web", Port(3001)))
        changed = replace(await store.get_app("web"), revision=2, **change)  # type: ignore[arg-type]
        async with store.transaction() as tx:
            tx.update_app(changed)
    async with SqliteStore(db_path, PortLedger(MANAGED)) as reopened:
        assert await reopened.get_app("web") == changed

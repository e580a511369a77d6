"""The event log on a real SQLite file: written with its change, compacted, read by the hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from miasma_grpc.domain.allocator import PortLedger
from miasma_grpc.domain.errors import OutOfRange
from miasma_grpc.domain.events import EventKind, PortEvent, Progress, Retention, SnapshotComplete
from miasma_grpc.domain.models import Binding, PortRange
from miasma_grpc.events import EventHub
from miasma_grpc.store.sqlite import SqliteStore, Transaction, now
from tests.integration.test_store import Boom, make_app

SLOT = (Binding(3001, 3500),)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A store on a fresh file."""
    async with SqliteStore(tmp_path / "m.db", PortLedger(PortRange(3001, 3999))) as opened:
        yield opened


def record(tx: Transaction, app: str, kind: EventKind = EventKind.CHANGED) -> int:
    """Log one event at a fresh revision."""
    revision = tx.next_revision()
    tx.record(PortEvent(revision, app, kind, new=SLOT, time=now()))
    return revision


async def test_events_commit_and_roll_back_with_their_change(store: SqliteStore) -> None:
    """A committed change has its event (and subscribers hear of it); a rolled-back one has none."""
    heard: list[tuple[int, list[int]]] = []

    def listener(revision: int, events: Sequence[PortEvent]) -> None:
        heard.append((revision, [e.revision for e in events]))

    store.subscribe(listener)
    async with store.transaction() as tx:
        tx.insert_app(make_app("web"))
        kept = record(tx, "web", EventKind.ASSIGNED)

    async def fail_after_recording() -> None:
        async with store.transaction() as tx:
            record(tx, "web")
            raise Boom

    with pytest.raises(Boom):
        await fail_after_recording()
    logged = await store.read_events(after=0, app=None, limit=10)
    assert [(e.revision, e.kind, e.new) for e in logged] == [(kept, EventKind.ASSIGNED, SLOT)]
    assert heard == [(kept, [kept])]


async def test_compaction_keeps_the_newest_and_raises_the_floor(store: SqliteStore) -> None:
    """Retention by count drops the oldest events and the floor follows."""
    async with store.transaction() as tx:
        revisions = [record(tx, "web") for _ in range(10)]
    floor = await store.compact_events(Retention(max_events=4, max_age=None))
    assert floor == revisions[5]
    left = await store.read_events(after=0, app=None, limit=100)
    assert [e.revision for e in left] == revisions[6:]
    assert (
        await store.compact_events(Retention(max_events=100, max_age=timedelta(0)))
        == (revisions[-1])
    )


async def test_hub_serves_the_ring_the_log_and_refuses_compacted_revisions(
    store: SqliteStore,
) -> None:
    """A watcher behind a 2-event ring still gets all events in order from the log."""
    hub = EventHub(store, ring_size=2)
    await hub.start()
    async with store.transaction() as tx:
        tx.insert_app(make_app("web"))
        first = record(tx, "web", EventKind.ASSIGNED)
    for _ in range(5):
        async with store.transaction() as tx:
            last = record(tx, "web")
    watch = hub.watch(None, first, heartbeat=0.05)
    got = [await anext(watch) for _ in range(6)]
    assert [e.revision for e in got if isinstance(e, PortEvent)] == list(range(first + 1, last + 1))
    assert got[-1] == Progress(last)
    await watch.aclose()
    snapshot = hub.watch("web", 0, heartbeat=10)
    assert [await anext(snapshot) for _ in range(2)][1] == SnapshotComplete(last)
    await snapshot.aclose()
    await store.compact_events(Retention(max_events=1, max_age=None))
    with pytest.raises(OutOfRange) as old:
        await anext(hub.watch(None, first, heartbeat=10))
    assert old.value.metadata["oldest_revision"] == str(last - 1)


async def test_closing_the_hub_ends_watchers(store: SqliteStore) -> None:
    """close() wakes a waiting watcher, which ends with Unavailable and its cursor."""
    hub = EventHub(store)
    await hub.start()
    watch = hub.watch(None, 0, heartbeat=60)
    assert await anext(watch) == SnapshotComplete(0)
    waiting = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)
    hub.close()
    with pytest.raises(Exception, match="resume from revision 0"):
        await waiting

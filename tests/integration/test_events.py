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


async def no_waiting(event: asyncio.Event, seconds: float) -> bool:
    """An injected wait in which the heartbeat's time has always run out: no real seconds."""
    return event.is_set()


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
    hub = EventHub(store, ring_size=2, wait=no_waiting)
    await hub.start()
    async with store.transaction() as tx:
        tx.insert_app(make_app("web"))
        first = record(tx, "web", EventKind.ASSIGNED)
    for _ in range(5):
        async with store.transaction() as tx:
            last = record(tx, "web")
    watch = hub.watch(None, first, heartbeat=15)  # its heartbeat comes at once (no_waiting)
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


async def test_resuming_at_the_floor_while_the_log_is_compacted_never_skips_an_event(
    store: SqliteStore,
) -> None:
    """Watchers resume at the floor while compaction keeps raising it: each one either
    gets the very next revision first, or OUT_OF_RANGE; never the events after a gap."""
    hub = EventHub(store, ring_size=1)  # so watchers read from the log
    await hub.start()
    async with store.transaction() as tx:
        for _ in range(600):
            record(tx, "web")  # one event per revision: the next one is always floor + 1
    await store.compact_events(Retention(max_events=580, max_age=None))  # a floor above 0
    done = asyncio.Event()

    async def compact_while_watchers_resume() -> None:
        keep = 550
        while not done.is_set() and keep > 0:
            await store.compact_events(Retention(max_events=keep, max_age=None))
            keep -= 1

    compactor = asyncio.create_task(compact_while_watchers_resume())
    outcomes = {"resumed": 0, "told": 0}
    try:
        for _ in range(300):
            floor = await store.events_floor()
            watch = hub.watch(None, floor, heartbeat=10)
            try:
                first = await anext(watch)
            except OutOfRange:
                outcomes["told"] += 1
                continue
            finally:
                await watch.aclose()
            assert isinstance(first, PortEvent)
            assert first.revision == floor + 1, f"resumed at {floor}, first event {first.revision}"
            outcomes["resumed"] += 1
    finally:
        done.set()
        await compactor
    assert outcomes["resumed"] > 0


async def test_a_revision_read_right_after_a_commit_is_a_valid_start(store: SqliteStore) -> None:
    """What reads say (ListApps' revision, App.revision) is never ahead of what the hub
    accepts: reads and the hub both follow the commits, updated before anyone is answered.
    A revision above any committed one is still REVISION_AHEAD."""
    hub = EventHub(store, wait=no_waiting)
    await hub.start()
    for _ in range(50):
        async with store.transaction() as tx:
            record(tx, "web")
        read = await store.revision()  # as ListApps would report it
        watch = hub.watch(None, read, heartbeat=15)
        assert await anext(watch) == Progress(read)
        await watch.aclose()
    with pytest.raises(OutOfRange) as error:
        await anext(hub.watch(None, read + 1, heartbeat=10))
    assert error.value.reason == "REVISION_AHEAD"


async def test_an_idle_watch_gets_a_heartbeat_each_interval_on_an_injected_clock(
    store: SqliteStore,
) -> None:
    """With nothing to send, each wait lasts the whole heartbeat, then a Progress comes;
    measured on an injected clock, so no real seconds pass."""
    now = 0.0
    waits: list[float] = []

    def clock() -> float:
        return now

    async def wait(event: asyncio.Event, seconds: float) -> bool:
        nonlocal now
        waits.append(seconds)
        now += seconds  # nothing happened meanwhile
        return False

    hub = EventHub(store, clock=clock, wait=wait)
    await hub.start()
    watch = hub.watch(None, 0, heartbeat=15)
    assert await anext(watch) == SnapshotComplete(0)
    assert [await anext(watch) for _ in range(3)] == [Progress(0)] * 3
    assert waits == [15, 15, 15]
    assert now == 45
    await watch.aclose()

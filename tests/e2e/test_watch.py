"""WatchPortEvents end to end: real server processes, real SQLite, real gRPC streams."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from miasma.v1 import apps_pb2, apps_pb2_grpc
from miasma_client import AsyncMiasmaClient, MiasmaError

from tests.server import ServerProcess

pytestmark = pytest.mark.docker

Response = apps_pb2.WatchPortEventsResponse
KIND = apps_pb2.PortEventKind


def published(event: apps_pb2.PortEvent) -> list[int]:
    """Published ports of the event's new bindings."""
    return [b.published_port for b in event.new_bindings]


async def until(
    stream: AsyncIterator[Response], done: Callable[[list[Response]], bool], within: float = 30
) -> list[Response]:
    """Messages of ``stream`` until ``done(messages)`` holds."""
    seen: list[Response] = []
    async with asyncio.timeout(within):
        async for response in stream:
            seen.append(response)
            if done(seen):
                return seen
    raise AssertionError(f"stream ended after {len(seen)} messages")


def events(messages: list[Response], *kinds: int) -> list[apps_pb2.PortEvent]:
    """The port events among ``messages`` (of ``kinds``, if given)."""
    found = [m.event for m in messages if m.HasField("event")]
    return [e for e in found if not kinds or e.kind in kinds]


def has_revision(revision: int) -> Callable[[list[Response]], bool]:
    """Done once a message at or past ``revision`` arrived."""

    def done(seen: list[Response]) -> bool:
        last = seen[-1]
        payload = last.WhichOneof("payload")
        value = getattr(last, payload).revision if payload else 0
        return bool(value >= revision)

    return done


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server with a small in-memory event buffer, so catch-up from the log is exercised."""
    return make_server(published_range="18001-18999", extra_args=["--event-buffer", "16"])


async def test_snapshot_then_burst_in_order(server: ServerProcess, test_image: str) -> None:
    """A watcher at 0 gets the snapshot, the marker, then every edit of a burst, in order."""
    async with AsyncMiasmaClient(server.address) as client:
        await client.create_app("one", test_image, stopped=True, published_ports=[9101])
        await client.create_app("two", test_image, stopped=True)
        stream = client.watch_port_events()
        head = await until(stream, lambda seen: seen[-1].HasField("snapshot_complete"))
        assert sorted(e.app for e in events(head, KIND.PORT_EVENT_KIND_SNAPSHOT)) == [
            "apps/one",
            "apps/two",
        ]
        assert published(events(head)[0]) == [9101]

        async def edit(i: int) -> int:
            app = ("one", "two")[i % 2]
            reply = await client.edit_ports(app, add_published=[9110 + i])
            return reply.app.revision

        acked = await asyncio.gather(*(edit(i) for i in range(20)))
        seen = await until(stream, has_revision(max(acked)))
        changed = events(seen, KIND.PORT_EVENT_KIND_CHANGED)
        revisions = [e.revision for e in events(seen)]
        assert revisions == sorted(set(revisions)), "revisions strictly increase"
        assert sorted(e.revision for e in changed) == sorted(acked)
        added = {p for e in changed for p in published(e)}
        assert {9110 + i for i in range(20)} <= added
        await stream.aclose()


async def test_filter_by_app_and_resume_in_the_middle(
    server: ServerProcess, test_image: str
) -> None:
    """`apps/one` sees only its events; resuming from a revision gives exactly what followed."""
    async with AsyncMiasmaClient(server.address) as client:
        await client.create_app("one", test_image, stopped=True)
        await client.create_app("two", test_image, stopped=True)
        revisions = []
        for port in (9201, 9202, 9203):
            revisions.append((await client.edit_ports("one", add_published=[port])).app.revision)
            await client.edit_ports("two", add_published=[port + 100])
        stream = client.watch_port_events("one", since=revisions[0])
        seen = await until(stream, has_revision(revisions[-1]))
        await stream.aclose()
    got = events(seen)
    assert {e.app for e in got} == {"apps/one"}
    assert [e.revision for e in got] == revisions[1:]
    assert [published(e)[-1] for e in got] == [9202, 9203]


async def test_resume_across_a_killed_server_misses_nothing(
    server: ServerProcess, test_image: str
) -> None:
    """SIGKILL in the middle of a burst: the resuming watcher ends with exactly the log."""
    async with AsyncMiasmaClient(server.address, timeout=10) as client:
        for name in ("one", "two"):
            await client.create_app(name, test_image, stopped=True)
        start = (await client.get_app("two")).revision
        watcher = client.watch_port_events(since=start)
        acked: list[int] = []
        refused: list[grpc.StatusCode] = []

        async def burst() -> None:
            for i in range(30):
                if i == 10:
                    await asyncio.to_thread(server.stop, signal.SIGKILL)
                    await asyncio.to_thread(server.start)
                try:
                    reply = await client.edit_ports(("one", "two")[i % 2], add_published=[9300 + i])
                    acked.append(reply.app.revision)
                except MiasmaError as exc:
                    refused.append(exc.code)

        await burst()
        seen = await until(watcher, has_revision(max(acked)))
        await watcher.aclose()
        fresh = client.watch_port_events(since=start, resume=False)
        log = await until(fresh, has_revision(max(acked)))
        await fresh.aclose()
    watched = [e.revision for e in events(seen)]
    assert len(watched) == len(set(watched)), "nothing twice"
    assert watched == [e.revision for e in events(log)], "nothing missing"
    assert set(acked) <= set(watched)
    assert len(acked) >= 25
    assert set(refused) <= {grpc.StatusCode.UNAVAILABLE}


async def test_old_revision_after_compaction_is_out_of_range(
    make_server: Callable[..., ServerProcess], test_image: str
) -> None:
    """Past the retained log a watch fails with OUT_OF_RANGE naming the oldest revision."""
    server = make_server(
        extra_args=["--event-retention", "3", "--event-compaction-interval", "0.1"]
    )
    async with AsyncMiasmaClient(server.address) as client:
        await client.create_app("one", test_image, stopped=True)
        for port in range(9401, 9409):
            last = (await client.edit_ports("one", add_published=[port])).app.revision
        async with asyncio.timeout(30):
            while True:
                try:
                    stream = client.watch_port_events("one", since=1, resume=False)
                    await anext(stream)
                    await stream.aclose()
                    await asyncio.sleep(0.1)
                except MiasmaError as exc:
                    error = exc
                    break
        assert error.code is grpc.StatusCode.OUT_OF_RANGE
        oldest = int(error.metadata["oldest_revision"])
        assert 1 < oldest <= last
        stream = client.watch_port_events("one", since=oldest, resume=False)
        seen = await until(stream, has_revision(last))
        await stream.aclose()
        assert events(seen)[-1].revision == last
        with pytest.raises(MiasmaError) as ahead:
            await anext(client.watch_port_events(since=last + 1000, resume=False))
        assert ahead.value.code is grpc.StatusCode.OUT_OF_RANGE


async def test_heartbeat_carries_the_current_revision(
    make_server: Callable[..., ServerProcess], test_image: str
) -> None:
    """An idle stream gets progress messages with the server's revision."""
    server = make_server(extra_args=["--watch-heartbeat", "0.2"])
    async with AsyncMiasmaClient(server.address) as client:
        await client.create_app("one", test_image, stopped=True)
        snapshot = client.watch_port_events("two")
        [marker] = await until(snapshot, lambda s: s[-1].HasField("snapshot_complete"))
        await snapshot.aclose()
        current = marker.snapshot_complete.revision
        stream = client.watch_port_events("two", since=current - 1)
        seen = await until(stream, lambda s: len(s) == 2)
        await stream.aclose()
    assert [m.WhichOneof("payload") for m in seen] == ["progress", "progress"]
    assert seen[0].progress.revision == current


async def test_shutdown_ends_streams_with_unavailable(
    server: ServerProcess, test_image: str
) -> None:
    """SIGTERM ends open watches with UNAVAILABLE and the revision to resume from."""
    async with AsyncMiasmaClient(server.address) as client:
        await client.create_app("one", test_image, stopped=True)
        snapshot = client.watch_port_events("one")
        seen = await until(snapshot, lambda s: s[-1].HasField("snapshot_complete"))
        await snapshot.aclose()
        revision = seen[-1].snapshot_complete.revision
        stream = client.watch_port_events(since=revision, resume=False)
        task = asyncio.create_task(until(stream, lambda s: False))
        await asyncio.sleep(0.2)
        assert await asyncio.to_thread(server.stop, signal.SIGTERM) == 0
        with pytest.raises(MiasmaError) as ended:
            await task
    assert ended.value.code is grpc.StatusCode.UNAVAILABLE
    assert ended.value.metadata.get("resume_revision") == str(revision)


async def test_stalled_watcher_delays_nobody_and_catches_up(
    server: ServerProcess, test_image: str
) -> None:
    """A stream nobody reads doesn't hold up edits or other watchers; later it gets everything."""
    channel = grpc.aio.insecure_channel(server.address)
    stub = apps_pb2_grpc.AppServiceStub(channel)
    async with AsyncMiasmaClient(server.address) as client:
        start = (await client.create_app("one", test_image, stopped=True)).revision
        stalled = stub.WatchPortEvents(
            apps_pb2.WatchPortEventsRequest(name="apps/-", start_revision=start)
        )
        live = client.watch_port_events(since=start)
        last = start
        for i in range(300):  # far more than the buffer (16) and the flow-control window
            ports = ([9500 + i % 50], []) if i % 2 == 0 else ([], [9500 + (i - 1) % 50])
            reply = await client.edit_ports(
                "one", add_published=ports[0], remove_published=ports[1]
            )
            last = reply.app.revision
        seen_live = await until(live, has_revision(last))
        await live.aclose()
    assert len(events(seen_live, KIND.PORT_EVENT_KIND_CHANGED)) == 300
    caught_up: list[Response] = []
    async with asyncio.timeout(30):
        async for response in stalled:
            caught_up.append(response)
            if has_revision(last)(caught_up):
                break
    stalled.cancel()
    await channel.close(None)
    assert [e.revision for e in events(caught_up)] == [e.revision for e in events(seen_live)]


async def test_a_thousand_watchers_all_receive_an_edit(
    server: ServerProcess, test_image: str
) -> None:
    """1,000 concurrent streams each get the CHANGED event of one edit."""
    async with AsyncMiasmaClient(server.address) as client:
        await client.create_app("one", test_image, stopped=True)
        streams = [client.watch_port_events("one") for _ in range(1000)]
        await asyncio.gather(
            *(until(s, lambda seen: seen[-1].HasField("snapshot_complete")) for s in streams)
        )
        reply = await client.edit_ports("one", add_published=[9601])
        changed = await asyncio.gather(
            *(until(s, has_revision(reply.app.revision)) for s in streams)
        )
        for stream in streams:
            await stream.aclose()
    assert all(published(events(seen)[-1]) == [9601] for seen in changed)


async def test_failed_rollout_and_refused_edit(server: ServerProcess, test_image: str) -> None:
    """A missing image logs ASSIGNED, ROLLOUT_FAILED, RELEASED; a refused edit logs nothing."""
    async with AsyncMiasmaClient(server.address) as client:
        start = (await client.create_app("one", test_image, stopped=True)).revision
        with pytest.raises(MiasmaError):
            await client.create_app("ghost", "miasma-test/missing:never")
        with pytest.raises(MiasmaError):
            await client.edit_ports("one", add_published=[70000])
        last = (await client.edit_ports("one", add_published=[9701])).app.revision
        stream = client.watch_port_events(since=start)
        seen = await until(stream, has_revision(last))
        await stream.aclose()
    kinds = [(e.app, e.kind) for e in events(seen)]
    assert kinds == [
        ("apps/one", KIND.PORT_EVENT_KIND_ROLLOUT_APPLIED),  # its creation (stopped) is done
        ("apps/ghost", KIND.PORT_EVENT_KIND_ASSIGNED),
        ("apps/ghost", KIND.PORT_EVENT_KIND_ROLLOUT_FAILED),
        ("apps/ghost", KIND.PORT_EVENT_KIND_RELEASED),
        ("apps/one", KIND.PORT_EVENT_KIND_CHANGED),
    ]
    assert "missing" in events(seen)[2].message

"""Reading an app's output (miasma_grpc/logs.py) over the in-memory runtime: what a read
returns, and how a follow stays with the app across the containers it gets. The Docker
side is tested on the real engine in tests/e2e/test_logs.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.errors import NotFound, Unavailable
from miasma_grpc.domain.logs import LogLine, LogNotice, Stream
from miasma_grpc.domain.models import DesiredState
from miasma_grpc.logs import AppLogs, LogItem
from miasma_grpc.runtime.fake import FakeRuntime

IMAGE = "img:1"


@pytest.fixture
def logs(manager: AppManager) -> AppLogs:
    """The log reader over ``manager``, rechecking often."""
    return AppLogs(manager, recheck=0.01)


async def collect(items: AsyncIterator[LogItem]) -> list[LogItem]:
    """Everything a read that ends yields."""
    return [item async for item in items]


async def next_of(stream: AsyncIterator[LogItem]) -> LogItem:
    """The next item of ``stream``, within 5 s."""
    return await asyncio.wait_for(anext(stream), 5)


def texts(items: list[LogItem]) -> list[str]:
    """The text of each line (notices as "notice: …")."""
    return [i.text if isinstance(i, LogLine) else f"notice: {i.message}" for i in items]


async def test_a_read_gives_the_last_lines_or_those_since_a_time_and_tells_streams_apart(
    manager: AppManager, runtime: FakeRuntime, logs: AppLogs
) -> None:
    await manager.create("web", image=IMAGE)
    written = [await runtime.write("web", f"line {i}") for i in range(5)]
    await runtime.write("web", "boom", Stream.STDERR)

    everything = await collect(logs.read("web"))
    assert texts(everything) == [*(f"line {i}" for i in range(5)), "boom"]
    assert [i.stream for i in everything if isinstance(i, LogLine)][-2:] == [
        Stream.STDOUT,
        Stream.STDERR,
    ]
    assert texts(await collect(logs.read("web", tail=2))) == ["line 4", "boom"]
    since = written[3].time
    assert texts(await collect(logs.read("web", since=since))) == ["line 3", "line 4", "boom"]


async def test_an_unknown_app_is_not_found(logs: AppLogs) -> None:
    with pytest.raises(NotFound):
        await collect(logs.read("nope"))


async def test_a_follow_moves_to_the_new_container_of_a_rollout_and_says_so(
    manager: AppManager, runtime: FakeRuntime, logs: AppLogs
) -> None:
    await manager.create("web", image=IMAGE)
    await runtime.write("web", "old 1")
    stream = logs.read("web", follow=True)
    assert texts([await next_of(stream)]) == ["old 1"]
    old = runtime.container("web")

    await manager.update("web", image="img:2")  # a new container
    await runtime.write("web", "new 1")
    notice = await next_of(stream)
    assert isinstance(notice, LogNotice)
    assert old[:12] in notice.message
    assert "replaced" in notice.message
    assert notice.source == runtime.container("web")[:12]
    line = await next_of(stream)
    assert isinstance(line, LogLine)
    assert (line.text, line.source) == ("new 1", notice.source)

    await runtime.write("web", "new 2")  # still followed, nothing sent twice
    assert texts([await next_of(stream)]) == ["new 2"]

    await manager.delete("web")
    deleted = await next_of(stream)
    assert isinstance(deleted, LogNotice)
    assert "deleted" in deleted.message
    with pytest.raises(StopAsyncIteration):
        await next_of(stream)


async def test_a_follow_of_a_stopped_app_waits_and_goes_on_where_it_was(
    manager: AppManager, runtime: FakeRuntime, logs: AppLogs
) -> None:
    """Stopped, then started again in the same container: no line twice, none lost."""
    await manager.create("web", image=IMAGE)
    await runtime.write("web", "before")
    stream = logs.read("web", follow=True)
    assert texts([await next_of(stream)]) == ["before"]
    await manager.set_desired_state("web", DesiredState.STOPPED)
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)  # several rechecks: nothing to send while it is stopped
    assert not pending.done()
    await manager.set_desired_state("web", DesiredState.RUNNING)
    await runtime.write("web", "after")
    item = await asyncio.wait_for(pending, 5)
    assert texts([item]) == ["after"]
    await stream.aclose()


async def test_a_follow_ends_with_unavailable_when_the_server_shuts_down(
    manager: AppManager, runtime: FakeRuntime, logs: AppLogs
) -> None:
    await manager.create("web", image=IMAGE)
    stream = logs.read("web", follow=True)
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.02)
    logs.close()
    with pytest.raises(Unavailable, match="shutting down"):
        await asyncio.wait_for(pending, 5)


async def test_a_follow_waits_for_docker_and_says_so(
    manager: AppManager, runtime: FakeRuntime, logs: AppLogs, monkeypatch: pytest.MonkeyPatch
) -> None:
    await manager.create("web", image=IMAGE)
    source = runtime.log_source
    away = True

    async def flaky(app: object) -> object:
        if away:
            raise Unavailable("fake Docker is away")
        return await source(app)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime, "log_source", flaky)
    stream = logs.read("web", follow=True)
    notice = await next_of(stream)
    assert isinstance(notice, LogNotice)
    assert "waiting for Docker" in notice.message
    away = False
    await runtime.write("web", "back")
    assert texts([await next_of(stream)]) == ["back"]
    await stream.aclose()

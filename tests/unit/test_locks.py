"""KeyedLocks: one lock per name, shared by everyone who asked for it, dropped when unused."""

from __future__ import annotations

import asyncio

from miasma_grpc.locks import KeyedLocks


async def test_work_on_one_name_never_overlaps_across_a_release_and_a_new_holder() -> None:
    """A holds; B and C wait; A and B finish (B, say, deleted the app); D arrives while C
    still waits. D must wait for C: the old table dropped the lock at B's delete and gave
    D a fresh one, so C and D ran at once."""
    locks = KeyedLocks()
    running: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    release = {name: asyncio.Event() for name in "ABCD"}
    entered = {name: asyncio.Event() for name in "ABCD"}

    async def work(name: str) -> None:
        async with locks.hold("app"):
            entered[name].set()
            running.append(name)
            if len(running) > 1:
                overlaps.append(tuple(running))
            await release[name].wait()
            running.remove(name)

    tasks = {name: asyncio.create_task(work(name)) for name in "ABC"}
    await entered["A"].wait()
    release["A"].set()
    release["B"].set()
    await tasks["A"]
    await tasks["B"]
    await entered["C"].wait()
    tasks["D"] = asyncio.create_task(work("D"))
    for _ in range(5):  # give D every chance to run beside C
        await asyncio.sleep(0)
    assert running == ["C"], "D ran beside C"
    release["C"].set()
    release["D"].set()
    await asyncio.gather(*tasks.values())
    assert overlaps == []
    assert len(locks) == 0


async def test_the_table_holds_only_names_in_use() -> None:
    """A name is dropped once its last holder or waiter is done, also after an error."""
    locks = KeyedLocks()
    for name in ("a", "b", "c"):
        async with locks.hold(name):
            assert locks.locked(name)
            assert len(locks) == 1
    assert len(locks) == 0
    try:
        async with locks.hold("x"):
            raise ValueError("refused")
    except ValueError:
        pass
    assert len(locks) == 0
    assert not locks.locked("x")


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    """A waiter cancelled before it got the lock is counted out."""
    locks = KeyedLocks()
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("app"):
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with locks.hold("app"):
            raise AssertionError("never reached")

    first = asyncio.create_task(holder())
    await held.wait()
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    release.set()
    await first
    assert len(locks) == 0

"""The aiodocker edge (runtime/docker.py) against a stand-in engine: errors are translated
once, into Miasma's, whatever way Docker fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import aiodocker
import pytest

from miasma_grpc.domain.errors import RuntimeFailure, Unavailable
from miasma_grpc.runtime.base import PHASE
from miasma_grpc.runtime.docker import PullProgress, docker_errors, ensure_image


class Images:
    """``docker.images`` of an engine without the image, whose pull hangs or fails."""

    def __init__(self, pull: str) -> None:
        self.pull_behaviour = pull
        self.pulled = False

    async def inspect(self, image: str) -> dict[str, Any]:
        if self.pulled:
            return {"Id": "sha256:1", "Config": {"Volumes": {"/data": {}}}}
        raise aiodocker.DockerError(404, f"No such image: {image}")

    async def pull(self, image: str, *, stream: bool) -> AsyncIterator[dict[str, Any]]:
        """Docker's progress stream: two layers of 1 MB, one fetched in two steps."""
        assert stream
        if self.pull_behaviour == "hang":
            await asyncio.sleep(3600)
        if self.pull_behaviour == "refuse":
            raise aiodocker.DockerError(404, "pull access denied")
        yield {"status": f"Pulling from {image}"}
        yield {"id": "a", "status": "Pulling fs layer", "progressDetail": {}}
        for layer, current in (("a", 500_000), ("b", 1_000_000), ("a", 1_000_000)):
            detail = {"current": current, "total": 1_000_000}
            yield {"id": layer, "status": "Downloading", "progressDetail": detail}
        yield {"id": "a", "status": "Pull complete", "progressDetail": {}}
        self.pulled = True


class Engine:
    """Just enough of ``aiodocker.Docker`` for ensure_image."""

    def __init__(self, pull: str) -> None:
        self.images = Images(pull)


def engine(pull: str) -> aiodocker.Docker:
    return cast(aiodocker.Docker, Engine(pull))


async def test_a_pull_that_times_out_is_the_refusal_of_a_failed_pull() -> None:
    """Not a bare TimeoutError: IMAGE_PULL_FAILED naming the image and the limit."""
    with pytest.raises(RuntimeFailure) as error:
        await ensure_image(engine("hang"), "slow/image:1", pull_timeout=0.05)
    assert error.value.reason == "IMAGE_PULL_FAILED"
    assert error.value.metadata == {"image": "slow/image:1"}
    assert "longer than 0.05 s" in error.value.message


async def test_a_refused_pull_is_image_pull_failed() -> None:
    """Docker's refusal is kept in the message."""
    with pytest.raises(RuntimeFailure, match="pull access denied") as error:
        await ensure_image(engine("refuse"), "private/image:1")
    assert error.value.reason == "IMAGE_PULL_FAILED"


async def test_a_pulled_image_is_inspected() -> None:
    """After a pull, what inspect says comes back (its VOLUME paths among it)."""
    shown = await ensure_image(engine("ok"), "fine/image:1")
    assert shown["Config"]["Volumes"] == {"/data": {}}


async def test_a_pull_says_how_far_it_is() -> None:
    """Each change of the figures is said (ObservedState.phase), summed over the layers."""
    said: list[str] = []
    token = PHASE.set(said.append)
    try:
        await ensure_image(engine("ok"), "fine/image:1")
    finally:
        PHASE.reset(token)
    assert said == [
        "pulling fine/image:1",
        "pulling fine/image:1: 0.5 of 1.0 MB",
        "pulling fine/image:1: 1.5 of 2.0 MB",
        "pulling fine/image:1: 2.0 of 2.0 MB",
    ]


def test_pull_progress_counts_a_finished_layer_in_full() -> None:
    """A layer Docker says is complete counts as fetched, whatever its last figure."""
    progress = PullProgress("web:2")
    detail = {"current": 1, "total": 3_000_000}
    assert progress.update({"id": "x", "status": "Downloading", "progressDetail": detail})
    assert progress.update({"id": "x", "status": "Download complete"})
    assert not progress.update({"id": "x", "status": "Pull complete"})
    assert not progress.update({"id": "y", "status": "Already exists"})
    assert progress.text() == "pulling web:2: 3.0 of 3.0 MB"


async def test_an_outer_deadline_is_not_taken_for_the_pulls_own() -> None:
    """A caller's own timeout passes through as a TimeoutError, not as a failed pull."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await ensure_image(engine("hang"), "slow/image:1", pull_timeout=60)


@pytest.mark.parametrize(
    ("raised", "expected", "reason"),
    [
        (aiodocker.DockerError(900, "cannot connect"), Unavailable, None),
        (aiodocker.DockerError(500, "port is already allocated"), RuntimeFailure,
         "PORT_BUSY_ON_HOST"),
        (aiodocker.DockerError(409, "conflict"), RuntimeFailure, None),
        (ConnectionRefusedError("refused"), Unavailable, None),
        (TimeoutError(), Unavailable, None),
    ],
)  # fmt: skip
async def test_docker_errors_are_translated_once(
    raised: BaseException, expected: type[Exception], reason: str | None
) -> None:
    """Unreachable engines are Unavailable; refusals are RuntimeFailure, classified."""
    with pytest.raises(expected) as error:
        async with docker_errors("do something"):
            raise raised
    assert "do something" in str(error.value)
    if reason is not None:
        assert getattr(error.value, "reason", None) == reason

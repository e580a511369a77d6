"""The composition root in-process: a failing background task still shuts everything down."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from miasma_grpc.config import Settings
from miasma_grpc.reconcile import Reconciler
from miasma_grpc.server import serve
from tests.server import free_port


def answers(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_a_failing_background_task_stops_the_server_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler dies: serve() ends with its error, and the gRPC port is closed (the
    shutdown steps ran) instead of a server left listening over a closed store."""
    started = asyncio.Event()

    async def broken(self: Reconciler) -> None:
        started.set()
        await asyncio.sleep(0.2)
        raise RuntimeError("the reconciler broke")

    monkeypatch.setattr(Reconciler, "run", broken)
    port = free_port()
    settings = Settings(
        listen=f"127.0.0.1:{port}", db_path=tmp_path / "m.db", runtime="container",
        docker_host=f"unix://{tmp_path}/no-docker.sock",
    )  # fmt: skip
    task = asyncio.create_task(serve(settings, asyncio.Event()))
    await asyncio.wait_for(started.wait(), 30)
    assert answers(port)
    with pytest.raises(BaseExceptionGroup) as caught:
        await asyncio.wait_for(task, 30)
    assert caught.group_contains(RuntimeError, match="the reconciler broke")
    assert not answers(port)

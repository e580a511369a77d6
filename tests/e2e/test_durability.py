"""Acknowledged means durable (README "Reliability"): with ``--durability full`` (the
default) a change is answered only once SQLite has fsynced it to the WAL, so it survives
a power loss; ``--durability fast`` answers before (a crash of the server loses nothing,
one of the machine may lose the last changes).

Copying the files at the moment of the reply would prove nothing (the page cache holds
what was written), so the real server runs with an LD_PRELOAD shim (native/fsync_gate.c,
built here with the machine's C compiler) that notes every fsync of the WAL and holds it
while a gate file exists: the reply must wait behind the held fsync.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from miasma.v1 import apps_pb2, apps_pb2_grpc

from tests.polling import eventually
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

SHIM = Path(__file__).with_name("native") / "fsync_gate.c"
HOLD = 1.0  # seconds the reply is watched for while the fsync is held


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fsync gate, compiled for this machine."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed to build the fsync gate (Debian's gcc)"
    built = tmp_path_factory.mktemp("shim") / "fsync_gate.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(SHIM), "-ldl"],
                   check=True)  # fmt: skip
    return built


def gated_server(
    make_server: Callable[..., ServerProcess], shim: Path, tmp_path: Path, durability: str
) -> tuple[ServerProcess, Path, Path]:
    gate, log = tmp_path / "gate", tmp_path / "fsyncs.log"
    server = make_server(
        published_range="29001-29499",
        extra_args=["--durability", durability],
        environment={"LD_PRELOAD": str(shim), "MIASMA_FSYNC_GATE": str(gate),
                     "MIASMA_FSYNC_LOG": str(log)},
    )  # fmt: skip
    return server, gate, log


def began(log: Path) -> None:
    """The shim noted a WAL fsync (it is held now)."""
    assert log.exists()
    assert "wal" in log.read_text()


def stopped_app(stub: apps_pb2_grpc.AppServiceStub) -> None:
    """An app to change: created stopped (Docker runs nothing for it)."""
    request = apps_pb2.CreateAppRequest(
        app_id="web",
        app=apps_pb2.App(image="miasma-test/busybox:latest",
                         desired_state=apps_pb2.DESIRED_STATE_STOPPED),
    )  # fmt: skip
    stub.CreateApp(request, timeout=30)


def test_a_change_is_answered_only_after_its_fsync(
    make_server: Callable[..., ServerProcess], shim: Path, tmp_path: Path
) -> None:
    """--durability full: the reply to a change waits while its WAL fsync is held, and
    comes once the fsync is let through; the change is on disk after a restart."""
    server, gate, log = gated_server(make_server, shim, tmp_path, "full")
    channel, stub = server.stub()
    with channel:
        stopped_app(stub)
        gate.touch()
        try:
            log.unlink(missing_ok=True)
            reply = stub.EditApp.future(
                apps_pb2.EditAppRequest(name="apps/web", group="durable"), timeout=60
            )
            eventually(lambda: began(log), "the change's WAL fsync to begin", timeout=20)
            with pytest.raises(grpc.FutureTimeoutError):
                reply.result(timeout=HOLD)  # held behind the fsync: no acknowledgement yet
        finally:
            gate.unlink(missing_ok=True)
        assert reply.result(timeout=30).app.group == "durable"
    server.stop()
    server.start()
    channel, stub = server.stub()
    with channel:
        shown = stub.GetApp(apps_pb2.GetAppRequest(name="apps/web"), timeout=30)
        assert shown.app.group == "durable"


def test_the_fast_mode_answers_without_waiting_for_the_disk(
    make_server: Callable[..., ServerProcess], shim: Path, tmp_path: Path
) -> None:
    """--durability fast: with every WAL fsync held, the change is still answered, and no
    fsync of the WAL was asked for it."""
    server, gate, log = gated_server(make_server, shim, tmp_path, "fast")
    channel, stub = server.stub()
    with channel:
        stopped_app(stub)
        gate.touch()
        try:
            log.unlink(missing_ok=True)
            edit = apps_pb2.EditAppRequest(name="apps/web", group="quick")
            assert stub.EditApp(edit, timeout=30).app.group == "quick"
            assert not log.exists()
        finally:
            gate.unlink(missing_ok=True)

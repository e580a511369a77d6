"""Moving a running app to new ports: the old container serves until the new one listens."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from miasma.v1 import apps_pb2

from tests.conftest import HTTPD_COMMAND
from tests.docker_cli import containers, http_get, the_container
from tests.server import ServerProcess, free_port

pytestmark = pytest.mark.docker

# HTTPD_COMMAND, but httpd listens only a second after the container starts.
SLOW_HTTPD_COMMAND = ["sh", "-c", "trap 'exit 0' TERM INT; sleep 1; " + HTTPD_COMMAND[2]]
# Runs, exits on SIGTERM, never listens (a worker).
SILENT_COMMAND = ["sh", "-c", "trap 'exit 0' TERM INT; sleep 1000000 & wait"]
GIVE_UP_WARNING = "does not accept connections"
HANDOVER_DEADLINE = 60.0  # a safety net against a hung test, not a timing assertion


def serves(port: int) -> bool:
    """One ``GET /`` on 127.0.0.1:``port``: True on a 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            status = sock.makefile("rb").readline()
    except OSError:
        return False
    return status.split()[1:2] == [b"200"]


def failed_gets_during_handover(
    old: int, new: int, edit: Future[apps_pb2.EditPortsResponse]
) -> int:
    """GET ``old`` until it stops serving and ``new`` serves: GETs that found neither serving.

    The edit removes the old port, so the old port must fail at some point; that is
    only a failure if the new port does not serve at that moment.
    """
    failed = 0
    deadline = time.monotonic() + HANDOVER_DEADLINE
    while time.monotonic() < deadline:
        if serves(old):
            continue
        if serves(new):
            return failed
        failed += 1
        if edit.done() and edit.exception() is not None:
            edit.result()  # raises the edit's error
    raise AssertionError(f"no handover from port {old} to {new}; {failed} failed GETs")


def whole_log(server: ServerProcess) -> str:
    """Everything the server logged so far."""
    assert server.log_path is not None
    return server.log_path.read_text(errors="replace")


def move(name: str, old: int, new: int) -> apps_pb2.EditPortsRequest:
    """The EditPorts request that moves app ``name`` from published port ``old`` to ``new``."""
    return apps_pb2.EditPortsRequest(
        name=f"apps/{name}",
        add_published_ports=[apps_pb2.Port(number=new)],
        remove_published_ports=[apps_pb2.Port(number=old)],
    )


def test_old_port_serves_until_the_new_container_listens(
    make_server: Callable[..., ServerProcess], test_image: str
) -> None:
    """An app that starts listening a second after its container starts is moved to a new
    published port without a single failed GET: the old container goes only once the new
    one's app accepts connections."""
    server = make_server()
    old, new = free_port(), free_port()
    channel, stub = server.stub()
    with channel, ThreadPoolExecutor(max_workers=1) as pool:
        stub.CreateApp(
            apps_pb2.CreateAppRequest(
                app_id="slow",
                app=apps_pb2.App(image=test_image, command=SLOW_HTTPD_COMMAND),
                published_ports=[apps_pb2.Port(number=old)],
            )
        )
        assert http_get(old).strip() == "miasma-test"
        edit = pool.submit(stub.EditPorts, move("slow", old, new))
        failed = failed_gets_during_handover(old, new, edit)
        reply = edit.result()
    assert failed == 0
    assert [b.published_port for b in reply.app.bindings] == [new]
    assert http_get(new).strip() == "miasma-test"
    assert len(containers(server.docker_host, server.instance, "slow")) == 1
    assert GIVE_UP_WARNING not in whole_log(server)  # readiness was seen, not waited out


def test_a_container_that_never_listens_does_not_hold_up_the_move(
    make_server: Callable[..., ServerProcess], test_image: str
) -> None:
    """With --ready-timeout 1, an app that never listens is still moved: the wait gives up
    with a warning and the old container is removed."""
    server = make_server(extra_args=["--ready-timeout", "1"])
    old, new = free_port(), free_port()
    channel, stub = server.stub()
    with channel:
        stub.CreateApp(
            apps_pb2.CreateAppRequest(
                app_id="worker",
                app=apps_pb2.App(image=test_image, command=SILENT_COMMAND),
                published_ports=[apps_pb2.Port(number=old)],
            )
        )
        reply = stub.EditPorts(move("worker", old, new))
    [binding] = reply.app.bindings
    assert binding.published_port == new
    assert (reply.app.observed.running, reply.app.observed.total) == (1, 1)
    assert len(containers(server.docker_host, server.instance, "worker")) == 1
    container = the_container(server.docker_host, server.instance, "worker")
    assert container.published == {f"{binding.target_port}/tcp": new}
    assert GIVE_UP_WARNING in whole_log(server)

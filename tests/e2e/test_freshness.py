"""Observed state follows Docker's own events, on the real engine: what is done behind
Miasma's back shows in GetApp and is repaired at once, not at the periodic pass (here set
to 5 minutes, so that only the event stream can explain a repair within the deadline).

The latencies are measured and reported (``-rP`` shows them; benchmark (i) reports them
too); the assertions are about behaviour, with deadlines far below the interval.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
from miasma.v1 import apps_pb2
from miasma_client import MiasmaClient

from tests.conftest import HTTPD_COMMAND
from tests.docker_cli import containers, docker, http_get, the_container
from tests.e2e.test_faults import listen_on
from tests.polling import wait_for
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

RANGE = "27001-27999"
DEADLINE = 10.0  # seconds: far below the 300 s periodic pass


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A container-runtime server whose periodic pass is 5 minutes away."""
    return make_server(published_range=RANGE, extra_args=["--reconcile-interval", "300"])


@pytest.fixture
def client(server: ServerProcess) -> Iterator[MiasmaClient]:
    """A blocking client on the server."""
    with MiasmaClient(server.address, timeout=60) as miasma:
        yield miasma


def running(server: ServerProcess, app: str) -> bool:
    """Whether Docker runs a container of ``app`` now."""
    return any(c.running for c in containers(server.docker_host, server.instance, app))


def test_a_container_stopped_or_killed_by_hand_runs_again_at_once(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """docker stop, then docker kill: each time the app runs again well before any pass."""
    client.create_app("web", test_image, command=HTTPD_COMMAND, published_ports=[27100])
    for action in (["stop", "-t", "1"], ["kill"]):
        name = the_container(server.docker_host, server.instance, "web").name
        started = time.monotonic()
        docker(server.docker_host, *action, name)
        wait_for(lambda: running(server, "web"), f"the app to run again after {action[0]}",
                 timeout=DEADLINE)  # fmt: skip
        print(f"repaired {time.monotonic() - started:.2f} s after docker {action[0]}")
        assert http_get(27100).strip() == "miasma-test"
        assert client.get_app("web").observed.running == 1


def test_a_container_removed_by_hand_shows_in_get_app_at_once(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """Removed, and its port taken by someone else so it cannot come back: GetApp says it is
    down and why, long before a periodic pass, and watchers get the failure as an event;
    once the port is free it runs again (the failed repair is retried after a backoff, not
    only at the next pass)."""
    created = client.create_app("web", test_image, command=HTTPD_COMMAND, published_ports=[27200])
    name = the_container(server.docker_host, server.instance, "web").name
    with contextlib.ExitStack() as held:
        with server.paused():  # else its repair may take the port back before we do
            docker(server.docker_host, "rm", "-f", name)
            held.enter_context(listen_on(27200))  # a process outside Miasma takes the port
        started = time.monotonic()
        # First it shows the container going ("not running: Removal In Progress"), then
        # why it cannot come back.
        down = wait_for_app(
            client,
            lambda app: app.observed.running == 0 and "27200" in app.observed.last_error,
            "GetApp to show it down, and why",
        )
        print(f"GetApp showed it down {time.monotonic() - started:.2f} s after it woke up")
        assert down.observed.rollout == apps_pb2.ROLLOUT_STATE_FAILED
        assert not down.observed.HasField("unknown_since")
        failed = first_event(client, created.revision, apps_pb2.PORT_EVENT_KIND_ROLLOUT_FAILED)
        assert "27200" in failed.message
    wait_for(lambda: running(server, "web"), "the app to run again", timeout=60)
    assert http_get(27200).strip() == "miasma-test"


def first_event(
    client: MiasmaClient, after: int, kind: apps_pb2.PortEventKind.ValueType
) -> apps_pb2.PortEvent:
    """The first event of ``kind`` of app web after revision ``after``."""
    request = apps_pb2.WatchPortEventsRequest(name="apps/web", start_revision=after)
    stream = client.stub.WatchPortEvents(request, timeout=DEADLINE)
    try:
        for message in stream:
            if message.HasField("event") and message.event.kind == kind:
                return message.event
    finally:
        stream.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
    raise AssertionError(f"the stream ended without a {apps_pb2.PortEventKind.Name(kind)} event")


def wait_for_app(
    client: MiasmaClient, check: Callable[[apps_pb2.App], bool], what: str
) -> apps_pb2.App:
    """Poll GetApp until ``check`` holds; the app then."""
    found: list[apps_pb2.App] = []

    def holds() -> bool:
        found[:] = [client.get_app("web")]
        return check(found[0])

    wait_for(holds, what, timeout=DEADLINE)
    return found[0]

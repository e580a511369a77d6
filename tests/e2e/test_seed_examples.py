"""The seed page's examples, end to end: real server, real Docker, real HTTP."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from miasma.v1 import apps_pb2, apps_pb2_grpc

from tests.conftest import HTTPD_COMMAND
from tests.docker_cli import containers, docker, http_get, the_container
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

TARGET_RANGE = range(3000, 4000)


def port(number: int) -> apps_pb2.Port:
    """A TCP port message."""
    return apps_pb2.Port(number=number)


def pairs(app: apps_pb2.App) -> list[tuple[int, int]]:
    """(published, target) per slot."""
    return [(b.published_port, b.target_port) for b in app.bindings]


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose auto published ports come from 14001-14999."""
    return make_server(published_range="14001-14999")


def create(stub: apps_pb2_grpc.AppServiceStub, name: str, image: str) -> apps_pb2.App:
    """Create a running httpd app."""
    reply = stub.CreateApp(
        apps_pb2.CreateAppRequest(app_id=name, app=apps_pb2.App(image=image, command=HTTPD_COMMAND))
    )
    return reply.app


def edit(stub: apps_pb2_grpc.AppServiceStub, name: str, **ports: list[int]) -> apps_pb2.App:
    """EditPorts with plain TCP port numbers."""
    request = apps_pb2.EditPortsRequest(name=f"apps/{name}")
    for key, numbers in ports.items():
        getattr(request, key).extend(port(n) for n in numbers)
    return stub.EditPorts(request).app


def test_new_app_gets_random_target_and_auto_published_port_and_answers(
    stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess, test_image: str
) -> None:
    """A new app has one auto/auto slot: PORT random in range, published in the managed range."""
    app = create(stub, "web", test_image)
    [(published, target)] = pairs(app)
    assert 14001 <= published <= 14999
    assert target in TARGET_RANGE
    assert not app.bindings[0].published_explicit
    assert not app.bindings[0].target_explicit
    container = the_container(server.docker_host, server.instance, "web")
    assert container.env["PORT"] == container.env["PORT_1"] == str(target)
    assert container.published == {f"{target}/tcp": published}
    assert "web" in container.aliases
    assert http_get(published).strip() == "miasma-test"


def test_add_then_remove_published_5432(
    stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess, test_image: str
) -> None:
    """Adding 5432 publishes it to the same target; removing it goes back to an auto port."""
    [(_, target)] = pairs(create(stub, "postgres", test_image))
    app = edit(stub, "postgres", add_published_ports=[5432])
    assert pairs(app) == [(5432, target)]
    assert app.bindings[0].published_explicit
    assert the_container(server.docker_host, server.instance, "postgres").published == {
        f"{target}/tcp": 5432
    }
    assert http_get(5432).strip() == "miasma-test"

    app = edit(stub, "postgres", remove_published_ports=[5432])
    [(published, same_target)] = pairs(app)
    assert 14001 <= published <= 14999
    assert same_target == target
    assert the_container(server.docker_host, server.instance, "postgres").published == {
        f"{target}/tcp": published
    }
    assert http_get(published).strip() == "miasma-test"


def test_add_then_remove_target_80(
    stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess, test_image: str
) -> None:
    """Target 80 makes the app listen on 80 (PORT=80); removing it gives a random target again."""
    [(published, _)] = pairs(create(stub, "example-website", test_image))
    app = edit(stub, "example-website", add_target_ports=[80])
    assert pairs(app) == [(published, 80)]
    container = the_container(server.docker_host, server.instance, "example-website")
    assert container.env["PORT"] == "80"
    assert container.published == {"80/tcp": published}
    assert http_get(published).strip() == "miasma-test"

    app = edit(stub, "example-website", remove_target_ports=[80])
    [(same_published, target)] = pairs(app)
    assert same_published == published
    assert target in TARGET_RANGE
    container = the_container(server.docker_host, server.instance, "example-website")
    assert container.env["PORT"] == str(target)
    assert http_get(published).strip() == "miasma-test"


def test_two_published_ports_give_two_slots_with_distinct_random_targets(
    stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess, test_image: str
) -> None:
    """Publishing 8081 and 8082 gives PORT_1 (= PORT) and PORT_2, both answering."""
    create(stub, "example", test_image)
    app = edit(stub, "example", add_published_ports=[8081, 8082])
    [(p1, t1), (p2, t2)] = pairs(app)
    assert (p1, p2) == (8081, 8082)
    assert t1 != t2
    assert t1 in TARGET_RANGE
    assert t2 in TARGET_RANGE
    assert list(app.bindings[1].env_names) == ["PORT_2"]
    container = the_container(server.docker_host, server.instance, "example")
    assert container.env["PORT"] == container.env["PORT_1"] == str(t1)
    assert container.env["PORT_2"] == str(t2)
    assert container.published == {f"{t1}/tcp": 8081, f"{t2}/tcp": 8082}
    assert http_get(8081).strip() == "miasma-test"
    assert http_get(8082).strip() == "miasma-test"


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ([8081, 8082], [(8081, 8081), (8082, 8082)]),
        ([8082, 8081], [(8082, 8081), (8081, 8082)]),
    ],
)
def test_order_matters_when_pairing_published_and_target_ports(
    stub: apps_pb2_grpc.AppServiceStub,
    server: ServerProcess,
    test_image: str,
    published: list[int],
    expected: list[tuple[int, int]],
) -> None:
    """Published and target ports pair up in the order they were added."""
    create(stub, "example", test_image)
    app = edit(stub, "example", add_published_ports=published, add_target_ports=[8081, 8082])
    assert pairs(app) == expected
    container = the_container(server.docker_host, server.instance, "example")
    assert container.published == {f"{t}/tcp": p for p, t in expected}
    assert container.env["PORT_1"] == str(expected[0][1])
    assert container.env["PORT_2"] == str(expected[1][1])
    for published_port, _ in expected:
        assert http_get(published_port).strip() == "miasma-test"


def test_ports_survive_server_restart_and_stop_start(
    stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess, test_image: str
) -> None:
    """Neither a server restart nor a stop/start changes any port."""
    create(stub, "sticky", test_image)
    before = pairs(edit(stub, "sticky", add_published_ports=[8081, 8082]))
    container_before = the_container(server.docker_host, server.instance, "sticky")

    server.restart()
    channel, stub2 = server.stub()
    with channel:
        after_restart = stub2.GetApp(apps_pb2.GetAppRequest(name="apps/sticky")).app
        assert pairs(after_restart) == before
        # The running container is adopted, not recreated.
        assert the_container(server.docker_host, server.instance, "sticky") == container_before

        stub2.StopApp(apps_pb2.StopAppRequest(name="apps/sticky"))
        stopped = stub2.GetApp(apps_pb2.GetAppRequest(name="apps/sticky")).app
        assert stopped.desired_state == apps_pb2.DESIRED_STATE_STOPPED
        assert pairs(stopped) == before
        started = stub2.StartApp(apps_pb2.StartAppRequest(name="apps/sticky")).app
        assert pairs(started) == before
    container = the_container(server.docker_host, server.instance, "sticky")
    assert container.published == container_before.published
    assert container.env == container_before.env
    assert http_get(8081).strip() == "miasma-test"
    assert http_get(8082).strip() == "miasma-test"


def test_apps_reach_each_other_by_name_and_edits_leave_one_container(
    stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess, test_image: str
) -> None:
    """Apps share the Miasma network with their name as DNS alias; a port change replaces
    the container rather than adding one."""
    [(_, api_target)] = pairs(create(stub, "api", test_image))
    create(stub, "frontend", test_image)
    frontend = the_container(server.docker_host, server.instance, "frontend")
    body = docker(
        server.docker_host, "exec", frontend.name, "wget", "-qO-", f"http://api:{api_target}/"
    )
    assert body.strip() == "miasma-test"

    edit(stub, "api", add_published_ports=[8090])
    assert len(containers(server.docker_host, server.instance, "api")) == 1
    assert the_container(server.docker_host, server.instance, "api").published == {
        f"{api_target}/tcp": 8090
    }


def test_udp_and_tcp_are_separate_port_spaces(
    stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess, test_image: str
) -> None:
    """5353/udp and 5353/tcp can belong to different apps; Docker publishes each protocol."""
    create(stub, "dns", test_image)
    reply = stub.EditPorts(
        apps_pb2.EditPortsRequest(
            name="apps/dns",
            add_published_ports=[apps_pb2.Port(number=5353, protocol=apps_pb2.PROTOCOL_UDP)],
        )
    )
    [binding] = reply.app.bindings
    assert binding.protocol == apps_pb2.PROTOCOL_UDP
    assert binding.published_port == 5353
    assert the_container(server.docker_host, server.instance, "dns").published == {
        f"{binding.target_port}/udp": 5353
    }
    create(stub, "web", test_image)
    web = edit(stub, "web", add_published_ports=[5353])
    assert pairs(web)[0][0] == 5353
    assert http_get(5353).strip() == "miasma-test"


def test_restart_keeps_ports_and_serves_again(
    stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess, test_image: str
) -> None:
    """RestartApp restarts the container in place; the ports do not move."""
    before = create(stub, "bouncy", test_image)
    after = stub.RestartApp(apps_pb2.RestartAppRequest(name="apps/bouncy")).app
    assert pairs(after) == pairs(before)
    assert http_get(before.bindings[0].published_port).strip() == "miasma-test"


def engine_time(server: ServerProcess) -> str:
    """The engine's clock (events are filtered by it, not by ours)."""
    return docker(server.docker_host, "info", "--format", "{{json .SystemTime}}").strip('"\n')


def container_events(server: ServerProcess, since: str) -> list[tuple[str, str]]:
    """(action, container name) of the instance's start/die events since ``since``."""
    until = engine_time(server)
    out = docker(
        server.docker_host, "events", "--since", since, "--until", until,
        "--filter", f"label=io.miasma.instance={server.instance}",
        "--filter", "type=container", "--filter", "event=start", "--filter", "event=die",
        "--format", "{{.Action}} {{.Actor.Attributes.name}}",
    )  # fmt: skip
    return [tuple(line.split(" ", 1)) for line in out.splitlines()]  # type: ignore[misc]


def test_port_change_starts_new_container_first_unless_published_ports_overlap(
    stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess, test_image: str
) -> None:
    """Moving to a new published port starts the new container before the old one stops;
    keeping the published port (target change) stops the old one first."""
    create(stub, "rolling", test_image)
    old = the_container(server.docker_host, server.instance, "rolling").name
    since = engine_time(server)
    edit(stub, "rolling", add_published_ports=[8096])
    new = the_container(server.docker_host, server.instance, "rolling").name
    events = container_events(server, since)
    assert events.index(("start", new)) < events.index(("die", old))

    since = engine_time(server)
    edit(stub, "rolling", add_target_ports=[80])
    newest = the_container(server.docker_host, server.instance, "rolling").name
    events = container_events(server, since)
    assert events.index(("die", new)) < events.index(("start", newest))
    assert http_get(8096).strip() == "miasma-test"

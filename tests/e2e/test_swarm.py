"""The swarm runtime on a real single-node swarm (plus a worker node in a network namespace).

Published ports are checked in ``docker service inspect``; host-mode ports
also with HTTP. The ingress routing mesh needs iptables and kernel IPVS,
which the private test engine does not use, so ingress ports are checked
in the service spec only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from miasma.v1 import apps_pb2
from miasma_client import MiasmaClient, MiasmaError

from scripts import swarm
from tests.conftest import DATA_COMMAND, DATA_SCRIPT, HTTPD_COMMAND
from tests.docker_cli import (
    Service,
    build,
    copy_image,
    docker,
    http_get,
    services,
    the_service,
    volume_names,
)
from tests.e2e.test_cli import Cli
from tests.polling import eventually, wait_for
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

PUBLISHED = range(19001, 20000)
TARGETS = range(3000, 4000)


@pytest.fixture
def server(make_server: Callable[..., ServerProcess], swarm_host: str) -> ServerProcess:
    """A swarm-runtime server reconciling every second, auto ports from 19001-19999."""
    return make_server(
        docker_host=swarm_host,
        runtime="swarm",
        published_range="19001-19999",
        extra_args=["--reconcile-interval", "1"],
    )


@pytest.fixture
def client(server: ServerProcess) -> Iterator[MiasmaClient]:
    """A blocking client on the server."""
    with MiasmaClient(server.address) as miasma:
        yield miasma


def service(server: ServerProcess, app: str) -> Service:
    """The app's service as Docker describes it."""
    return the_service(server.docker_host, server.instance, app)


def pairs(found: Service) -> list[tuple[int, int]]:
    """(published, target) of each EndpointSpec port, in slot order."""
    return [(published, target) for published, target, _, _ in found.ports]


def test_server_info_reports_the_swarm(client: MiasmaClient, swarm_host: str) -> None:
    """auto picks swarm on a manager; GetServerInfo has the swarm ID and the join command."""
    info = client.server_info()
    swarm_id = json.loads(docker(swarm_host, "info", "--format", "{{json .Swarm.Cluster.ID}}"))
    assert (info.runtime_mode, info.swarm_id) == ("swarm", swarm_id)
    assert info.join_command.startswith("docker swarm join --token SWMTKN-")


def test_new_app_is_a_service_with_port_env_and_an_ingress_port(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """One replica, PORT=PORT_1=target, one ingress EndpointSpec port in the managed range."""
    app = client.create_app("web", test_image, command=HTTPD_COMMAND)
    assert (app.observed.running, app.observed.total) == (1, 1)
    found = service(server, "web")
    [(published, target, protocol, mode)] = found.ports
    assert (protocol, mode) == ("tcp", "ingress")
    assert published in PUBLISHED
    assert target in TARGETS
    assert found.env["PORT"] == found.env["PORT_1"] == str(target)
    assert found.replicas == 1


def test_seed_examples_as_service_updates(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """5432 added/removed, target 80, 8081+8082, and the order-matters pairing, in the spec."""
    client.create_app("postgres", test_image, command=HTTPD_COMMAND)
    [(_, target)] = pairs(service(server, "postgres"))
    client.edit_ports("postgres", add_published=[5432])
    assert pairs(service(server, "postgres")) == [(5432, target)]
    client.edit_ports("postgres", remove_published=[5432])
    [(again, same)] = pairs(service(server, "postgres"))
    assert (again in PUBLISHED, same) == (True, target)
    client.edit_ports("postgres", add_target=[80])
    assert pairs(service(server, "postgres")) == [(again, 80)]
    assert service(server, "postgres").env["PORT"] == "80"

    client.create_app("example", test_image, command=HTTPD_COMMAND)
    client.edit_ports("example", add_published=[8082, 8081])
    client.edit_ports("example", add_target=[8081, 8082])
    found = service(server, "example")
    assert pairs(found) == [(8082, 8081), (8081, 8082)]
    assert (found.env["PORT_1"], found.env["PORT_2"]) == ("8081", "8082")


def test_editing_one_slot_leaves_the_others_published_ports(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """Adding a third slot and moving the first keeps slot 2's published port."""
    client.create_app("multi", test_image, command=HTTPD_COMMAND, published_ports=["8083,8084"])
    before = pairs(service(server, "multi"))
    client.edit_ports("multi", add_published=[8085])
    client.edit_ports("multi", remove_published=[8083], add_published=[8086])
    after = pairs(service(server, "multi"))
    assert after[1] == before[1]
    assert [p for p, _ in after] == [8086, 8084, 8085]


def test_two_apps_cannot_share_a_published_port_and_foreign_services_count(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """A port held by another app is ALREADY_EXISTS; one held by a foreign service is refused."""
    client.create_app("one", test_image, published_ports=[8087], stopped=True)
    client.create_app("two", test_image, stopped=True)
    with pytest.raises(MiasmaError) as held:
        client.edit_ports("two", add_published=[8087])
    assert held.value.code is grpc.StatusCode.ALREADY_EXISTS
    assert held.value.resource == "apps/one"
    foreign = f"foreign-{server.instance}"
    docker(server.docker_host, "service", "create", "--detach", "--name", foreign,
           "--publish", "published=8088,target=8080", "--replicas", "0", test_image)  # fmt: skip
    try:
        with pytest.raises(MiasmaError) as busy:
            client.edit_ports("two", add_published=[8088])
        assert busy.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert busy.value.reason == "PORT_BUSY_ON_HOST"
    finally:
        docker(server.docker_host, "service", "rm", foreign)
    assert [p for p, _ in pairs(service(server, "two"))] != [8087]


def test_host_mode_port_answers_http(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """`8090/host` publishes in host mode: the spec says so and the node answers on it."""
    client.create_app("web", test_image, command=HTTPD_COMMAND)
    reply = client.edit_ports("web", add_published=["8090/host"])
    assert reply.app.bindings[0].publish_mode == 2  # PUBLISH_MODE_HOST
    [(published, _, _, mode)] = service(server, "web").ports
    assert (published, mode) == (8090, "host")
    assert http_get(8090).strip() == "miasma-test"


def test_image_volume_keeps_its_data_through_every_change(
    client: MiasmaClient, server: ServerProcess, volume_image: str
) -> None:
    """As in container mode: port edits, env, command and image changes, restart, stop and
    start, a service removed by hand and a server restart keep the token in /data. The
    service rolls out stop-first, and its stops give the app its grace period."""
    client.create_app("db", volume_image, command=DATA_COMMAND, published_ports=["8095/host"],
                      stop_grace=4)  # fmt: skip
    token = http_get(8095)
    docker(server.docker_host, "tag", volume_image, "miasma-test/busybox-volume:swarm")
    steps: list[Callable[[], apps_pb2.App]] = [
        lambda: client.edit_app("db", add_published=["8096/host"]).app,
        lambda: client.edit_app("db", remove_published=[8095]).app,
        lambda: client.edit_app("db", add_target=[8080]).app,
        lambda: client.update_app("db", env={"GREETING": "hi"}),
        lambda: client.update_app("db", command=["sh", "-c", f"true; {DATA_SCRIPT}"]),
        lambda: client.update_app("db", image="miasma-test/busybox-volume:swarm"),
        lambda: client.restart_app("db"),
    ]
    for step in steps:
        app = step()
        assert http_get(app.bindings[0].published_port) == token
    client.stop_app("db")
    port = client.start_app("db").bindings[0].published_port
    assert http_get(port) == token
    raw = json.loads(docker(server.docker_host, "service", "inspect", f"{server.instance}-db"))[0]
    assert raw["Spec"]["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] == 4_000_000_000
    assert raw["Spec"]["UpdateConfig"]["Order"] == "stop-first"
    docker(server.docker_host, "service", "rm", f"{server.instance}-db")
    wait_for(lambda: client.get_app("db").observed.running == 1, "the service to come back", 60)
    assert http_get(port) == token
    server.restart()
    assert http_get(client.get_app("db").bindings[0].published_port) == token
    # SIGKILL while the service update rolls out: the next server finishes it.
    killer = threading.Timer(0.5, server.stop, args=(signal.SIGKILL,))
    killer.start()
    with contextlib.suppress(MiasmaError):
        client.edit_app("db", add_published=["8097/host"])
    killer.join()
    server.start()

    def runs_again() -> None:  # the client's channel may still be backing off: retry
        assert client.get_app("db").observed.running == 1

    eventually(runs_again, "the app to run again", 60, retry_on=(AssertionError, MiasmaError))
    assert http_get(client.get_app("db").bindings[0].published_port) == token
    assert volume_names(server.docker_host, server.instance) == [
        f"{server.instance}-db-{app.uid}-data"
    ]


def test_host_mode_app_that_stops_slowly_moves_and_its_deleted_port_is_free_at_once(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """Its old task holds the host port for its whole grace period (PID 1 ignores SIGTERM):
    the edit waits for it, not a fixed 5 s; after a delete the port is free for a new app."""
    stubborn = ["sh", "-c", "while :; do sleep 1; done"]  # no trap: SIGTERM does nothing
    client.create_app("hp", test_image, command=stubborn, published_ports=["8099/host"],
                      stop_grace=6)  # fmt: skip
    edited = client.edit_app("hp", add_published=[8100]).app  # a new task, stop-first
    assert edited.observed.running == 1
    assert [b.published_port for b in edited.bindings] == [8099, 8100]
    restarted = client.restart_app("hp")
    assert restarted.observed.running == 1
    client.delete_app("hp")
    again = client.create_app("hp2", test_image, command=HTTPD_COMMAND,
                              published_ports=["8099/host"])  # fmt: skip
    assert again.observed.running == 1
    assert http_get(8099).strip() == "miasma-test"


def test_a_service_scaled_down_by_hand_is_repaired_at_once(
    make_server: Callable[..., ServerProcess], swarm_host: str, test_image: str
) -> None:
    """Task changes are read every half second: a service scaled to 0 by hand, then one
    removed by hand, runs again long before the periodic pass (5 minutes away here)."""
    server = make_server(docker_host=swarm_host, runtime="swarm", published_range="19001-19999",
                         extra_args=["--reconcile-interval", "300"])  # fmt: skip
    with MiasmaClient(server.address, timeout=60) as client:
        client.create_app("web", test_image, command=HTTPD_COMMAND, published_ports=["8101/host"])
        name = f"{server.instance}-web"
        before = int(docker(swarm_host, "service", "inspect", "--format", "{{.Version.Index}}",
                            name))  # fmt: skip
        docker(swarm_host, "service", "scale", "--detach", f"{name}=0")
        started = time.monotonic()

        def repaired() -> bool:
            # The hand edit landed (a version), then Miasma's repair (another): the moment
            # with 0 replicas may be too short to be seen.
            version = docker(swarm_host, "service", "inspect", "--format",
                             "{{.Version.Index}}", name)  # fmt: skip
            app = client.get_app("web")
            return (
                int(version) >= before + 2
                and service(server, "web").replicas == 1
                and app.observed.running == 1
            )

        wait_for(repaired, "the service to run again", 30)
        print(f"repaired {time.monotonic() - started:.2f} s after docker service scale")
        assert http_get(8101).strip() == "miasma-test"
        docker(swarm_host, "service", "rm", f"{server.instance}-web")
        started = time.monotonic()

        def replaced() -> bool:
            return bool(services(server.docker_host, server.instance, "web")) and repaired()

        wait_for(replaced, "a new service to run", 30)
        print(f"repaired {time.monotonic() - started:.2f} s after docker service rm")
    assert http_get(8101).strip() == "miasma-test"


def test_stop_scales_to_zero_and_keeps_the_ports(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """A stopped app is a service with 0 replicas that still reserves its ports."""
    client.create_app("web", test_image, command=HTTPD_COMMAND)
    ports = pairs(service(server, "web"))
    stopped = client.stop_app("web")
    assert (stopped.observed.running, stopped.observed.total) == (0, 0)
    assert (service(server, "web").replicas, pairs(service(server, "web"))) == (0, ports)
    client.start_app("web")
    assert service(server, "web").replicas == 1


def test_missing_image_fails_with_the_task_error_and_leaves_nothing(
    client: MiasmaClient, server: ServerProcess
) -> None:
    """The rejected task's error comes back as IMAGE_PULL_FAILED; no service stays."""
    with pytest.raises(MiasmaError) as failed:
        client.create_app("ghost", "miasma-test/missing:never")
    assert failed.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert failed.value.reason == "IMAGE_PULL_FAILED"
    assert "miasma-test/missing:never" in failed.value.message
    assert services(server.docker_host, server.instance, "ghost") == []
    stream = client.watch_port_events("ghost", since=1)
    event = next(m.event for m in stream if m.event.kind == apps_pb2.PORT_EVENT_KIND_ROLLOUT_FAILED)
    stream.close()
    assert "No such image" in event.message  # the rejected task's own error


def test_constraints_on_create_and_update(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """Placement constraints reach the service spec and can be changed."""
    client.create_app("web", test_image, constraints=["node.role == manager"], stopped=True)
    assert service(server, "web").constraints == ["node.role==manager"]
    client.update_app("web", constraints=["node.labels.zone!=b"])
    assert service(server, "web").constraints == ["node.labels.zone!=b"]
    with pytest.raises(MiasmaError) as bad:
        client.update_app("web", constraints=["zone is a"])
    assert bad.value.violations[0].field == "app.constraints[0]"


def test_services_removed_or_edited_by_hand_come_back(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """The reconciler recreates a removed service and undoes a hand edit, same ports."""
    client.create_app("web", test_image, command=HTTPD_COMMAND, published_ports=[8091])
    ports = pairs(service(server, "web"))
    docker(server.docker_host, "service", "update", "--detach", "--publish-rm", "8091",
           f"{server.instance}-web")  # fmt: skip
    wait_for(lambda: pairs(service(server, "web")) == ports, "the hand edit to be undone", 60)
    docker(server.docker_host, "service", "rm", f"{server.instance}-web")
    wait_for(
        lambda: [pairs(s) for s in services(server.docker_host, server.instance, "web")] == [ports],
        "the removed service to come back",
        60,
    )


def test_orphan_service_is_removed(server: ServerProcess, test_image: str) -> None:
    """A service labelled as this Miasma's whose app does not exist is removed."""
    labels = ["--label", f"io.miasma.instance={server.instance}", "--label", "io.miasma.app=orphan"]
    docker(server.docker_host, "service", "create", "--detach", "--replicas", "0",
           "--name", f"{server.instance}-orphan", *labels, test_image)  # fmt: skip
    wait_for(
        lambda: services(server.docker_host, server.instance, "orphan") == [],
        "the orphan service to be removed",
        60,
    )


@pytest.fixture(scope="module")
def worker(swarm_host: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[swarm.Worker]:
    """A second engine in a network namespace, joined to the swarm as a worker."""
    workdir = Path(tmp_path_factory.mktemp("worker"))
    try:
        joined = swarm.start_worker(workdir, swarm_host)
    except swarm.WorkerUnsupported as exc:
        pytest.skip(f"this kernel cannot run a worker node: {exc.reason}")
    yield joined
    swarm.stop_worker(workdir)


def test_app_constrained_to_the_worker_answers_there(
    client: MiasmaClient, server: ServerProcess, test_image: str, worker: swarm.Worker
) -> None:
    """node.labels.miasma-test==worker places the task on the worker; its host port answers."""
    client.create_app(
        "remote", test_image, command=HTTPD_COMMAND, published_ports=["8092/host"],
        constraints=["node.labels.miasma-test==worker"],
    )  # fmt: skip
    tasks = docker(server.docker_host, "service", "ps", "--format", "{{.Node}} {{.CurrentState}}",
                   f"{server.instance}-remote")  # fmt: skip
    node = json.loads(docker(worker.host, "info", "--format", "{{json .Name}}"))
    assert any(line.startswith(node) and "Running" in line for line in tasks.splitlines())
    assert http_get(8092, address=worker.address).strip() == "miasma-test"


def test_data_on_the_worker_stays_there_through_a_port_edit(
    client: MiasmaClient, server: ServerProcess, volume_image: str, worker: swarm.Worker
) -> None:
    """An app with data is pinned to the node it runs on (here the worker, where its user
    first placed it); a port edit keeps its task and its image volume there, data included,
    and so does a rename (a new service, on the same node and volume)."""
    copy_image(server.docker_host, worker.host, volume_image)
    app = client.create_app(
        "db", volume_image, command=DATA_COMMAND, published_ports=["8093/host"],
        constraints=["node.labels.miasma-test==worker"],
    )  # fmt: skip
    assert app.node == ""  # the user placed it
    token = http_get(8093, address=worker.address)
    raw = json.loads(docker(server.docker_host, "service", "inspect", f"{server.instance}-db"))[0]
    container = raw["Spec"]["TaskTemplate"]["ContainerSpec"]
    volume = f"{server.instance}-db-{app.uid}-data"
    assert [(m["Type"], m["Source"], m["Target"]) for m in container["Mounts"]] == [
        ("volume", volume, "/data")
    ]
    assert container["StopGracePeriod"] == 10_000_000_000
    assert raw["Spec"]["UpdateConfig"]["Order"] == "stop-first"  # a writable volume

    def running_tasks() -> list[str]:
        listed = docker(server.docker_host, "service", "ps", "-q", "--filter",
                        "desired-state=running", f"{server.instance}-db")  # fmt: skip
        return listed.split()

    before = running_tasks()
    pinned = client.update_app("db", constraints=[])  # from now on Miasma keeps it there
    assert pinned.node == worker.node_id
    assert service(server, "db").constraints == [f"node.id=={worker.node_id}"]
    assert running_tasks() == before  # only the placement changed: the task stayed

    edited = client.edit_app("db", add_published=["8094/host"]).app
    assert edited.node == worker.node_id
    assert http_get(8094, address=worker.address) == token
    assert volume in docker(worker.host, "volume", "ls", "-q").split()

    renamed = client.rename_app("db", "postgres")
    assert renamed.node == worker.node_id
    assert http_get(8094, address=worker.address) == token
    assert service(server, "postgres").constraints == [f"node.id=={worker.node_id}"]
    assert not services(server.docker_host, server.instance, "db")


def test_logs_of_a_service_name_its_task_and_a_follow_spans_a_rollout(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """A service's output, stdout and stderr apart, each line from its task; a follow goes
    on to the task of a rollout and says so."""
    talker = ["sh", "-c", "trap 'exit 0' TERM; while :; do echo \"out $GEN\"; "
              "echo \"err $GEN\" >&2; sleep 0.2 & wait $!; done"]  # fmt: skip
    client.create_app("talker", test_image, command=talker, env={"GEN": "1"})
    got: list[apps_pb2.ReadLogsResponse] = []
    stop = threading.Event()

    def follow() -> None:
        with MiasmaClient(server.address, timeout=60) as reader:
            stream = reader.read_logs("talker", follow=True)
            for response in stream:
                got.append(response)
                if stop.is_set():
                    stream.close()
                    return

    def lines() -> list[apps_pb2.LogLine]:
        return [r.line for r in got if r.HasField("line")]

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        wait_for(lambda: {"out 1", "err 1"} <= {line.text for line in lines()}, "gen 1 lines")
        streams = {line.text: line.stream for line in lines()}
        assert streams["out 1"] == apps_pb2.LOG_STREAM_STDOUT
        assert streams["err 1"] == apps_pb2.LOG_STREAM_STDERR
        tasks = json.loads(docker(server.docker_host, "service", "ps", "-q", "--no-trunc",
                                  "--format", "json", f"{server.instance}-talker"))  # fmt: skip
        assert {line.source for line in lines()} == {tasks["ID"][:12]}
        client.update_app("talker", env={"GEN": "2"})
        wait_for(lambda: "out 2" in {line.text for line in lines()}, "the new task's lines", 60)
        notices = [r.notice for r in got if r.HasField("notice")]
        new_task = {line.source for line in lines() if line.text == "out 2"}
        assert [n.source for n in notices] == list(new_task)  # (the old task may still talk)
        assert new_task != {tasks["ID"][:12]}
    finally:
        stop.set()
        follower.join(timeout=30)


def test_upgrade_pins_the_service_to_the_new_digest(
    client: MiasmaClient, server: ServerProcess, registry: str, test_image: str
) -> None:
    """A new image pushed under the app's tag: the service is updated to it, by its digest in
    the registry (which every node can pull), and serves it; the same image changes nothing."""
    host = server.docker_host
    reference = f"{registry}/swarm-upgrade/web:1"
    build(host, reference, f"FROM {test_image}\nRUN echo v1 > /www/index.html\n")
    first = docker(host, "image", "inspect", "-f", "{{.Id}}", reference).strip()
    docker(host, "push", reference)
    # On the manager: the registry listens on its loopback, which a worker cannot reach.
    client.create_app(
        "web", reference, published_ports=["8095/host"], constraints=["node.role==manager"]
    )
    wait_for(lambda: http_get(8095).strip() == "v1", "v1 to answer", 60)
    assert not client.upgrade_app("web").changed

    build(host, reference, f"FROM {test_image}\nRUN echo v2 > /www/index.html\n")
    docker(host, "push", reference)
    docker(host, "tag", first, reference)
    reply = client.upgrade_app("web")
    assert reply.changed
    assert reply.app.image_digest.startswith(f"{registry}/swarm-upgrade/web@sha256:")
    spec = json.loads(docker(host, "service", "inspect", f"{server.instance}-web"))[0]["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == reply.app.image_digest
    wait_for(lambda: http_get(8095).strip() == "v2", "v2 to answer", 60)
    assert not client.upgrade_app("web").changed


def test_miasmas_postgres_template_runs_as_written(
    make_server: Callable[..., ServerProcess], swarm_host: str, docker_host: str,
    postgres_image: str, tmp_path: Path, worker: swarm.Worker,
) -> None:  # fmt: skip
    """The Postgres page of Miasma's docs, its commands as written but the image (and the host
    folder, which must belong to the image's postgres user): `env:edit -a postgres`, then
    `apps:configure` without -a works on postgres (the sticky app); the service is placed,
    mounted and published as asked, and Postgres initialises its data in the host folder."""
    server = make_server(docker_host=swarm_host, runtime="swarm", published_range="19001-19999",
                         extra_args=["--allow-bind-mounts"])  # fmt: skip
    # Before its constraint, the app may be placed on any node: each has the image.
    for host in (swarm_host, worker.host):
        copy_image(docker_host, host, postgres_image)
    node = docker(swarm_host, "info", "-f", "{{.Swarm.NodeID}}").strip()
    docker(swarm_host, "node", "update", "--label-add", "database=true", node)
    data = tmp_path / "physical" / "pgdata"
    data.mkdir(parents=True)
    os.chown(data, 999, 999)  # the image's postgres user (scripts/postgres-image.sh)
    editor = tmp_path / "editor.py"
    editor.write_text(f"#!{sys.executable}\nimport sys\n"
                      "open(sys.argv[1], 'a').write('POSTGRES_PASSWORD=s3cret\\n')\n")  # fmt: skip
    editor.chmod(0o755)
    cli = Cli(server, tmp_path / "config", postgres_image)
    try:
        cli.run(f"miasma apps:create postgres -i {postgres_image}")
        cli.run("miasma env:edit -a postgres", env={"EDITOR": str(editor)})
        cli.run(["miasma", "apps:configure",
                 "--add-placement-constraint", "node.labels.database == true",
                 "--add-volume", f"{data}:/var/lib/postgresql/data",
                 "--add-target-ports", "5432", "--add-published-ports", "5432"])  # fmt: skip
        found = service(server, "postgres")
        assert found.constraints == ["node.labels.database==true"]
        assert pairs(found) == [(5432, 5432)]
        assert found.env["POSTGRES_PASSWORD"] == "s3cret"
        wait_for(lambda: (data / "PG_VERSION").exists(), "Postgres to initialise the host folder",
                 60)  # fmt: skip
        wait_for(lambda: "ready to accept connections" in cli.run("apps:logs -n 0").stderr,
                 "Postgres to be ready", 60)  # fmt: skip
    finally:
        docker(swarm_host, "node", "update", "--label-rm", "database", node, check=False)

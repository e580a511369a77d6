"""Data that survives every change Miasma makes: the container runtime on the real engine.

The app writes a random token into /data the first time it starts (the image declares
``VOLUME /data``, as postgres declares its data directory) and serves it over HTTP; after
every change the same token must come back. What Docker did is read with the ``docker``
CLI (mounts, volumes, the order of container starts and deaths), never only through Miasma.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from miasma.v1 import apps_pb2
from miasma_client import MiasmaClient, MiasmaError

from tests.conftest import DATA_COMMAND, DATA_SCRIPT, HTTPD_COMMAND
from tests.docker_cli import containers, docker, http_get, the_container, volume_names
from tests.e2e.test_cli import Cli
from tests.polling import eventually, wait_for
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

RANGE = "24001-24999"


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A container-runtime server reconciling every second."""
    return make_server(published_range=RANGE, extra_args=["--reconcile-interval", "1"])


@pytest.fixture
def client(server: ServerProcess) -> Iterator[MiasmaClient]:
    """A blocking client on the server."""
    with MiasmaClient(server.address, timeout=60) as miasma:
        yield miasma


def port_of(app: apps_pb2.App) -> int:
    """The app's first published port."""
    return app.bindings[0].published_port


def container_events(server: ServerProcess, app: str, since: float) -> list[tuple[str, str]]:
    """(action, container id) of the app's container starts and deaths since ``since``,
    in the order the engine saw them."""
    lines = docker(
        server.docker_host, "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
        "--filter", "type=container", "--filter", f"label=io.miasma.instance={server.instance}",
        "--filter", f"label=io.miasma.app={app}", "--format", "{{json .}}",
    ).splitlines()  # fmt: skip
    events = [json.loads(line) for line in lines if line.strip()]
    return [(e["Action"], e["id"]) for e in events if e["Action"] in ("start", "die")]


def test_image_volume_keeps_its_data_through_every_change(
    client: MiasmaClient, server: ServerProcess, volume_image: str
) -> None:
    """The seed page's port commands, image, env and command changes, restart, stop/start, a
    container removed by hand, a server restart and SIGKILL mid-rollout: the token stays."""
    app = client.create_app("db", volume_image, command=DATA_COMMAND, published_ports=[24100])
    token = http_get(24100)
    assert len(token.strip()) == 36
    volume = f"{server.instance}-db-{app.uid}-data"
    assert the_container(server.docker_host, server.instance, "db").mounts == [
        ("volume", volume, "/data", True)
    ]

    def same_data(port: int) -> None:
        assert http_get(port) == token

    steps: list[tuple[str, Callable[[], apps_pb2.App]]] = [
        ("add published", lambda: client.edit_app("db", add_published=[24101]).app),
        ("rm published", lambda: client.edit_app("db", remove_published=[24100]).app),
        ("add target", lambda: client.edit_app("db", add_target=[8080]).app),
        ("two published", lambda: client.edit_app("db", add_published=["24102,24103"]).app),
        ("rm target", lambda: client.edit_app("db", remove_target=[8080]).app),
        ("env", lambda: client.update_app("db", env={"GREETING": "hi"})),
        ("command", lambda: client.update_app("db", command=["sh", "-c", f"true; {DATA_SCRIPT}"])),
        ("restart", lambda: client.restart_app("db")),
    ]
    docker(server.docker_host, "tag", volume_image, "miasma-test/busybox-volume:again")
    steps.append(
        ("image", lambda: client.update_app("db", image="miasma-test/busybox-volume:again"))
    )
    for what, step in steps:
        same_data(port_of(step()))
        assert volume_names(server.docker_host, server.instance) == [volume], what

    client.stop_app("db")
    same_data(port_of(client.start_app("db")))

    # Removed by hand: the reconciler (every second) brings it back on the same volume.
    gone = the_container(server.docker_host, server.instance, "db")
    docker(server.docker_host, "rm", "-f", gone.name)
    wait_for(lambda: any(c.running for c in containers(server.docker_host, server.instance, "db")),
             "the reconciler to recreate the container")  # fmt: skip
    same_data(port_of(client.get_app("db")))

    server.restart()
    same_data(port_of(client.get_app("db")))

    # SIGKILL once the old container has stopped, while the new one is made: the next
    # server finishes the rollout on the same volume.
    old = the_container(server.docker_host, server.instance, "db").name

    def kill_when_old_stops() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            running = docker(server.docker_host, "inspect", "-f", "{{.State.Running}}", old,
                             check=False)  # fmt: skip
            if running.strip() != "true":
                break
        server.stop(signal.SIGKILL)

    killer = threading.Thread(target=kill_when_old_stops)
    killer.start()
    with contextlib.suppress(MiasmaError):  # the server died under the call (or just after)
        client.edit_app("db", add_published=[24104])
    killer.join()
    server.start()

    def runs_again() -> None:  # the client's channel may still be backing off: retry
        assert client.get_app("db").observed.running == 1

    eventually(runs_again, "the app to run again", retry_on=(AssertionError, MiasmaError))
    same_data(port_of(client.get_app("db")))
    assert volume_names(server.docker_host, server.instance) == [volume]
    [running] = [c for c in containers(server.docker_host, server.instance, "db") if c.running]
    assert running.mounts == [("volume", volume, "/data", True)]  # no anonymous volume


def test_writable_volume_rolls_out_stop_first_and_others_start_first(
    client: MiasmaClient, server: ServerProcess, volume_image: str, test_image: str
) -> None:
    """With data the old container dies before the new one starts; without, after."""
    client.create_app("db", volume_image, command=DATA_COMMAND)
    client.create_app("web", test_image, command=HTTPD_COMMAND)
    since = time.time()
    client.edit_app("db", add_published=[24110])
    client.edit_app("web", add_published=[24111])
    for app, order in (("db", ["die", "start"]), ("web", ["start", "die"])):
        events = container_events(server, app, since)
        assert [action for action, _ in events] == order, (app, events)
        assert events[0][1] != events[1][1]  # two containers: the old one and the new one


def test_read_only_volumes_start_first(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """An app whose only volume is read-only has no second writer to fear: start-first."""
    client.create_app(
        "ro", test_image, command=HTTPD_COMMAND, volumes=[f"{server.instance}-ro:/srv:ro"]
    )
    since = time.time()
    client.edit_app("ro", add_published=[24112])
    assert [action for action, _ in container_events(server, "ro", since)] == ["start", "die"]
    mounts = the_container(server.docker_host, server.instance, "ro").mounts
    assert mounts == [("volume", f"{server.instance}-ro", "/srv", False)]


def test_stop_grace_is_what_a_stop_waits(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """An app that needs ~3 s to shut down is killed with a 1 s grace and exits cleanly
    with 6 s (Docker's own default would be 10 s either way)."""
    slow = ["sh", "-c", "trap 'sleep 3; exit 0' TERM; while :; do sleep 1 & wait $!; done"]
    client.create_app("slow", test_image, command=slow, stop_grace=1)
    assert client.get_app("slow").stop_grace.seconds == 1
    client.stop_app("slow")
    [stopped] = containers(server.docker_host, server.instance, "slow")
    exit_code = docker(server.docker_host, "inspect", "-f", "{{.State.ExitCode}}", stopped.name)
    assert exit_code.strip() == "137"  # SIGKILL after the grace period
    client.update_app("slow", stop_grace=6)
    client.start_app("slow")
    client.stop_app("slow")
    [stopped] = containers(server.docker_host, server.instance, "slow")
    exit_code = docker(server.docker_host, "inspect", "-f", "{{.State.ExitCode}}", stopped.name)
    assert exit_code.strip() == "0"  # its own clean exit
    stop_timeout = docker(server.docker_host, "inspect", "-f", "{{.Config.StopTimeout}}",
                          stopped.name)  # fmt: skip
    assert stop_timeout.strip() == "6"  # `docker stop` by hand gets the same grace


def test_a_new_container_that_dies_brings_the_old_one_back(
    client: MiasmaClient, server: ServerProcess, volume_image: str
) -> None:
    """A change whose container exits is refused with its exit code and output; the old
    container serves the same data again."""
    client.create_app("db", volume_image, command=DATA_COMMAND, published_ports=[24120])
    token = http_get(24120)
    with pytest.raises(MiasmaError) as error:
        client.update_app("db", command=["sh", "-c", "echo boom >&2; exit 3"])
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.reason == "CONTAINER_EXITED"
    assert "exit code 3" in error.value.message
    assert "boom" in error.value.message
    assert list(client.get_app("db").command) == DATA_COMMAND
    assert http_get(24120) == token


def test_named_volume_outlives_its_app_and_is_reused_only_when_asked(
    client: MiasmaClient, server: ServerProcess, volume_image: str
) -> None:
    """Delete keeps volumes; a new app of the same name starts empty; mounting the old
    volume by name brings the data back; delete_volumes and DeleteVolume remove them."""
    first = client.create_app("db", volume_image, command=DATA_COMMAND, published_ports=[24130])
    token = http_get(24130)
    kept = f"{server.instance}-db-{first.uid}-data"
    reply = client.delete_app("db")
    assert list(reply.deleted_volumes) == []
    assert volume_names(server.docker_host, server.instance) == [kept]

    client.create_app("db", volume_image, command=DATA_COMMAND, published_ports=[24130])
    assert http_get(24130) != token  # a new app, new data
    listed = {v.name: list(v.mounted_by) for v in client.list_volumes()}
    assert listed[kept] == []  # left over, and shown as such

    client.create_app("restored", volume_image, command=DATA_COMMAND, published_ports=[24131],
                      volumes=[f"{kept}:/data"])  # fmt: skip
    assert http_get(24131) == token
    assert {v.name: list(v.mounted_by) for v in client.list_volumes()}[kept] == ["apps/restored"]
    with pytest.raises(MiasmaError) as error:
        client.delete_volume(kept)
    assert (error.value.code, error.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION, "VOLUME_IN_USE"
    )  # fmt: skip

    reply = client.delete_app("restored", delete_volumes=True)
    assert list(reply.deleted_volumes) == [kept]  # what it mounted, and Miasma made
    client.delete_app("db")
    [left] = volume_names(server.docker_host, server.instance)
    assert client.delete_volume(left).name == left
    assert volume_names(server.docker_host, server.instance) == []


def test_bad_volumes_are_refused_with_the_field_and_change_nothing(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """Relative, nested, protected targets, bad names, bind mounts (off by default) and a
    writable volume another app holds: the right code, the field, and no change."""
    data = f"{server.instance}-data"
    app = client.create_app("web", test_image, command=HTTPD_COMMAND, volumes=[f"{data}:/data"])
    cases = [
        (["x1:data"], grpc.StatusCode.INVALID_ARGUMENT, "add_volumes[0].target"),
        (["x1:/data/sub"], grpc.StatusCode.INVALID_ARGUMENT, "add_volumes"),
        (["x1:/proc/x"], grpc.StatusCode.INVALID_ARGUMENT, "add_volumes[0].target"),
        (["x1:/a/../b"], grpc.StatusCode.INVALID_ARGUMENT, "add_volumes[0].target"),
        (["bad name:/x"], grpc.StatusCode.INVALID_ARGUMENT, "add_volumes[0].source"),
        (["/etc:/hostetc"], grpc.StatusCode.FAILED_PRECONDITION, "add_volumes[0].source"),
    ]
    for volumes, code, field in cases:
        with pytest.raises(MiasmaError) as error:
            client.edit_app("web", add_volumes=volumes, add_published=[24140])
        assert error.value.code == code, volumes
        assert [v.field for v in error.value.violations] == [field], volumes
    with pytest.raises(MiasmaError) as error:
        client.create_app("other", test_image, volumes=[f"{data}:/x:ro"])
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "'web'" in error.value.message
    assert client.get_app("web") == client.get_app("web")  # readable
    after = client.get_app("web")
    assert (after.revision, list(after.bindings), list(after.volumes)) == (
        app.revision, list(app.bindings), list(app.volumes)
    )  # fmt: skip
    assert [a.name for a in client.list_apps()] == ["apps/web"]
    assert not client.server_info().bind_mounts_allowed


def test_a_volume_of_another_miasma_is_refused_and_a_hand_made_one_is_not(
    client: MiasmaClient, server: ServerProcess, test_image: str
) -> None:
    """A volume labelled by another instance is not this Miasma's to give out: the edit is
    refused and reverted; a volume made by hand (no label) can be mounted."""
    theirs, mine = f"{server.instance}-theirs", f"{server.instance}-byhand"
    docker(server.docker_host, "volume", "create", "--label", "io.miasma.instance=elsewhere",
           theirs)  # fmt: skip
    docker(server.docker_host, "volume", "create", mine)
    try:
        before = client.create_app("web", test_image, command=HTTPD_COMMAND)
        with pytest.raises(MiasmaError) as error:
            client.edit_app("web", add_volumes=[f"{theirs}:/data"])
        assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert error.value.reason == "VOLUME_OF_ANOTHER_INSTANCE"
        assert list(client.get_app("web").volumes) == list(before.volumes)
        client.edit_app("web", add_volumes=[f"{mine}:/data"])
        mounts = the_container(server.docker_host, server.instance, "web").mounts
        assert mounts == [("volume", mine, "/data", True)]
    finally:
        client.delete_app("web")
        docker(server.docker_host, "volume", "rm", theirs, mine, check=False)


def test_a_renamed_app_keeps_its_data_ports_and_volume(
    server: ServerProcess, volume_image: str, tmp_path: Path
) -> None:
    """`miasma apps:edit -a db --name postgres` (Miasma's rename), as a user runs it: the
    same token on the same published port, the same volume mounted (no new one), the old
    container gone, the sticky -a moved to the new name; delete --delete-volumes then
    deletes the volume made under the first name."""
    cli = Cli(server, tmp_path / "config", volume_image)
    cli.run(["apps:create", "db", "-i", volume_image, "-p", "24200", "--", *DATA_COMMAND])
    token = http_get(24200)
    volumes = volume_names(server.docker_host, server.instance)
    cli.run("apps:show -a db")  # remembered: the next commands go without -a
    renamed = cli.run("apps:edit -a db --name postgres")
    assert "Renamed db to postgres." in renamed.stderr
    assert http_get(24200) == token
    assert volume_names(server.docker_host, server.instance) == volumes
    assert containers(server.docker_host, server.instance, "db") == []
    [container] = containers(server.docker_host, server.instance, "postgres")
    assert [mount[1] for mount in container.mounts] == volumes
    shown = cli.json("apps:show")
    assert isinstance(shown, dict)
    assert shown["name"] == "apps/postgres"
    assert shown["bindings"][0]["published_port"] == 24200
    cli.run("apps:delete -a postgres --delete-volumes --yes")
    assert volume_names(server.docker_host, server.instance) == []

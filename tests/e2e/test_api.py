"""The API's contract through a real server: errors, concurrency, reflection, health."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from miasma.v1 import apps_pb2, apps_pb2_grpc

from tests.conftest import HTTPD_COMMAND
from tests.docker_cli import containers, http_get, the_container
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

STOPPED = apps_pb2.DESIRED_STATE_STOPPED


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose auto published ports come from 15001-15999."""
    return make_server(published_range="15001-15999")


def details(error: grpc.RpcError) -> dict[str, object]:
    """The google.rpc details of a failed call, by type name."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "error carries no google.rpc.Status"
    found: dict[str, object] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.DESCRIPTOR.name] = message
    return found


def fields(error: grpc.RpcError) -> list[str]:
    """Field names of the BadRequest violations."""
    bad = details(error).get("BadRequest")
    assert isinstance(bad, error_details_pb2.BadRequest)
    return [v.field for v in bad.field_violations]


def create_stopped(
    stub: apps_pb2_grpc.AppServiceStub, name: str, image: str = "img"
) -> apps_pb2.App:
    """Create an app without starting it (no container needed)."""
    return stub.CreateApp(
        apps_pb2.CreateAppRequest(app_id=name, app=apps_pb2.App(image=image, desired_state=STOPPED))
    ).app


def test_fifty_concurrent_creates_get_fifty_distinct_published_ports(
    stub: apps_pb2_grpc.AppServiceStub,
) -> None:
    """Concurrent CreateApp calls never share an auto published port."""
    with ThreadPoolExecutor(max_workers=50) as pool:
        apps = list(pool.map(lambda i: create_stopped(stub, f"app-{i}"), range(50)))
    ports = {a.bindings[0].published_port for a in apps}
    assert len(ports) == 50
    assert all(15001 <= p <= 15999 for p in ports)
    listed = stub.ListApps(apps_pb2.ListAppsRequest(page_size=1000)).apps
    assert {a.bindings[0].published_port for a in listed} == ports


def test_changes_to_a_stopped_app_are_reported_done_not_pending(
    stub: apps_pb2_grpc.AppServiceStub,
) -> None:
    """A stopped app has nothing to roll out: replies say so at once, like a later GetApp."""
    created = create_stopped(stub, "idle")
    edited = stub.EditPorts(
        apps_pb2.EditPortsRequest(
            name="apps/idle", add_published_ports=[apps_pb2.Port(number=15500)]
        )
    ).app
    again = stub.GetApp(apps_pb2.GetAppRequest(name="apps/idle")).app
    assert [app.observed.last_error for app in (created, edited, again)] == ["", "", ""]
    assert {app.observed.rollout for app in (created, edited, again)} == {
        apps_pb2.ROLLOUT_STATE_APPLIED
    }
    assert edited.bindings[0].published_port == 15500


def test_racing_requests_for_one_published_port_have_exactly_one_winner(
    stub: apps_pb2_grpc.AppServiceStub,
) -> None:
    """Of many apps asking for the same port at once, one wins; the rest learn who holds it."""
    names = [f"racer-{i}" for i in range(12)]
    for name in names:
        create_stopped(stub, name)

    def claim(name: str) -> str | grpc.RpcError:
        try:
            stub.EditPorts(
                apps_pb2.EditPortsRequest(
                    name=f"apps/{name}", add_published_ports=[apps_pb2.Port(number=9090)]
                )
            )
        except grpc.RpcError as exc:
            return exc
        return name

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = list(pool.map(claim, names))
    winners = [r for r in results if isinstance(r, str)]
    losers = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(winners) == 1
    [winner] = winners
    for error in losers:
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert winner in (error.details() or "")
        resource = details(error)["ResourceInfo"]
        assert isinstance(resource, error_details_pb2.ResourceInfo)
        assert resource.resource_name == f"apps/{winner}"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"add_published_ports": [apps_pb2.Port(number=0)]}, "add_published_ports[0]"),
        ({"add_published_ports": [apps_pb2.Port(number=70000)]}, "add_published_ports[0]"),
        ({"add_target_ports": [apps_pb2.Port(number=70000)]}, "add_target_ports[0]"),
        (
            {"add_published_ports": [apps_pb2.Port(number=8000), apps_pb2.Port(number=8000)]},
            "add_published_ports[1]",
        ),
        ({"remove_published_ports": [apps_pb2.Port(number=1234)]}, "remove_published_ports[0]"),
        (
            # An enum value this server does not know (proto3 enums are open).
            {"add_published_ports": [apps_pb2.Port(number=80, protocol=7)]},  # type: ignore[arg-type]
            "add_published_ports[0].protocol",
        ),
    ],
)
def test_malformed_edits_are_invalid_argument_naming_the_field_and_change_nothing(
    stub: apps_pb2_grpc.AppServiceStub, request_fields: dict[str, object], field: str
) -> None:
    """Bad ports get INVALID_ARGUMENT with the field; the app is untouched."""
    before = create_stopped(stub, "victim")
    with pytest.raises(grpc.RpcError) as caught:
        stub.EditPorts(apps_pb2.EditPortsRequest(name="apps/victim", **request_fields))  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in fields(caught.value)
    after = stub.GetApp(apps_pb2.GetAppRequest(name="apps/victim")).app
    assert after.bindings == before.bindings
    assert after.etag == before.etag


@pytest.mark.parametrize(
    ("name", "code", "field"),
    [
        ("apps/nobody", grpc.StatusCode.NOT_FOUND, None),
        ("apps/Bad_Name", grpc.StatusCode.INVALID_ARGUMENT, "name"),
        ("nobody", grpc.StatusCode.INVALID_ARGUMENT, "name"),
        ("", grpc.StatusCode.INVALID_ARGUMENT, "name"),
    ],
)
def test_unknown_or_malformed_app_names(
    stub: apps_pb2_grpc.AppServiceStub, name: str, code: grpc.StatusCode, field: str | None
) -> None:
    """Unknown apps are NOT_FOUND; malformed names are INVALID_ARGUMENT on `name`."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.EditPorts(apps_pb2.EditPortsRequest(name=name))
    assert caught.value.code() == code
    if field:
        assert fields(caught.value) == [field]
    assert stub.ListApps(apps_pb2.ListAppsRequest()).apps is not None  # still serving


def test_bad_create_requests(stub: apps_pb2_grpc.AppServiceStub) -> None:
    """Bad names, missing images and reserved env names are refused with their field."""
    cases = [
        (apps_pb2.CreateAppRequest(app_id="Bad", app=apps_pb2.App(image="x")), "app_id"),
        (apps_pb2.CreateAppRequest(app_id="ok", app=apps_pb2.App()), "app.image"),
        (
            apps_pb2.CreateAppRequest(app_id="ok", app=apps_pb2.App(image="x", env={"PORT": "1"})),
            "app.env[PORT]",
        ),
        (
            apps_pb2.CreateAppRequest(
                app_id="ok", app=apps_pb2.App(image="x"), published_ports=[apps_pb2.Port(number=0)]
            ),
            "published_ports[0]",
        ),
    ]
    for request, field in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateApp(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert fields(caught.value) == [field]
    assert list(stub.ListApps(apps_pb2.ListAppsRequest()).apps) == []


def test_port_held_by_a_foreign_process_is_failed_precondition(
    stub: apps_pb2_grpc.AppServiceStub,
) -> None:
    """A port some non-Miasma process listens on is refused before anything changes."""
    before = create_stopped(stub, "blocked")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        with pytest.raises(grpc.RpcError) as caught:
            stub.EditPorts(
                apps_pb2.EditPortsRequest(
                    name="apps/blocked", add_published_ports=[apps_pb2.Port(number=busy)]
                )
            )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = details(caught.value)["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "PORT_BUSY_ON_HOST"
    assert info.domain == "miasma"
    after = stub.GetApp(apps_pb2.GetAppRequest(name="apps/blocked")).app
    assert after.bindings == before.bindings


def test_server_port_is_reserved(stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess) -> None:
    """No app may publish the server's own port."""
    create_stopped(stub, "greedy")
    with pytest.raises(grpc.RpcError) as caught:
        stub.EditPorts(
            apps_pb2.EditPortsRequest(
                name="apps/greedy", add_published_ports=[apps_pb2.Port(number=server.port)]
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert fields(caught.value) == ["add_published_ports[0]"]


def test_etag_mismatch_is_aborted(stub: apps_pb2_grpc.AppServiceStub) -> None:
    """EditPorts with a stale etag is ABORTED and changes nothing."""
    app = create_stopped(stub, "cas")
    stub.EditPorts(
        apps_pb2.EditPortsRequest(name="apps/cas", add_target_ports=[apps_pb2.Port(number=80)])
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.EditPorts(
            apps_pb2.EditPortsRequest(
                name="apps/cas", add_target_ports=[apps_pb2.Port(number=81)], etag=app.etag
            )
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED


def test_validate_only_returns_the_plan_and_changes_nothing(
    stub: apps_pb2_grpc.AppServiceStub,
) -> None:
    """validate_only answers with the would-be bindings but stores nothing."""
    before = create_stopped(stub, "dry")
    reply = stub.EditPorts(
        apps_pb2.EditPortsRequest(
            name="apps/dry", add_published_ports=[apps_pb2.Port(number=8443)], validate_only=True
        )
    )
    assert reply.app.bindings[0].published_port == 8443
    assert len(reply.changes) == 1
    after = stub.GetApp(apps_pb2.GetAppRequest(name="apps/dry")).app
    assert after.bindings == before.bindings
    assert after.etag == before.etag


def test_list_apps_paginates_in_name_order(stub: apps_pb2_grpc.AppServiceStub) -> None:
    """ListApps pages through every app exactly once."""
    for i in range(7):
        create_stopped(stub, f"page-{i}")
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListApps(apps_pb2.ListAppsRequest(page_size=3, page_token=token))
        seen += [a.name for a in page.apps]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"apps/page-{i}" for i in range(7)]


def test_reflection_lists_the_services(server: ServerProcess) -> None:
    """Server reflection exposes AppService, health and reflection (what grpcurl uses)."""
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"miasma.v1.AppService", "grpc.health.v1.Health"} <= services
        found = database.FindFileContainingSymbol("miasma.v1.AppService")
        assert found.name == "miasma/v1/apps.proto"
        # grpc.reflection.v1, what grpcurl and newer tools ask first: the same messages.
        v1 = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        [reply] = list(v1(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        listed = {service.name for service in reply.list_services_response.service}
        assert {"miasma.v1.AppService", "grpc.health.v1.Health"} <= listed


def test_health_reports_docker_reachability(
    server: ServerProcess, make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """SERVING with a reachable engine; a server without Docker still starts, NOT_SERVING."""
    server.wait_health(serving=True)
    offline = ServerProcess(
        db_path=tmp_path / "offline.db",
        docker_host=f"unix://{tmp_path}/no-such.sock",
        instance="offline",
    )
    with offline, grpc.insecure_channel(offline.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = apps_pb2_grpc.AppServiceStub(channel)
        info = stub.GetServerInfo(apps_pb2.GetServerInfoRequest())
        assert not info.docker_reachable
        # Desired state is still accepted while Docker is away.
        app = stub.CreateApp(
            apps_pb2.CreateAppRequest(app_id="later", app=apps_pb2.App(image="img"))
        ).app
        assert app.observed.rollout == apps_pb2.ROLLOUT_STATE_PENDING
        assert "applied when Docker returns" in app.observed.last_error


def test_missing_image_is_a_clear_error_and_creates_nothing(
    stub: apps_pb2_grpc.AppServiceStub,
) -> None:
    """An image that is neither local nor pullable fails the create, naming the image."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateApp(
            apps_pb2.CreateAppRequest(
                app_id="ghost", app=apps_pb2.App(image="miasma-test/does-not-exist:1")
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "miasma-test/does-not-exist:1" in (caught.value.details() or "")
    info = details(caught.value)["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "IMAGE_PULL_FAILED"
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetApp(apps_pb2.GetAppRequest(name="apps/ghost"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_failed_rollout_keeps_the_app_on_its_previous_ports(
    stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess, test_image: str
) -> None:
    """If Docker refuses a change, the app keeps serving as before and the RPC fails."""
    app = stub.CreateApp(
        apps_pb2.CreateAppRequest(
            app_id="steady", app=apps_pb2.App(image=test_image, command=HTTPD_COMMAND)
        )
    ).app
    published = app.bindings[0].published_port
    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateApp(
            apps_pb2.UpdateAppRequest(
                app=apps_pb2.App(name="apps/steady", image="miasma-test/missing:1"),
                update_mask=field_mask_pb2.FieldMask(paths=["image"]),
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    after = stub.GetApp(apps_pb2.GetAppRequest(name="apps/steady")).app
    assert after.image == test_image
    assert after.bindings == app.bindings
    assert the_container(server.docker_host, server.instance, "steady").running
    assert http_get(published).strip() == "miasma-test"


def test_delete_removes_container_and_frees_the_port(
    stub: apps_pb2_grpc.AppServiceStub, server: ServerProcess, test_image: str
) -> None:
    """DeleteApp removes the container; its published port can be taken by another app."""
    stub.CreateApp(
        apps_pb2.CreateAppRequest(
            app_id="gone",
            app=apps_pb2.App(image=test_image, command=HTTPD_COMMAND),
            published_ports=[apps_pb2.Port(number=8765)],
        )
    )
    stub.DeleteApp(apps_pb2.DeleteAppRequest(name="apps/gone"))
    assert containers(server.docker_host, server.instance, "gone") == []
    taker = create_stopped(stub, "taker")
    reply = stub.EditPorts(
        apps_pb2.EditPortsRequest(name=taker.name, add_published_ports=[apps_pb2.Port(number=8765)])
    )
    assert reply.app.bindings[0].published_port == 8765


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_shut_the_server_down_gracefully(server: ServerProcess, sig: int) -> None:
    """SIGTERM and SIGINT stop the server with exit code 0 and a shutdown log line."""
    assert server.stop(sig) == 0
    assert "shutting down" in server.log()


def test_an_app_whose_process_exits_is_reported_not_running(
    stub: apps_pb2_grpc.AppServiceStub, test_image: str
) -> None:
    """Observed state comes from Docker: a crashed process shows 0/1 and Docker's status."""
    stub.CreateApp(
        apps_pb2.CreateAppRequest(
            app_id="crashy", app=apps_pb2.App(image=test_image, command=["sh", "-c", "exit 3"])
        )
    )
    deadline = time.monotonic() + 30
    while True:
        observed = stub.GetApp(apps_pb2.GetAppRequest(name="apps/crashy")).app.observed
        if "(3)" in observed.last_error or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (observed.running, observed.total) == (0, 1)
    # Docker keeps restarting it (restart policy), so it is "Restarting (3)" or "Exited (3)".
    assert "(3)" in observed.last_error

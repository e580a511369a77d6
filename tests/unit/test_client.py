"""The Python client's pure parts: port spelling, settings precedence, error decoding."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import grpc
import miasma_client
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from miasma.v1 import apps_pb2
from miasma_client import (
    AppStatus,
    MiasmaError,
    Settings,
    app_status,
    format_volume,
    parse_port,
    parse_ports,
    parse_volume,
    parse_volumes,
)
from miasma_client import _operations as ops
from miasma_client._errors import DETAILS_KEY, InvalidInput, from_rpc_error
from miasma_client._settings import resolve, save_file
from miasma_client._watch import WatchCursor
from miasma_client.cli import cli
from miasma_client.cli._render import event_line

TCP, UDP = apps_pb2.PROTOCOL_TCP, apps_pb2.PROTOCOL_UDP


def test_public_surface_is_pinned() -> None:
    """The names users import from ``miasma_client`` change only on purpose."""
    assert sorted(miasma_client.__all__) == sorted([
        "DEFAULT_SERVER", "DEFAULT_TIMEOUT", "AppStatus", "AsyncMiasmaClient", "FieldViolation",
        "InvalidInput",
        "MiasmaClient", "MiasmaError", "Operation", "PortLike", "Settings", "SettingsError",
        "VolumeLike", "app_status", "config_path", "format_port", "format_volume", "parse_port",
        "parse_ports", "parse_volume", "parse_volumes", "resource_name", "route",
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("spelling", "number", "protocol"),
    [("8080", 8080, TCP), ("8080/tcp", 8080, TCP), ("5353/udp", 5353, UDP), (" 53/UDP ", 53, UDP)],
)
def test_port_spellings(spelling: str, number: int, protocol: apps_pb2.Protocol.ValueType) -> None:
    """NUMBER, NUMBER/tcp and NUMBER/udp parse; TCP is the default."""
    assert parse_port(spelling) == apps_pb2.Port(number=number, protocol=protocol)


@pytest.mark.parametrize("spelling", ["abc", "80/sctp", "-1", "80/", "", ",", "1e3"])
def test_bad_port_spellings_name_the_accepted_forms(spelling: str) -> None:
    """Anything else is refused with the forms that would work."""
    with pytest.raises(ValueError, match="is not a port"):
        parse_ports([spelling])


@pytest.mark.parametrize(
    ("spelling", "source", "target", "read_only"),
    [
        ("pgdata:/var/lib/postgresql/data", "pgdata", "/var/lib/postgresql/data", False),
        ("assets:/srv:ro", "assets", "/srv", True),
        ("/host/path:/data:RW", "/host/path", "/data", False),
    ],
)
def test_volume_spellings(spelling: str, source: str, target: str, read_only: bool) -> None:
    """SOURCE:TARGET and SOURCE:TARGET:ro|rw parse, and format back the same way."""
    volume = parse_volume(spelling)
    assert (volume.source, volume.target, volume.read_only) == (source, target, read_only)
    assert parse_volume(format_volume(volume)) == volume


@pytest.mark.parametrize("spelling", ["pgdata", ":/data", "pgdata:", "a:b:c", "/data", "a:/b:xx"])
def test_bad_volume_spellings_name_the_accepted_forms(spelling: str) -> None:
    """Anything else is refused with the forms that would work."""
    with pytest.raises(ValueError, match="is not a volume"):
        parse_volumes([spelling])


def test_a_removal_may_name_the_target_alone() -> None:
    """`--rm-volume /data` unmounts whatever is at /data."""
    assert parse_volume("/data", target_only=True) == apps_pb2.Volume(target="/data")
    assert parse_volume("pgdata:/data", target_only=True).source == "pgdata"


def test_publish_mode_suffixes() -> None:
    """`/host` and `/ingress` set the publish mode, in either order with the protocol."""
    assert parse_port("8080/host").mode == apps_pb2.PUBLISH_MODE_HOST
    udp_host = parse_port("5353/host/udp")
    assert (udp_host.protocol, udp_host.mode) == (UDP, apps_pb2.PUBLISH_MODE_HOST)
    assert parse_port("80/ingress").mode == apps_pb2.PUBLISH_MODE_INGRESS
    with pytest.raises(ValueError, match="is not a port"):
        parse_port("80/host/ingress")


def test_comma_lists_keep_their_order() -> None:
    """``8082,8081`` is two ports in that order, as the pairing rule needs."""
    assert [p.number for p in parse_ports(["8082,8081", 9000])] == [8082, 8081, 9000]


def test_out_of_range_numbers_reach_the_server() -> None:
    """70000 is well formed; the server decides it is out of range (and names the field)."""
    assert parse_port("70000").number == 70000


def test_settings_precedence_flags_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config file is the base, MIASMA_* env overrides it, explicit values override both;
    a saved token goes only to the server it was saved for."""
    monkeypatch.setenv("MIASMA_CONFIG", str(tmp_path / "config.json"))
    for name in ("MIASMA_SERVER", "MIASMA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert resolve() == Settings()
    save_file(Settings(server="file:1", token="from-file"))
    assert resolve() == Settings(server="file:1", token="from-file")
    monkeypatch.setenv("MIASMA_SERVER", "env:2")
    assert resolve() == Settings(server="env:2")  # not file:1's token
    assert resolve(server="flag:3", token=None) == Settings(server="flag:3")
    assert resolve(server="file:1") == Settings(server="file:1", token="from-file")
    monkeypatch.setenv("MIASMA_TOKEN", "env-token")  # given for this shell: used as given
    assert resolve(server="flag:3") == Settings(server="flag:3", token="env-token")


def test_tokens_are_kept_per_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`connect A --auth a`, then `connect B`: B gets no token, A keeps its own; a file of
    the older shape (one token) is read as its server's."""
    path = tmp_path / "config.json"
    monkeypatch.setenv("MIASMA_CONFIG", str(path))
    for name in ("MIASMA_SERVER", "MIASMA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    save_file(Settings(server="a:1", token="a-token"))
    assert resolve(server="b:2") == Settings(server="b:2")
    save_file(resolve(server="b:2"))
    assert resolve() == Settings(server="b:2")
    assert resolve(server="a:1").token == "a-token"
    path.write_text(json.dumps({"server": "old:1", "token": "old-token"}))
    assert resolve() == Settings(server="old:1", token="old-token")
    assert resolve(server="b:2").token == ""


def test_saved_config_is_private_and_holds_only_what_was_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file holds tokens, so only its owner can read it."""
    path = save_file(Settings(server="h:1", token="t"), tmp_path / "miasma" / "config.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"server": "h:1", "tokens": {"h:1": "t"}}


def test_token_travels_as_bearer_metadata_and_tls_is_opt_in() -> None:
    """A token becomes ``authorization: Bearer``; a CA file turns TLS on."""
    assert Settings(token="t").metadata() == (("authorization", "Bearer t"),)
    assert Settings().metadata() == ()
    assert Settings().credentials() is None
    assert Settings(tls_ca="/x.pem").uses_tls


class FailedCall(grpc.RpcError):
    """What grpc raises: an RpcError that is also a Call (code, details, trailers)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: Any) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailers


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def test_rich_status_becomes_one_error_with_reason_fields_and_holder() -> None:
    """ErrorInfo, BadRequest and ResourceInfo details land on MiasmaError's attributes."""
    status = status_pb2.Status(
        code=6,
        message="port 5432/tcp is held by app 'db'",
        details=[
            _packed(error_details_pb2.ErrorInfo(reason="PORT_IN_USE", domain="miasma")),
            _packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="add_published_ports[0]", description="held"
                        )
                    ]
                )
            ),
            _packed(error_details_pb2.ResourceInfo(resource_name="apps/db")),
        ],
    )
    trailers = ((DETAILS_KEY, status.SerializeToString()),)
    error = from_rpc_error(FailedCall(grpc.StatusCode.ALREADY_EXISTS, "x", trailers))
    assert error.code is grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "PORT_IN_USE"
    assert error.resource == "apps/db"
    assert [(v.field, v.description) for v in error.violations] == [
        ("add_published_ports[0]", "held")
    ]
    assert str(error) == (
        "port 5432/tcp is held by app 'db' "
        "(ALREADY_EXISTS PORT_IN_USE; field: add_published_ports[0])"
    )


def test_transport_failures_have_no_reason() -> None:
    """Without a status trailer the error still carries the code and the message."""
    error = from_rpc_error(FailedCall(grpc.StatusCode.UNAVAILABLE, "connection refused", ()))
    assert isinstance(error, MiasmaError)
    assert (error.code, error.reason, error.message) == (
        grpc.StatusCode.UNAVAILABLE,
        "",
        "connection refused",
    )


def test_every_cli_flag_has_help() -> None:
    """`--help` describes every option of every command."""
    for name, command in cli.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"


def test_watch_cursor_resumes_after_what_was_seen() -> None:
    """Snapshot events don't move the cursor; the marker, events and heartbeats do."""
    cursor = WatchCursor(None, 0)
    assert cursor.request() == apps_pb2.WatchPortEventsRequest(name="apps/-", start_revision=0)
    snapshot = apps_pb2.PortEvent(revision=7, kind=apps_pb2.PORT_EVENT_KIND_SNAPSHOT)
    cursor.seen(apps_pb2.WatchPortEventsResponse(event=snapshot))
    assert cursor.request().start_revision == 0  # a broken snapshot starts over
    cursor.seen(
        apps_pb2.WatchPortEventsResponse(snapshot_complete=apps_pb2.SnapshotComplete(revision=7))
    )
    changed = apps_pb2.PortEvent(revision=9, kind=apps_pb2.PORT_EVENT_KIND_CHANGED)
    cursor.seen(apps_pb2.WatchPortEventsResponse(event=changed))
    cursor.seen(apps_pb2.WatchPortEventsResponse(progress=apps_pb2.Progress(revision=12)))
    assert WatchCursor("web", 3).request().name == "apps/web"
    assert cursor.request().start_revision == 12


def test_watch_cursor_backs_off_on_unavailable_and_raises_anything_else() -> None:
    """UNAVAILABLE waits 0.1 s doubling to 2 s; OUT_OF_RANGE is not retried."""
    cursor = WatchCursor(None, 5)
    gone = MiasmaError(grpc.StatusCode.UNAVAILABLE, "server restarting")
    assert [cursor.backoff(gone) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    cursor.seen(apps_pb2.WatchPortEventsResponse(progress=apps_pb2.Progress(revision=5)))
    assert cursor.backoff(gone) == 0.1  # a message resets the delay
    with pytest.raises(MiasmaError):
        cursor.backoff(MiasmaError(grpc.StatusCode.OUT_OF_RANGE, "compacted"))


@pytest.mark.parametrize(
    "build",
    [
        lambda: ops.edit_ports("web", add_published=["abc"]),
        lambda: ops.edit_app("web", add_volumes=["no-target"]),
        lambda: ops.create_app("web", "img", published_ports=[70_000_000_000]),
        lambda: ops.update_app("web"),
    ],
)
def test_bad_input_raises_the_clients_one_error_type(build: Callable[[], object]) -> None:
    """Refused before any call, as MiasmaError (INVALID_ARGUMENT, INVALID_INPUT), so one
    ``except MiasmaError`` handles the client's refusals and the server's alike."""
    with pytest.raises(MiasmaError) as caught:
        build()
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == "INVALID_INPUT"
    assert isinstance(caught.value, InvalidInput)


APPLIED = apps_pb2.ROLLOUT_STATE_APPLIED


@pytest.mark.parametrize(
    ("observed", "status"),
    [
        (apps_pb2.ObservedState(running=1, total=1, rollout=APPLIED), AppStatus.RUNNING),
        (
            apps_pb2.ObservedState(
                running=1, total=1, rollout=APPLIED, phase="waiting for the app to listen on 80"
            ),
            AppStatus.STARTING,
        ),
        (
            apps_pb2.ObservedState(running=1, total=1, rollout=APPLIED, not_listening=[80]),
            AppStatus.NOT_LISTENING,
        ),
        (
            apps_pb2.ObservedState(
                running=0, total=1, rollout=apps_pb2.ROLLOUT_STATE_FAILED, not_listening=[80]
            ),
            AppStatus.FAILED,
        ),
    ],
)
def test_a_phase_is_not_settled_and_not_listening_is(
    observed: apps_pb2.ObservedState, status: AppStatus
) -> None:
    """A rollout still at work (a phase) is starting; one that ended with the app deaf to
    its ports is 'not listening' (settled: the CLI's wait ends, exit 8)."""
    app = apps_pb2.App(desired_state=apps_pb2.DESIRED_STATE_RUNNING, observed=observed)
    assert app_status(app) is status
    assert status.settled is (status is not AppStatus.STARTING)


def test_a_not_listening_event_reads_as_such() -> None:
    """ports:watch names the event kind and prints its message."""
    event = apps_pb2.PortEvent(
        revision=7, app="apps/redis", kind=apps_pb2.PORT_EVENT_KIND_NOT_LISTENING,
        new_bindings=[apps_pb2.PortBinding(published_port=3001, target_port=3318)],
        message="not listening on 3318 after 10 s",
    )  # fmt: skip
    line = event_line(apps_pb2.WatchPortEventsResponse(event=event))
    assert line == "#7  redis  not listening  3001 → 3318  (not listening on 3318 after 10 s)"

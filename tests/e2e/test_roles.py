"""Who may do what, on the real server (README "Security", docs/security.md): every
AppService method for every role, named tokens from the access file, its reload without
a restart, and client certificates as identities."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from miasma.v1 import apps_pb2, apps_pb2_grpc
from miasma_client import MiasmaClient, MiasmaError, Settings

from miasma_grpc.access import token_hash
from miasma_grpc.domain.access import PERMISSIONS, Role
from tests.polling import eventually
from tests.readme import readme_block
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

TOKENS = {"viewer": "v-token", "deployer": "d-token", "admin": "a-token"}
IMAGE = "miasma-test/busybox:latest"
MIASMA = str(Path(sys.executable).with_name("miasma"))
STOPPED = apps_pb2.DESIRED_STATE_STOPPED
Request = Callable[[str], Message]


def entry(name: str, role: str, token: str) -> str:
    return f'[[token]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{token_hash(token)}"\n'


def access_text() -> str:
    return "\n".join(entry(f"{role}-bot", role, token) for role, token in TOKENS.items())


def stopped(name: str) -> apps_pb2.CreateAppRequest:
    return apps_pb2.CreateAppRequest(
        app_id=name, app=apps_pb2.App(image=IMAGE, desired_state=STOPPED)
    )


# One request per method, on the role's own apps (x-ROLE, made before), so that the calls
# of one role never depend on another's. Allowed calls may still fail for other reasons
# (a restart of a stopped app, a pull with no registry): only the access check matters.
CALLS: dict[str, Request] = {
    "GetApp": lambda r: apps_pb2.GetAppRequest(name=f"apps/x-{r}"),
    "ListApps": lambda r: apps_pb2.ListAppsRequest(),
    "WatchPortEvents": lambda r: apps_pb2.WatchPortEventsRequest(name=f"apps/x-{r}"),
    "ReadLogs": lambda r: apps_pb2.ReadLogsRequest(name=f"apps/x-{r}", tail_lines=1),
    "ListVolumes": lambda r: apps_pb2.ListVolumesRequest(),
    "GetServerInfo": lambda r: apps_pb2.GetServerInfoRequest(),
    "GetCaller": lambda r: apps_pb2.GetCallerRequest(),
    "CreateApp": lambda r: stopped(f"new-{r}"),
    "UpdateApp": lambda r: apps_pb2.UpdateAppRequest(
        app=apps_pb2.App(name=f"apps/x-{r}", env={"A": "1"}),
        update_mask=field_mask_pb2.FieldMask(paths=["env.A"]),
    ),
    "EditPorts": lambda r: apps_pb2.EditPortsRequest(name=f"apps/x-{r}"),
    "EditApp": lambda r: apps_pb2.EditAppRequest(name=f"apps/x-{r}", group="g"),
    "StartApp": lambda r: apps_pb2.StartAppRequest(name=f"apps/x-{r}"),
    "StopApp": lambda r: apps_pb2.StopAppRequest(name=f"apps/x-{r}"),
    "RestartApp": lambda r: apps_pb2.RestartAppRequest(name=f"apps/x-{r}"),
    "UpgradeApp": lambda r: apps_pb2.UpgradeAppRequest(name=f"apps/x-{r}"),
    "RenameApp": lambda r: apps_pb2.RenameAppRequest(name=f"apps/x-{r}", new_app_id=f"y-{r}"),
    "DeleteApp": lambda r: apps_pb2.DeleteAppRequest(name=f"apps/y-{r}"),
    "DeleteVolume": lambda r: apps_pb2.DeleteVolumeRequest(name="no-such-volume"),
    "ListAuditRecords": lambda r: apps_pb2.ListAuditRecordsRequest(page_size=1),
}
STREAMS = {"WatchPortEvents", "ReadLogs"}


def test_every_method_table_covers_every_rpc() -> None:
    """The table here and the server's permission table name the same methods: every RPC
    of the service."""
    service = apps_pb2.DESCRIPTOR.services_by_name["AppService"]
    assert set(CALLS) == set(PERMISSIONS) == {m.name for m in service.methods}


@pytest.fixture
def server(make_server: Callable[..., ServerProcess], tmp_path: Path) -> ServerProcess:
    """A server whose access file names a viewer, a deployer and an admin."""
    access = tmp_path / "access.toml"
    access.write_text(access_text())
    return make_server(published_range="29601-29699",
                       extra_args=["--access-file", str(access)])  # fmt: skip


def call(channel: grpc.Channel, method: str, request: Message, token: str) -> grpc.StatusCode:
    """Make the call with ``token``; its status (a stream: of its first message)."""
    path = f"/miasma.v1.AppService/{method}"
    answer = getattr(apps_pb2, f"{method}Response", None)
    parse = answer.FromString if answer else None
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        if method in STREAMS:
            stream = channel.unary_stream(path, type(request).SerializeToString, None)(
                request, timeout=20, metadata=metadata
            )
            try:
                next(iter(stream), None)
            finally:
                stream.cancel()  # type: ignore[no-untyped-call]
        else:
            channel.unary_unary(path, type(request).SerializeToString, parse)(
                request, timeout=60, metadata=metadata
            )
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        if code is grpc.StatusCode.PERMISSION_DENIED:
            details = error.details() or ""
            assert f"needs permission {PERMISSIONS[method].name}" in details, details
        return code
    return grpc.StatusCode.OK


def everything(channel: grpc.Channel) -> list[tuple[str, str, int]]:
    """What the server holds (as admin): each app with its group and revision."""
    stub = apps_pb2_grpc.AppServiceStub(channel)
    listed = stub.ListApps(apps_pb2.ListAppsRequest(show_hidden=True), timeout=20,
                           metadata=(("authorization", f"Bearer {TOKENS['admin']}"),))  # fmt: skip
    return [(a.name, a.group, a.revision) for a in listed.apps]


def test_each_role_may_make_exactly_its_calls_and_a_refusal_changes_nothing(
    server: ServerProcess,
) -> None:
    """Every RPC x every role: a call the role may not make is PERMISSION_DENIED naming the
    permission, and what the server holds is unchanged; one it may make passes the check
    (whatever it then answers)."""
    channel, stub = server.stub()
    with channel:
        admin = (("authorization", f"Bearer {TOKENS['admin']}"),)
        for name in TOKENS:
            stub.CreateApp(stopped(f"x-{name}"), timeout=30, metadata=admin)
        for role_name, token in TOKENS.items():
            role = Role.parse(role_name)
            for method, request in CALLS.items():
                before = everything(channel)
                code = call(channel, method, request(role_name), token)
                allowed = role >= PERMISSIONS[method].role
                if allowed:
                    denied = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
                    assert code not in denied, (role_name, method, code)
                else:
                    assert code is grpc.StatusCode.PERMISSION_DENIED, (role_name, method, code)
                    assert everything(channel) == before, (role_name, method)
    check_the_audit_log(server)


def check_the_audit_log(server: ServerProcess) -> None:
    """Every refusal of the table is in the audit log with who and what; every change the
    roles made is there once, written with the change (its revision); the filters work;
    `miasma audit` shows them."""
    with MiasmaClient(server.address, token=TOKENS["admin"]) as admin:
        records = list(admin.list_audit_records(limit=1000).records)
        refused = {(r.identity, r.method) for r in records if r.result.startswith("PERMISSION")}
        expected = {
            (f"{name}-bot", method)
            for name in TOKENS
            for method, permission in PERMISSIONS.items()
            if Role.parse(name) < permission.role
        }
        assert refused == expected
        made = [(r.identity, r.method, r.app) for r in records if r.result == "OK"]
        for name in ("deployer", "admin"):
            assert (f"{name}-bot", "CreateApp", f"apps/new-{name}") in made
            assert (f"{name}-bot", "RenameApp", f"apps/x-{name}") in made
        assert ("admin-bot", "DeleteApp", "apps/y-admin") in made
        assert len(made) == len(set(made)), made  # once per call
        assert all(r.revision > 0 for r in records if r.result == "OK")
        ci = admin.list_audit_records(identity="viewer-bot", limit=1000).records
        assert {r.identity for r in ci} == {"viewer-bot"}
        one = admin.list_audit_records("new-deployer", limit=1000).records
        assert [(r.method, r.result) for r in one] == [("CreateApp", "OK")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
    env |= {"MIASMA_SERVER": server.address, "MIASMA_TOKEN": TOKENS["admin"],
            "MIASMA_CONFIG": "/nonexistent/miasma.json"}  # fmt: skip
    shown = subprocess.run([MIASMA, "audit", "--by", "viewer-bot", "-n", "5"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "viewer-bot" in shown.stdout
    assert "PERMISSION_DENIED" in shown.stdout


def whoami(server: ServerProcess, token: str) -> apps_pb2.GetCallerResponse:
    with MiasmaClient(server.address, token=token) as client:
        return client.whoami()


def test_whoami_and_a_reload_without_a_restart(server: ServerProcess, tmp_path: Path) -> None:
    """whoami names the token and its role; a token added to the file works a moment later
    (no restart); a removed one stops working; a file that does not read (applied on
    SIGHUP) keeps the identities in force, and the log says why."""
    caller = whoami(server, TOKENS["deployer"])
    assert (caller.name, caller.role, caller.source) == ("deployer-bot", "deployer", "token")
    assert "apps.update" in caller.permissions
    assert "apps.delete" not in caller.permissions
    access = tmp_path / "access.toml"
    access.write_text(entry("ci", "deployer", "fresh") + entry("admin-bot", "admin", "a-token"))
    added = eventually(lambda: whoami(server, "fresh"), "the new token to be taken",
                       timeout=20, retry_on=(MiasmaError,))  # fmt: skip
    assert (added.name, added.role) == ("ci", "deployer")
    with pytest.raises(MiasmaError) as gone:
        whoami(server, TOKENS["viewer"])
    assert (gone.value.code, gone.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID",
    )  # fmt: skip
    access.write_text("[[token]]\nname = 'broken'\n")
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)
    eventually(lambda: _logged(server, "not applied"), "the refusal in the log", timeout=20)
    assert whoami(server, "fresh").name == "ci"


def _logged(server: ServerProcess, text: str) -> None:
    assert server.log_path is not None
    assert text in server.log_path.read_text()


def test_a_client_certificate_is_an_identity(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The README's mutual-TLS steps as written (OpenSSL makes the CA and the
    certificates; the access file names router.internal; `miasma whoami` with the
    router's certificate says who it is); a viewer certificate may read, not change; one
    the CA signed but the file does not name is UNAUTHENTICATED, CERTIFICATE_UNKNOWN."""
    steps = readme_block("tests/e2e/test_roles.py::test_a_client_certificate_is_an_identity")
    made = [line for line in steps if line.startswith(("openssl", "printf"))]
    stranger = [line.replace("router", "stranger") for line in made if "router" in line]
    for line in [*made, *stranger[:2]]:
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True,
                              text=True, check=False, timeout=60)  # fmt: skip
        assert done.returncode == 0, f"{line}: {done.stderr}"
    [run] = [line for line in steps if line.startswith("make run")]
    args = shlex.split(run.partition('ARGS="')[2].rstrip('"'))
    server = make_server(
        published_range="29601-29699",
        extra_args=[str(tmp_path / a) if a.endswith((".pem", ".key", ".toml")) else a
                    for a in args],
        credentials=grpc.ssl_channel_credentials(
            *[(tmp_path / f).read_bytes() for f in ("ca.pem", "router.key", "router.pem")]
        ),
    )  # fmt: skip
    [whoami_line] = [line for line in steps if line.startswith("miasma ")]
    command, _, said = whoami_line.partition("#")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
    env |= {"MIASMA_SERVER": server.address, "MIASMA_CONFIG": str(tmp_path / "cli.json")}
    shown = subprocess.run([MIASMA, *shlex.split(command)[1:]], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=60, check=False)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(said.strip().removeprefix("-> "))

    def client(name: str) -> MiasmaClient:
        settings = Settings(server=server.address, tls_ca=str(tmp_path / "ca.pem"),
                            tls_cert=str(tmp_path / f"{name}.pem"),
                            tls_key=str(tmp_path / f"{name}.key"))  # fmt: skip
        return MiasmaClient(settings=settings, timeout=20)

    with client("router") as known:
        assert known.list_apps() == []
        with pytest.raises(MiasmaError) as refused:
            known.create_app("web", IMAGE, stopped=True)
        assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert known.list_apps() == []
    with client("stranger") as unknown, pytest.raises(MiasmaError) as no:
        unknown.whoami()
    assert (no.value.code, no.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED, "CERTIFICATE_UNKNOWN",
    )  # fmt: skip


def test_the_readme_token_steps_work_as_written(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """`python -m miasma_grpc.access token ci --role deployer --apps 'web*'` prints a token
    and its [[token]] block; with the block in the access file, `MIASMA_TOKEN=… miasma
    whoami` says `ci (deployer, by token)` on apps web*, and the token's bearer may
    deploy web, not db, and may not delete."""
    made = subprocess.run(
        [sys.executable, "-m", "miasma_grpc.access", "token", "ci", "--role", "deployer",
         "--apps", "web*"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    first, _, block = made.stdout.partition("\n\n")
    token = first.rsplit(" ", 1)[1]
    assert token not in block  # only its hash goes into the file
    access = tmp_path / "access.toml"
    access.write_text(block)
    server = make_server(published_range="29601-29699",
                         extra_args=["--access-file", str(access)])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
    env |= {"MIASMA_SERVER": server.address, "MIASMA_TOKEN": token,
            "MIASMA_CONFIG": str(tmp_path / "cli.json")}  # fmt: skip
    shown = subprocess.run([MIASMA, "whoami"], capture_output=True, text=True, env=env,
                           timeout=60, check=False)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("ci (deployer, by token)")
    assert "On: apps web*" in shown.stdout
    outside = subprocess.run([MIASMA, "apps:create", "db", "-i", IMAGE, "--stopped"],
                             capture_output=True, text=True, env=env, timeout=60,
                             check=False)  # fmt: skip
    assert outside.returncode == 7
    assert "limited to apps web*" in outside.stderr
    created = subprocess.run([MIASMA, "apps:create", "web", "-i", IMAGE, "--stopped"],
                             capture_output=True, text=True, env=env, timeout=60,
                             check=False)  # fmt: skip
    assert created.returncode == 0, created.stderr
    deleted = subprocess.run([MIASMA, "apps:delete", "-a", "web", "--yes"], capture_output=True,
                             text=True, env=env, timeout=60, check=False)  # fmt: skip
    assert deleted.returncode == 7  # the exit code of a refused identity
    assert "apps.delete" in deleted.stderr

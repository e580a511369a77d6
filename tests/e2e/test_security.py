"""Authentication, TLS and limits on the real server: refused calls change nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from miasma.v1 import apps_pb2
from miasma_client import AsyncMiasmaClient, MiasmaClient, MiasmaError, Settings

from tests.certs import Authority
from tests.conftest import HTTPD_COMMAND
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

TOKEN = "s3cret-token"
MIASMA = str(Path(sys.executable).with_name("miasma"))
GRPCURL = str(Path(sys.executable).with_name("grpcurl"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the miasma CLI with no saved config and no MIASMA_* environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
    env["MIASMA_CONFIG"] = "/nonexistent/miasma-config.json"
    return subprocess.run(
        [MIASMA, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def health(channel: grpc.Channel) -> int:
    """The overall health status (no credentials needed)."""
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status)


@pytest.fixture
def token_server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server requiring MIASMA_ACCESS_TOKEN."""
    return make_server(published_range="23001-23999", environment={"MIASMA_ACCESS_TOKEN": TOKEN})


def test_calls_without_the_right_token_are_refused_and_change_nothing(
    token_server: ServerProcess, test_image: str
) -> None:
    """Missing and wrong tokens get UNAUTHENTICATED; the app is not created; health is open."""
    with MiasmaClient(token_server.address, token="") as anonymous:
        with pytest.raises(MiasmaError) as missing:
            anonymous.create_app("web", test_image, stopped=True)
        with pytest.raises(MiasmaError) as watch:
            next(anonymous.watch_port_events(resume=False))
    with (
        MiasmaClient(token_server.address, token="wrong") as wrong,
        pytest.raises(MiasmaError) as invalid,
    ):
        wrong.create_app("web", test_image, stopped=True)
    assert (missing.value.code, missing.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_MISSING",
    )
    assert (invalid.value.code, invalid.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_INVALID",
    )
    assert watch.value.code is grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(token_server.address) as channel:
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
    with MiasmaClient(token_server.address, token=TOKEN) as client:
        assert client.list_apps() == []
        client.create_app("web", test_image, stopped=True)
        assert [a.name for a in client.list_apps()] == ["apps/web"]


def test_nothing_but_health_is_answered_before_the_token(token_server: ServerProcess) -> None:
    """Without the token, a method that does not exist and server reflection are
    UNAUTHENTICATED (UNIMPLEMENTED, or a list of services, would tell an anonymous caller
    what exists); with it, the unknown method is UNIMPLEMENTED and reflection answers."""
    unknown = "/miasma.v1.AppService/NoSuchMethod"
    reflect = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    listing = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(token_server.address) as channel:
        for metadata, code in (((), grpc.StatusCode.UNAUTHENTICATED),
                               ((("authorization", f"Bearer {TOKEN}"),),
                                grpc.StatusCode.UNIMPLEMENTED)):  # fmt: skip
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary(unknown, None, None)(b"", timeout=10, metadata=metadata)
            assert caught.value.code() is code
        info = channel.stream_stream(
            reflect, reflection_pb2.ServerReflectionRequest.SerializeToString,
            reflection_pb2.ServerReflectionResponse.FromString,
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as anonymous:
            next(iter(info(iter([listing]), timeout=10)))
        assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
        answer = next(iter(info(iter([listing]), timeout=10,
                                metadata=(("authorization", f"Bearer {TOKEN}"),))))  # fmt: skip
        names = {s.name for s in answer.list_services_response.service}
        assert "miasma.v1.AppService" in names


def test_cli_and_grpcurl_with_and_without_the_token(token_server: ServerProcess) -> None:
    """`miasma --token` and `grpcurl -H authorization:` get in; without, a one-line refusal."""
    refused = cli("--server", token_server.address, "apps")
    assert refused.returncode == 7  # unauthenticated (README "Exit codes")
    assert "UNAUTHENTICATED TOKEN_MISSING" in refused.stderr
    assert cli("--server", token_server.address, "--token", TOKEN, "apps").returncode == 0
    plain = [GRPCURL, "-plaintext", token_server.address, "list"]
    assert subprocess.run(plain, capture_output=True, timeout=30, check=False).returncode != 0
    bearer = [GRPCURL, "-plaintext", "-H", f"authorization: Bearer {TOKEN}",
              token_server.address, "list"]  # fmt: skip
    listed = subprocess.run(bearer, capture_output=True, text=True, timeout=30, check=False)
    assert "miasma.v1.AppService" in listed.stdout


def test_tls_server_needs_a_trusting_client(
    make_server: Callable[..., ServerProcess], authority: Authority, tmp_path: Path
) -> None:
    """Over TLS a client trusting the CA works; plaintext or an untrusting client fails."""
    pair = authority.issue("server", server=True)
    server = make_server(
        extra_args=["--tls-cert", str(pair.cert), "--tls-key", str(pair.key)],
        credentials=grpc.ssl_channel_credentials(authority.cert.read_bytes()),
    )
    with MiasmaClient(settings=Settings(server=server.address, tls_ca=str(authority.cert))) as ok:
        assert ok.server_info().version
    with MiasmaClient(server.address, timeout=10) as plain, pytest.raises(MiasmaError) as plaintext:
        plain.server_info()
    assert plaintext.value.code is grpc.StatusCode.UNAVAILABLE
    stranger = Authority(tmp_path, "other-ca")
    settings = Settings(server=server.address, tls_ca=str(stranger.cert))
    with MiasmaClient(settings=settings, timeout=10) as untrusting, pytest.raises(MiasmaError):
        untrusting.server_info()
    shown = cli("--server", server.address, "--tls-ca", str(authority.cert), "server:info")
    assert shown.returncode == 0, shown.stderr


def test_mutual_tls_requires_a_client_certificate(
    make_server: Callable[..., ServerProcess], authority: Authority
) -> None:
    """With --tls-client-ca only a client presenting a certificate from that CA gets in."""
    pair = authority.issue("server", server=True)
    client_pair = authority.issue("client", server=False)
    server = make_server(
        extra_args=[
            "--tls-cert",
            str(pair.cert),
            "--tls-key",
            str(pair.key),
            "--tls-client-ca",
            str(authority.cert),
        ],
        credentials=grpc.ssl_channel_credentials(
            authority.cert.read_bytes(), client_pair.key.read_bytes(), client_pair.cert.read_bytes()
        ),
    )
    anonymous = Settings(server=server.address, tls_ca=str(authority.cert))
    with MiasmaClient(settings=anonymous, timeout=10) as client, pytest.raises(MiasmaError) as no:
        client.server_info()
    assert no.value.code is grpc.StatusCode.UNAVAILABLE
    identified = Settings(
        server=server.address, tls_ca=str(authority.cert),
        tls_cert=str(client_pair.cert), tls_key=str(client_pair.key),
    )  # fmt: skip
    with MiasmaClient(settings=identified) as client:
        assert client.server_info().version
    shown = cli("--server", server.address, "--tls-ca", str(authority.cert),
                "--tls-cert", str(client_pair.cert), "--tls-key", str(client_pair.key),
                "server:info")  # fmt: skip
    assert shown.returncode == 0, shown.stderr


async def test_a_flood_of_streams_gets_resource_exhausted_not_a_crash(
    make_server: Callable[..., ServerProcess],
) -> None:
    """Past --max-concurrent-rpcs calls are refused with RESOURCE_EXHAUSTED; then all is well."""
    server = make_server(extra_args=["--max-concurrent-rpcs", "3"])
    outcomes: list[grpc.StatusCode] = []
    async with AsyncMiasmaClient(server.address) as client:
        streams = [client.watch_port_events(resume=False) for _ in range(12)]

        async def first(stream: object) -> None:
            try:
                await anext(stream)  # type: ignore[call-overload]
                outcomes.append(grpc.StatusCode.OK)
            except MiasmaError as exc:
                outcomes.append(exc.code)

        await asyncio.gather(*(first(s) for s in streams))
        for stream in streams:
            await stream.aclose()
        assert outcomes.count(grpc.StatusCode.OK) <= 3
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in outcomes
        assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        await asyncio.sleep(0.5)  # the cancelled streams free their slots
        assert (await client.server_info()).version
    assert server.process is not None
    assert server.process.poll() is None


def test_oversized_request_is_refused_and_the_server_keeps_serving(
    make_server: Callable[..., ServerProcess], test_image: str
) -> None:
    """A request over --max-message-size gets RESOURCE_EXHAUSTED; nothing is created."""
    server = make_server(extra_args=["--max-message-size", "65536"])
    with MiasmaClient(server.address) as client:
        with pytest.raises(MiasmaError) as big:
            client.create_app("web", test_image, env={"BLOB": "x" * 100_000}, stopped=True)
        assert big.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.list_apps() == []


def test_calls_past_the_server_deadline_end_with_deadline_exceeded(
    make_server: Callable[..., ServerProcess], test_image: str
) -> None:
    """--rpc-timeout bounds each call; a rollout cut short is finished by the reconciler."""
    server = make_server(extra_args=["--rpc-timeout", "0.001", "--reconcile-interval", "1"])
    request = apps_pb2.CreateAppRequest(
        app_id="web", app=apps_pb2.App(image=test_image, command=HTTPD_COMMAND)
    )
    channel, stub = server.stub()
    with channel, pytest.raises(grpc.RpcError) as late:
        stub.CreateApp(request)
    assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "0.001 s" in (late.value.details() or "")

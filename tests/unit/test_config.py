"""Settings come from flags and MIASMA_* environment variables; flags win."""

from __future__ import annotations

from pathlib import Path

import pytest

from miasma_grpc.config import Settings, load_settings, parse_ports
from miasma_grpc.domain.models import Port, PortRange, Protocol


def test_defaults_listen_on_loopback_with_the_documented_ranges() -> None:
    """With nothing set, the server listens on 127.0.0.1:50051 with ranges 3001-3999/3000-3999."""
    settings = load_settings([], environ={})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.published_range == PortRange(3001, 3999)
    assert settings.target_range == PortRange(3000, 3999)
    assert settings.docker_host is None


def test_environment_sets_every_option_and_flags_override_it() -> None:
    """MIASMA_* variables configure the server; a flag given on the command line wins."""
    environ = {
        "MIASMA_LISTEN": "127.0.0.1:6000",
        "MIASMA_DB_PATH": "/tmp/x.db",
        "MIASMA_DOCKER_HOST": "unix:///tmp/d.sock",
        "MIASMA_PUBLISHED_PORT_RANGE": "5000-5100",
        "MIASMA_RESERVED_PORTS": "22,53/udp",
    }
    settings = load_settings(["--published-port-range", "7000-7010"], environ=environ)
    assert settings.listen == "127.0.0.1:6000"
    assert settings.db_path == Path("/tmp/x.db")
    assert settings.docker_host == "unix:///tmp/d.sock"
    assert settings.published_range == PortRange(7000, 7010)
    assert set(settings.reserved_ports) == {
        Port(22, Protocol.TCP),
        Port(22, Protocol.UDP),
        Port(53, Protocol.UDP),
    }


def test_docker_host_falls_back_to_docker_host_variable() -> None:
    """Without MIASMA_DOCKER_HOST, DOCKER_HOST is used."""
    assert load_settings([], environ={"DOCKER_HOST": "tcp://h:2375"}).docker_host == "tcp://h:2375"


def test_server_port_is_always_reserved() -> None:
    """The listen port is reserved (TCP) on top of the configured list."""
    settings = Settings(listen="127.0.0.1:6000", reserved_ports=parse_ports("80/tcp"))
    assert settings.all_reserved == {Port(6000, Protocol.TCP), Port(80, Protocol.TCP)}


@pytest.mark.parametrize(
    "argv",
    [
        ["--published-port-range", "10-5"],
        ["--published-port-range", "abc"],
        ["--listen", "nohost"],
        ["--runtime", "kubernetes"],
        ["--watch-heartbeat", "0"],
        ["--event-retention", "0"],
        ["--ready-timeout", "-1"],
        ["--ready-timeout", "nan"],
        ["--log-level", "foo"],
        ["--event-retention", "many"],
    ],
)
def test_bad_values_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid range, address, runtime or event setting stops start-up with a usage error."""
    with pytest.raises(SystemExit) as caught:
        load_settings(argv, environ={})
    assert caught.value.code == 2
    assert "miasma-server" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("listen", "token", "tls", "client_ca", "warns"),
    [
        ("127.0.0.1:50051", "", False, False, False),
        ("localhost:50051", "", False, False, False),
        ("[::1]:50051", "", False, False, False),
        ("0.0.0.0:50051", "", False, False, True),
        ("0.0.0.0:50051", "t", False, False, False),
        ("10.0.0.5:50051", "", True, False, True),  # TLS hides the traffic, asks nobody
        ("10.0.0.5:50051", "", True, True, False),
        ("10.0.0.5:50051", "t", True, False, False),
    ],
)
def test_listening_beyond_loopback_unprotected_warns(
    listen: str, token: str, tls: bool, client_ca: bool, warns: bool
) -> None:
    """An address beyond loopback where nobody is asked who they are (no token, no client
    certificates; TLS alone or not) gets the start-up warning."""
    settings = Settings(
        listen=listen, access_token=token, tls_cert=Path("c.pem") if tls else None,
        tls_client_ca=Path("ca.pem") if client_ca else None,
    )  # fmt: skip
    warning = settings.exposure_warning()
    assert bool(warning) is warns
    if warns and tls:
        assert "with TLS but without an access token or client certificates" in warning


def test_tls_flags_must_come_together() -> None:
    """A certificate without its key, or a client CA without a certificate, is refused."""
    for argv in (["--tls-cert", "c.pem"], ["--tls-client-ca", "ca.pem"]):
        with pytest.raises(SystemExit):
            load_settings(argv, environ={})


@pytest.mark.parametrize(
    ("value", "allowed"), [("true", True), ("1", True), ("off", False), ("", False)]
)
def test_allow_bind_mounts_from_the_environment(value: str, allowed: bool) -> None:
    """MIASMA_ALLOW_BIND_MOUNTS reads as a boolean; off when unset or empty."""
    settings = load_settings([], environ={"MIASMA_ALLOW_BIND_MOUNTS": value})
    assert settings.allow_bind_mounts is allowed
    assert load_settings(["--allow-bind-mounts"], environ={}).allow_bind_mounts
    flag_wins = load_settings(["--no-allow-bind-mounts"], environ={"MIASMA_ALLOW_BIND_MOUNTS": "1"})
    assert not flag_wins.allow_bind_mounts


def test_a_bad_boolean_in_the_environment_exits_with_usage() -> None:
    """MIASMA_ALLOW_BIND_MOUNTS=maybe stops start-up with a message, not a traceback."""
    with pytest.raises(SystemExit) as caught:
        load_settings([], environ={"MIASMA_ALLOW_BIND_MOUNTS": "maybe"})
    assert "true or false" in str(caught.value.code)


def test_durability_is_full_unless_asked_and_checked() -> None:
    """--durability (or MIASMA_DURABILITY) is full by default, fast when asked; anything
    else is refused at start-up."""
    assert load_settings([], environ={}).durability == "full"
    assert load_settings(["--durability", "FAST"], environ={}).durability == "fast"
    assert load_settings([], environ={"MIASMA_DURABILITY": "fast"}).durability == "fast"
    with pytest.raises(SystemExit):
        load_settings(["--durability", "sometimes"], environ={})

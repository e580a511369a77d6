"""Server settings, read once from flags and ``MIASMA_*`` environment variables.

Every flag has an environment variable of the same name (``--db-path`` is
``MIASMA_DB_PATH``); a flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from miasma_grpc.domain.events import Retention
from miasma_grpc.domain.models import Port, PortRange, Protocol

DEFAULT_LISTEN = "127.0.0.1:50051"
ROUTERS = ("", "caddy")
DEFAULT_ROUTER_DRAIN = 2.0
RUNTIMES = ("auto", "container", "swarm")
DURABILITIES = ("full", "fast")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """Everything the composition root needs to build the server."""

    listen: str = DEFAULT_LISTEN
    db_path: Path = Path(".miasma/miasma.db")
    docker_host: str | None = None
    published_range: PortRange = PortRange(3001, 3999)
    target_range: PortRange = PortRange(3000, 3999)
    reserved_ports: tuple[Port, ...] = ()
    instance: str = "miasma"
    publish_address: str = "0.0.0.0"
    public_host: str = "localhost"
    reconcile_interval: float = 30.0
    ready_timeout: float = 10.0  # seconds; 0 removes the old container without waiting
    log_level: str = "INFO"
    watch_heartbeat: float = 15.0
    event_retention: int = 100_000
    event_max_age: float = 7 * 24 * 3600.0  # seconds; 0 keeps events of any age
    event_compaction_interval: float = 60.0
    event_buffer: int = 4096
    runtime: str = "auto"  # auto | container | swarm
    access_token: str = ""
    access_file: Path | None = None  # named tokens and certificate subjects with roles
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    max_concurrent_rpcs: int = 4096
    max_message_bytes: int = 1024 * 1024
    rpc_timeout: float = 300.0
    allow_bind_mounts: bool = False  # host paths as volumes give apps the host's files
    # full: every acknowledged change is on disk (fsync before the reply); fast: a process
    # crash loses nothing, a power loss may lose the last changes (README "Reliability").
    durability: str = "full"
    # The router (docs/routing.md): "caddy" runs Caddy, following the port events.
    router: str = ""
    router_http: str = "127.0.0.1:8080"
    router_https: str = "127.0.0.1:8443"
    router_upstream_host: str = "127.0.0.1"
    router_acme_email: str = ""
    caddy: str = "caddy"
    # Seconds an old container serves on after its successor is applied (-1: 2 with a
    # router, else 0).
    drain: float = -1.0

    def router_port(self, scheme: str) -> int:
        """The port the router serves ``scheme`` (http, https) on; 0 without a router."""
        if not self.router:
            return 0
        address = self.router_http if scheme == "http" else self.router_https
        return _port_of(address, f"--router-{scheme}")

    @property
    def drain_seconds(self) -> float:
        """How long an old container keeps serving after a start-first rollout."""
        if self.drain >= 0:
            return self.drain
        return DEFAULT_ROUTER_DRAIN if self.router else 0.0

    @property
    def tls(self) -> bool:
        """Whether the server listens with TLS."""
        return self.tls_cert is not None

    def exposure_warning(self) -> str:
        """Why listening as configured is risky, or ``""``: beyond loopback, nobody is asked
        who they are (no token, no client certificates). TLS alone only hides the traffic."""
        host = self.listen.rpartition(":")[0].strip("[]")
        loopback = host == "localhost" or host == "::1" or host.startswith("127.")
        if loopback or self.access_token or self.access_file or self.tls_client_ca:
            return ""
        how = "with TLS but" if self.tls else "without TLS,"
        return (
            f"listening on {self.listen} {how} without an access token or client "
            "certificates: anyone who can reach this address controls the Docker engine; set "
            "MIASMA_ACCESS_TOKEN (and --tls-cert), or --tls-client-ca"
        )

    @property
    def retention(self) -> Retention:
        """How much of the event log compaction keeps."""
        age = timedelta(seconds=self.event_max_age) if self.event_max_age > 0 else None
        return Retention(max_events=self.event_retention, max_age=age)

    @property
    def listen_port(self) -> int:
        """The port of ``listen`` (reserved so no app can publish on it)."""
        return _port_of(self.listen, "--listen", lowest=0)  # 0: any free port

    @property
    def all_reserved(self) -> frozenset[Port]:
        """Configured reserved ports plus the server's own port, and the router's (TCP)."""
        own = [self.listen_port]
        if self.router:
            own += [_port_of(self.router_http, "--router-http"),
                    _port_of(self.router_https, "--router-https")]  # fmt: skip
        return frozenset({*self.reserved_ports, *(Port(p, Protocol.TCP) for p in own)})


def _port_of(address: str, flag: str, lowest: int = 1) -> int:
    """The port of ``address`` (HOST:PORT, given as ``flag``)."""
    host, sep, port = address.rpartition(":")
    if not (host and sep and port.isdigit() and lowest <= int(port) <= 65535):
        raise ValueError(f"{flag} must be HOST:PORT, got {address!r}")
    return int(port)


def parse_ports(text: str) -> tuple[Port, ...]:
    """``"22,80/tcp,53/udp"`` -> ports; a bare number reserves TCP and UDP."""
    ports: list[Port] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        number, _, proto = item.partition("/")
        protocols = [Protocol(proto.lower())] if proto else list(Protocol)
        ports.extend(Port(int(number), p) for p in protocols)
    return tuple(ports)


def env_name(flag: str) -> str:
    """``db-path`` -> ``MIASMA_DB_PATH``."""
    return "MIASMA_" + flag.upper().replace("-", "_")


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The ``miasma-server`` argument parser with env-derived defaults."""
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="miasma-server",
        description="Miasma gRPC: run apps on Docker with Heroku-style port management. "
        "Every flag can also be set as MIASMA_<FLAG> (e.g. MIASMA_DB_PATH).",
    )

    def add(flag: str, help_text: str, default: object) -> None:
        env_value = environ.get(env_name(flag))
        parser.add_argument(
            f"--{flag}",
            default=env_value if env_value is not None else default,
            help=f"{help_text} [env {env_name(flag)}; default: {default}]",
        )

    add("listen", "address to serve gRPC on", defaults.listen)
    add(
        "runtime",
        "auto, container or swarm: how apps run (auto picks swarm on a swarm manager)",
        defaults.runtime,
    )
    add("db-path", "SQLite database file", defaults.db_path)
    add(
        "docker-host",
        "Docker engine URL (unix:///path or tcp://host:port); "
        "DOCKER_HOST or the default socket if unset",
        environ.get("DOCKER_HOST"),
    )
    add("published-port-range", "range auto published ports come from", defaults.published_range)
    add("target-port-range", "range auto target ports come from", defaults.target_range)
    add("reserved-ports", "comma list of ports no app may publish (22,80/tcp,53/udp)", "")
    add(
        "instance",
        "name of this Miasma: the Docker network every app joins, the prefix of container "
        "names and the label that marks containers as ours (one engine can host several)",
        defaults.instance,
    )
    add("publish-address", "host address published ports bind to", defaults.publish_address)
    add("public-host", "host name used in app URLs", defaults.public_host)
    add(
        "reconcile-interval",
        "seconds between reconciliations with Docker",
        defaults.reconcile_interval,
    )
    add(
        "ready-timeout",
        "seconds a recreated app's new container gets to accept connections on its TCP "
        "ports before the old one is removed (0: do not wait; local engines only)",
        defaults.ready_timeout,
    )
    add("log-level", "DEBUG, INFO, WARNING or ERROR", defaults.log_level)
    add(
        "access-file",
        "TOML file of named tokens (their SHA-256) and client certificate subjects, each "
        "with a role (viewer, deployer, admin); read again on change and on SIGHUP",
        None,
    )
    add(
        "durability",
        "full: a change is on disk (fsync) before it is acknowledged, and survives a power "
        "loss; fast: it survives a crash of the server, not of the machine (cheaper writes)",
        defaults.durability,
    )
    parser.add_argument(
        "--allow-bind-mounts",
        action=argparse.BooleanOptionalAction,
        default=_flag(environ.get(env_name("allow-bind-mounts")), defaults.allow_bind_mounts),
        help="let apps mount host paths as volumes: anyone who may create apps can then read "
        "and write the host's files (as root, with most images) [env "
        f"{env_name('allow-bind-mounts')}; default: {defaults.allow_bind_mounts}]",
    )
    add("router", "run a router for apps' routes: caddy (docs/routing.md); none if empty", "")
    add("router-http", "HOST:PORT the router serves HTTP on", defaults.router_http)
    add("router-https", "HOST:PORT the router serves HTTPS on (routes with tls)",
        defaults.router_https)  # fmt: skip
    add("router-upstream-host", "address the router reaches apps' published ports at",
        defaults.router_upstream_host)  # fmt: skip
    add(
        "router-acme-email",
        "ACME account e-mail: public host names of TLS routes get certificates from Let's "
        "Encrypt (local names always from the router's own CA)",
        "",
    )
    add("caddy", "the Caddy binary the router runs", defaults.caddy)
    add(
        "drain",
        "seconds an old container keeps serving after its successor is applied, so routers "
        "following the events move first (default: 2 with --router, else 0)",
        -1.0,
    )
    add(
        "access-token",
        "require 'authorization: Bearer <token>' on every call but health (prefer the env "
        "variable: flags show in the process list)",
        "",
    )
    add("tls-cert", "PEM certificate chain: serve TLS", "")
    add("tls-key", "PEM private key of --tls-cert", "")
    add("tls-client-ca", "PEM CA: require client certificates it signed (mutual TLS)", "")
    add(
        "max-concurrent-rpcs",
        "calls (watch streams included) served at once; more get RESOURCE_EXHAUSTED",
        defaults.max_concurrent_rpcs,
    )
    add("max-message-size", "largest request in bytes", defaults.max_message_bytes)
    add(
        "rpc-timeout",
        "seconds a call may run on the server before DEADLINE_EXCEEDED (watches excepted)",
        defaults.rpc_timeout,
    )
    add(
        "watch-heartbeat",
        "seconds of silence after which a WatchPortEvents stream gets a progress message",
        defaults.watch_heartbeat,
    )
    add("event-retention", "port events the log keeps at most", defaults.event_retention)
    add(
        "event-max-age",
        "seconds after which port events are dropped from the log (0: never)",
        defaults.event_max_age,
    )
    add(
        "event-compaction-interval",
        "seconds between compactions of the event log",
        defaults.event_compaction_interval,
    )
    add(
        "event-buffer",
        "recent port events kept in memory for watchers (older ones are read from the log)",
        defaults.event_buffer,
    )
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Parse flags and environment into :class:`Settings` (exits with usage on bad values)."""
    env = os.environ if environ is None else environ
    parser = build_parser(env)
    ns = parser.parse_args(argv)
    try:
        settings = Settings(
            listen=str(ns.listen),
            db_path=Path(str(ns.db_path)),
            docker_host=str(ns.docker_host) if ns.docker_host else None,
            published_range=PortRange.parse(str(ns.published_port_range)),
            target_range=PortRange.parse(str(ns.target_port_range)),
            reserved_ports=parse_ports(str(ns.reserved_ports)),
            instance=str(ns.instance),
            publish_address=str(ns.publish_address),
            public_host=str(ns.public_host),
            reconcile_interval=float(ns.reconcile_interval),
            ready_timeout=float(ns.ready_timeout),
            log_level=str(ns.log_level).upper(),
            watch_heartbeat=_positive(float(ns.watch_heartbeat), "--watch-heartbeat"),
            event_retention=int(ns.event_retention),
            event_buffer=int(ns.event_buffer),
            runtime=str(ns.runtime).lower(),
            access_token=str(ns.access_token),
            access_file=Path(ns.access_file) if ns.access_file else None,
            tls_cert=Path(ns.tls_cert) if ns.tls_cert else None,
            tls_key=Path(ns.tls_key) if ns.tls_key else None,
            tls_client_ca=Path(ns.tls_client_ca) if ns.tls_client_ca else None,
            max_concurrent_rpcs=int(ns.max_concurrent_rpcs),
            max_message_bytes=int(ns.max_message_size),
            rpc_timeout=_positive(float(ns.rpc_timeout), "--rpc-timeout"),
            allow_bind_mounts=bool(ns.allow_bind_mounts),
            durability=str(ns.durability).lower(),
            router=str(ns.router).lower(),
            router_http=str(ns.router_http),
            router_https=str(ns.router_https),
            router_upstream_host=str(ns.router_upstream_host),
            router_acme_email=str(ns.router_acme_email),
            caddy=str(ns.caddy),
            drain=float(ns.drain),
            event_max_age=float(ns.event_max_age),
            event_compaction_interval=_positive(
                float(ns.event_compaction_interval), "--event-compaction-interval"
            ),
        )
        if bool(settings.tls_cert) != bool(settings.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if settings.tls_client_ca and not settings.tls_cert:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        if settings.max_concurrent_rpcs < 1 or settings.max_message_bytes < 1024:
            raise ValueError("--max-concurrent-rpcs must be >= 1 and --max-message-size >= 1024")
        if settings.log_level not in LOG_LEVELS:
            raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        if settings.durability not in DURABILITIES:
            raise ValueError(f"--durability must be one of {', '.join(DURABILITIES)}")
        if settings.router not in ROUTERS:
            raise ValueError("--router must be caddy (or empty for none)")
        if not settings.drain < float("inf"):
            raise ValueError(f"--drain must be finite, got {ns.drain}")
        settings.all_reserved  # noqa: B018 - validates the router's addresses early
        if settings.runtime not in RUNTIMES:
            raise ValueError(f"--runtime must be one of {', '.join(RUNTIMES)}")
        if settings.event_retention < 1 or settings.event_buffer < 1:
            raise ValueError("--event-retention and --event-buffer must be at least 1")
        if not 0 <= settings.ready_timeout < float("inf"):
            raise ValueError(f"--ready-timeout must be finite and >= 0, got {ns.ready_timeout}")
        settings.listen_port  # noqa: B018 - validates the listen address early
    except ValueError as exc:
        parser.error(str(exc))
    return settings


def _flag(value: str | None, default: bool) -> bool:
    """An environment variable as a boolean flag (1/true/yes/on or 0/false/no/off)."""
    if value is None or not value.strip():
        return default
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"miasma-server: expected true or false, got {value!r}")


def _positive(value: float, flag: str) -> float:
    if value <= 0:
        raise ValueError(f"{flag} must be positive, got {value:g}")
    return value

"""The router on the real engine with the real proxy (Caddy, from Debian): the README's
routing steps as a user runs them, no failed request through 20 port moves under steady
load, TLS from Caddy's local CA, and the server's restart (docs/routing.md)."""

from __future__ import annotations

import http.client
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from miasma_client import MiasmaClient, route

from miasma_grpc.access import token_hash
from scripts import engine
from tests.polling import eventually
from tests.readme import readme_block
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

IMAGE = "miasma-test/busybox:latest"
MIASMA = str(Path(sys.executable).with_name("miasma"))
# Says which container answered: GEN is set anew with every move.
SERVE = 'echo "gen ${GEN:-0}" > /tmp/index.html; exec httpd -f -p $PORT -h /tmp'
MOVES = 20
TOKEN = "ops-token"
SWITCH_MARGIN = 0.5  # seconds after a rollout is applied by which the router has moved


def current_test() -> str:
    """The test under way (its README block is named after it)."""
    return os.environ["PYTEST_CURRENT_TEST"].split("::")[1].split(" ")[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Routed:
    server: ServerProcess
    http: int
    https: int

    @property
    def root_ca(self) -> Path:
        """Caddy's local CA (made under the router's directory, beside the database)."""
        return self.server.db_path.parent / "router/data/pki/authorities/local/root.crt"

    def get(self, host: str, path: str = "/") -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": host})
            reply = conn.getresponse()
            return reply.status, reply.read().decode()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def caddy() -> str:
    """Debian's caddy (installed by scripts/caddy.sh where missing)."""
    return engine.ensure_caddy()


@pytest.fixture
def routed(
    make_server: Callable[..., ServerProcess], caddy: str, tmp_path: Path
) -> Iterator[Routed]:
    """A server with a router, asking every caller for a token (the access file names
    one admin): the router's controller watches as its own viewer identity."""
    http_port, https_port = free_port(), free_port()
    access = tmp_path / "access.toml"
    access.write_text(f'[[token]]\nname = "ops"\nrole = "admin"\nsha256 = "{token_hash(TOKEN)}"\n')
    server = make_server(
        published_range="29701-29749",
        extra_args=["--router", "caddy", "--caddy", caddy, "--access-file", str(access),
                    "--router-http", f"127.0.0.1:{http_port}",
                    "--router-https", f"127.0.0.1:{https_port}"],
    )  # fmt: skip
    yield Routed(server, http_port, https_port)
    stop_with_its_caddy(server)


def stop_with_its_caddy(server: ServerProcess) -> None:
    """Stop the server: each Caddy it started is stopped with it (by its PID)."""
    assert server.log_path is not None
    started = re.findall(r"router: caddy (\d+) serving", server.log_path.read_text())
    server.stop()
    assert started
    for pid in map(int, started):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def answers(routed: Routed, host: str, body: str = "gen 0\n") -> None:
    """Wait until ``host`` answers ``body`` through the router."""

    def check() -> None:
        assert routed.get(host) == (200, body)

    eventually(check, f"{host} to answer through the router", retry_on=(AssertionError, OSError))


def cli(routed: Routed, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
    env |= {"MIASMA_SERVER": routed.server.address, "MIASMA_CONFIG": str(tmp_path / "c.json"),
            "MIASMA_TOKEN": TOKEN}  # fmt: skip
    done = subprocess.run([MIASMA, *args], capture_output=True, text=True, env=env, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, f"miasma {' '.join(args)}: {done.stderr}"
    return done


@dataclass
class Load:
    """Keep-alive clients that never retry, each sending GET / to the router in a loop
    (``pause`` seconds apart: steady load, not a CPU hog beside the server); every answer
    is noted with when its request was sent."""

    routed: Routed
    host: str
    clients: int = 4
    pause: float = 0.01
    answers: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _client(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.routed.http, timeout=10)
                conn.request("GET", "/", headers={"Host": self.host})
                reply = conn.getresponse()
                body = reply.read().decode().strip()
                if reply.status != 200:
                    self.failures.append(f"{reply.status} {body}")
                else:
                    self.answers.append((sent, body))
                time.sleep(self.pause)
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn = None

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._client) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_the_readme_routing_steps_and_no_failed_request_through_20_port_moves(
    routed: Routed, tmp_path: Path
) -> None:
    """The README's routing steps as written (the router's ports and the port moved to are
    the test's): create an app, route web.localhost to it, it answers through the router,
    a port edit under a request loop fails none. Then, under steady load (4 keep-alive
    clients that never retry), 20 moves of its published port: no request fails, and none
    sent once a move is applied (plus the proxy's refresh) reaches an older container."""
    ports = {"8080": str(routed.http), "8443": str(routed.https), "8081": str(free_port())}
    for line in readme_block(f"tests/e2e/{Path(__file__).name}::{current_test()}"):
        for documented, used in ports.items():
            line = line.replace(documented, used)
        command, _, said = (part.strip() for part in line.partition("#"))
        args = shlex.split(command)
        if args[0] == "miasma" and args[1] == "apps:edit":
            with Load(routed, "web.localhost") as load:
                time.sleep(0.3)
                cli(routed, tmp_path, *args[1:])
                time.sleep(0.5)
            assert load.failures == [], load.failures[:5]
            assert {body for _, body in load.answers} == {"gen 0"}
        elif args[0] == "miasma":
            shown = cli(routed, tmp_path, *args[1:]).stdout
            for word in said.split(", "):
                assert word in shown
        elif args[0] == "curl":
            host = args[1].split("/")[2].split(":")[0]
            answers(routed, host, f"{said}\n")
    status, body = routed.get("nobody.localhost")
    assert (status, body) == (404, "miasma: no app is routed at this host and path\n")

    applied: list[tuple[float, str]] = []  # (when a move was applied, what answers since)
    with (
        MiasmaClient(routed.server.address, token=TOKEN, timeout=60) as client,
        Load(routed, "web.localhost") as load,
    ):
        time.sleep(0.5)
        port = client.get_app("web").bindings[0].published_port
        for move in range(1, MOVES + 1):
            new = 29760 + move
            client.edit_app("web", add_published=[new], remove_published=[port],
                            set_env={"GEN": str(move)})  # fmt: skip
            applied.append((time.monotonic(), f"gen {move}"))
            port = new
            time.sleep(0.1)
        time.sleep(1.0)
    assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:5]}"
    assert len(load.answers) > 20 * MOVES
    stale = [
        (sent, body)
        for sent, body in load.answers
        for when, expected in applied
        if sent > when + SWITCH_MARGIN and int(body.split()[1]) < int(expected.split()[1])
    ]
    assert stale == [], f"{len(stale)} requests reached an older container: {stale[:5]}"
    assert load.answers[-1][1] == f"gen {MOVES}"


def test_a_tls_route_is_served_with_the_routers_local_ca(routed: Routed) -> None:
    """A route with tls answers on the HTTPS port with a certificate of Caddy's own CA
    for its host (on demand); a route without tls is not served there."""
    with MiasmaClient(routed.server.address, token=TOKEN, timeout=60) as client:
        client.create_app("secure", IMAGE, command=["sh", "-c", SERVE])
        client.edit_app("secure", add_routes=[route("secure.localhost", tls=True)])
        client.create_app("plain", IMAGE, command=["sh", "-c", SERVE])
        client.edit_app("plain", add_routes=[route("plain.localhost")])
    answers(routed, "secure.localhost")

    def https(host: str) -> tuple[int, str]:
        context = ssl.create_default_context(cafile=str(routed.root_ca))
        conn = http.client.HTTPSConnection("127.0.0.1", routed.https, timeout=10,
                                           context=context)  # fmt: skip
        conn.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", routed.https), timeout=10),
            server_hostname=host,
        )
        conn.request("GET", "/", headers={"Host": host})
        reply = conn.getresponse()
        return reply.status, reply.read().decode()

    def secure() -> None:
        assert https("secure.localhost") == (200, "gen 0\n")

    eventually(secure, "the https route", retry_on=(AssertionError, OSError))
    assert https("plain.localhost")[0] == 404


def test_routes_answer_again_after_a_restart_of_the_server(routed: Routed, tmp_path: Path) -> None:
    """Miasma's traefik:set spelling works; a Caddy that dies is started again with the
    routes in force; the server (and its Caddy) restarts: the routes are served again
    from the snapshot."""
    cli(routed, tmp_path, "apps:create", "api", "-i", IMAGE, "--", "sh", "-c", SERVE)
    cli(routed, tmp_path, "traefik:set", "-a", "api", "--rule",
        "Host(`site.localhost`) && PathPrefix(`/`)")  # fmt: skip
    answers(routed, "site.localhost")
    plugins = cli(routed, tmp_path, "plugins").stdout
    assert "TRAEFIK  enabled: caddy" in plugins
    assert routed.server.log_path is not None
    [pid] = re.findall(r"router: caddy (\d+) serving", routed.server.log_path.read_text())
    os.kill(int(pid), signal.SIGKILL)  # the server's child: it dies, as a crash would

    def started_again() -> None:
        assert routed.server.log_path is not None
        log = routed.server.log_path.read_text()
        assert len(re.findall(r"router: caddy (\d+) serving", log)) == 2

    eventually(started_again, "caddy to be started again")
    answers(routed, "site.localhost")
    routed.server.stop()
    routed.server.start()
    answers(routed, "site.localhost")


def test_a_swarm_app_is_routed_through_its_host_mode_port(
    make_server: Callable[..., ServerProcess], swarm_host: str, caddy: str
) -> None:
    """On a swarm the router reaches a service at its published port: a host-mode port
    here (this engine has no ingress routing mesh: docs/routing.md); after a move the
    route answers from the new port."""
    http_port = free_port()
    server = make_server(
        docker_host=swarm_host, runtime="swarm", published_range="19001-19999",
        extra_args=["--router", "caddy", "--caddy", caddy,
                    "--router-http", f"127.0.0.1:{http_port}",
                    "--router-https", f"127.0.0.1:{free_port()}"],
    )  # fmt: skip
    routed = Routed(server, http_port, 0)
    with MiasmaClient(server.address, timeout=60) as client:
        client.create_app("web", IMAGE, command=["sh", "-c", SERVE],
                          published_ports=["19411/host"])  # fmt: skip
        client.edit_app("web", add_routes=[route("swarm.localhost")])
        answers(routed, "swarm.localhost")
        client.edit_app("web", add_published=["19412/host"], remove_published=[19411],
                        set_env={"GEN": "1"})  # fmt: skip
        answers(routed, "swarm.localhost", "gen 1\n")
    stop_with_its_caddy(server)

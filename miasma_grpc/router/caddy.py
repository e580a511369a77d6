"""Caddy, the router's proxy: its configuration, and the process Miasma runs it as
(docs/routing.md).

Why Caddy: users run it, it is in Debian, it takes its whole configuration over an
admin API (no files to template, no reload command), and its own local CA gives
``https://web.localhost`` a certificate with nothing to set up. Each route is a
Caddy route whose upstream Caddy looks up as an SRV record (router/dns.py), so a
port move changes no Caddy configuration: only adding or removing a route does.

Caddy runs as a child of the server, with its data (local CA, certificates) in the
router's directory, its admin API on a unix socket there, and nothing written to
``$HOME``; it is stopped (by its PID) when the server stops, and started again if it
dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from miasma_grpc.router.dns import REFRESH, srv_name

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per admin call

START_TIMEOUT = 15.0  # seconds for Caddy's admin API to answer after it starts
STOP_GRACE = 5.0
SERVER = "miasma"


class RouterFailure(Exception):
    """Caddy is missing, did not start, or refused a configuration (the server's log, and
    its start-up, say so: no client sees it)."""

    @property
    def message(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class CaddyRoute:
    """One route as Caddy serves it: its SRV name is ``<id>.miasma.``."""

    id: str
    host: str
    path: str = ""
    tls: bool = False


@dataclass(frozen=True)
class Listen:
    """Where the router serves: HTTP and HTTPS addresses (HOST:PORT)."""

    http: str = "127.0.0.1:8080"
    https: str = "127.0.0.1:8443"

    @property
    def http_port(self) -> int:
        return int(self.http.rpartition(":")[2])

    @property
    def https_port(self) -> int:
        return int(self.https.rpartition(":")[2])


def caddy_config(
    routes: Sequence[CaddyRoute],
    *,
    listen: Listen,
    dns_port: int,
    data: Path,
    admin_socket: Path,
    acme_email: str = "",
) -> dict[str, Any]:
    """Caddy's whole configuration: one server on both addresses, a route per host and
    path (the longest path of a host first), a 404 for any other host."""
    resolver = {"addresses": [f"udp/127.0.0.1:{dns_port}"]}
    ordered = sorted(routes, key=lambda r: (r.host, -len(r.path), r.path))
    handlers = [
        {
            "@id": f"miasma-{route.id}",
            "match": [_match(route)],
            "handle": [
                {
                    "handler": "reverse_proxy",
                    "dynamic_upstreams": {
                        "source": "srv",
                        "name": srv_name(route.id),
                        "refresh": f"{int(REFRESH * 1000)}ms",
                        "resolver": resolver,
                        "dial_timeout": "2s",
                    },
                    "transport": {"protocol": "http", "resolver": resolver},
                }
            ],
            "terminal": True,
        }
        for route in ordered
    ]
    handlers.append({
        "@id": "miasma-no-route",
        "handle": [{"handler": "static_response", "status_code": 404,
                    "body": "miasma: no app is routed at this host and path\n"}],
        "terminal": True,
    })  # fmt: skip
    policies: list[dict[str, Any]] = []
    public = sorted({r.host for r in routes if r.tls and not _local(r.host)})
    if acme_email and public:
        policies.append({"subjects": public, "issuers": [{"module": "acme", "email": acme_email}]})
    policies.append({"issuers": [{"module": "internal"}], "on_demand": True})
    return {
        "admin": {
            "listen": f"unix/{admin_socket}",
            "origins": ["localhost"],
            "config": {"persist": False},
        },
        "storage": {"module": "file_system", "root": str(data)},
        "logging": {"logs": {"default": {"level": "ERROR"}}},
        "apps": {
            "http": {
                "http_port": listen.http_port,
                "https_port": listen.https_port,
                "servers": {
                    SERVER: {
                        "listen": [listen.http, listen.https],
                        "protocols": ["h1", "h2"],  # HTTP/3 is cut at every change (2.6)
                        "automatic_https": {"disable_redirects": True},
                        "tls_connection_policies": [{}],
                        "routes": handlers,
                    }
                },
            },
            "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
            "tls": {"automation": {"policies": policies}},
        },
    }


def _match(route: CaddyRoute) -> dict[str, Any]:
    match: dict[str, Any] = {"host": [route.host]}
    if route.path:
        match["path"] = [route.path, f"{route.path}/*"]
    if not route.tls:
        match["protocol"] = "http"  # not on the HTTPS port
    return match


def _local(host: str) -> bool:
    """Whether ``host`` is a name no public CA signs for (the local CA does)."""
    return host == "localhost" or host.endswith((".localhost", ".local", ".internal", ".test"))


class Caddy:
    """A Caddy process of Miasma's, and its admin API."""

    def __init__(self, binary: str, home: Path) -> None:
        self.binary = binary
        self.home = home.resolve()  # its data: the local CA, certificates (it runs elsewhere)
        # A unix socket's path is short (108 bytes): it lives in a directory of its own.
        self.sockets = Path(tempfile.mkdtemp(prefix="miasma-caddy-"))
        self.admin_socket = self.sockets / "admin.sock"
        self.process: asyncio.subprocess.Process | None = None
        self.config: dict[str, Any] | None = None
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(self.admin_socket)),
            base_url="http://localhost",
            timeout=10.0,
        )

    @property
    def root_certificate(self) -> Path:
        """The local CA's root (for ``curl --cacert``): made at Caddy's first TLS route."""
        return self.home / "data" / "pki" / "authorities" / "local" / "root.crt"

    async def start(self, config: dict[str, Any]) -> None:
        """Run Caddy with ``config``; returns once its admin API answers."""
        path = shutil.which(self.binary)
        if path is None:
            raise RouterFailure(
                f"the router needs Caddy, and {self.binary!r} is not installed: "
                "apt-get install caddy (Debian), or --caddy PATH",
            )
        for sub in ("data", "config", "run"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.admin_socket.unlink(missing_ok=True)
        config_file = self.home / "run" / "caddy.json"
        config_file.write_text(json.dumps(config, indent=1), encoding="utf-8")
        env = {
            **os.environ,
            "HOME": str(self.home),  # Caddy writes nothing outside its directory
            "XDG_DATA_HOME": str(self.home / "data"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
        }
        with (self.home / "caddy.log").open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                path, "run", "--config", str(config_file),
                cwd=self.home / "run", env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=output, stderr=output, start_new_session=True,
            )  # fmt: skip
        self.config = config
        await self._await_admin()
        log.info("router: caddy %d serving (admin %s)", self.process.pid, self.admin_socket)

    async def _await_admin(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise RouterFailure(
                    f"caddy exited at start ({self.process.returncode}): see "
                    f"{self.home / 'caddy.log'}"
                )
            with contextlib.suppress(httpx.TransportError):
                if (await self._client.get("/config/")).status_code == httpx.codes.OK:
                    return
            await asyncio.sleep(0.05)
        raise RouterFailure(f"caddy's admin API did not answer in {START_TIMEOUT:g} s")

    async def load(self, config: dict[str, Any]) -> None:
        """Replace Caddy's whole configuration (it keeps its listeners: no refused
        connection)."""
        try:
            reply = await self._client.post("/load", json=config)
        except httpx.TransportError as exc:
            raise RouterFailure(f"caddy's admin API: {exc}") from exc
        if reply.status_code != httpx.codes.OK:
            raise RouterFailure(f"caddy refused the configuration: {reply.text.strip()}")
        self.config = config

    async def wait(self) -> int:
        """Until the process ends; its exit code."""
        assert self.process is not None
        return await self.process.wait()

    async def stop(self) -> None:
        """Stop the process (SIGTERM to its PID, SIGKILL after a grace period)."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def close(self) -> None:
        """Stop the process and let go of the admin client and the socket directory."""
        await self.stop()
        await self._client.aclose()
        shutil.rmtree(self.sockets, ignore_errors=True)

"""The router: Caddy, the DNS answers it asks for upstreams, and the route controller
that follows the event stream, run together by the server (``--router caddy``;
docs/routing.md).

The controller is a client of the public API like any other: it watches over a
private unix socket of the server's, as the identity ``router`` (role viewer), so
the access check, the scope rules and the stream's resumption are the ones every
client gets.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from miasma.v1 import apps_pb2_grpc

from miasma_grpc.router.caddy import Caddy, CaddyRoute, Listen, RouterFailure, caddy_config
from miasma_grpc.router.controller import RouteController, Table
from miasma_grpc.router.dns import Answers, serve

log = logging.getLogger(__name__)

RESTART = (1.0, 30.0)  # seconds: first and longest wait before a dead Caddy is started again


@dataclass(frozen=True)
class RouterSettings:
    """How the router runs."""

    home: Path  # Caddy's data: the local CA, certificates, its log
    listen: Listen = field(default_factory=Listen)
    upstream_host: str = "127.0.0.1"  # where apps' published ports are reached
    caddy: str = "caddy"  # the binary
    acme_email: str = ""  # ACME (Let's Encrypt) for public TLS names; "" for none


class Router:
    """Caddy and what keeps it in step, until cancelled."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.answers = Answers()
        self.caddy = Caddy(settings.caddy, settings.home)
        self.routes: tuple[CaddyRoute, ...] = ()
        self.dns_port = 0
        self.controller: RouteController | None = None

    def config(self, routes: tuple[CaddyRoute, ...]) -> dict[str, Any]:
        """Caddy's configuration for ``routes``."""
        return caddy_config(
            routes, listen=self.settings.listen, dns_port=self.dns_port,
            data=self.caddy.home / "data", admin_socket=self.caddy.admin_socket,
            acme_email=self.settings.acme_email,
        )  # fmt: skip

    async def start(self) -> None:
        """Answer DNS, and start Caddy with no route yet."""
        self.dns_port = await serve(self.answers)
        await self.caddy.start(self.config(()))

    async def run(self, target: str, token: str) -> None:
        """Follow the server at ``target`` (a gRPC address) as the router's ``token``, and
        keep Caddy running, until cancelled; then stop Caddy."""
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                self.controller = RouteController(
                    apps_pb2_grpc.AppServiceStub(channel), self.apply,
                    upstream_host=self.settings.upstream_host, metadata=metadata,
                )  # fmt: skip
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self.controller.run(), name="router-controller")
                    tasks.create_task(self._supervise(), name="router-caddy")
        finally:
            await self.caddy.close()
            if self.answers.transport is not None:
                self.answers.transport.close()

    async def apply(self, table: Table) -> None:
        """Serve ``table``: its upstreams at once (Caddy asks again within the DNS refresh),
        its routes through Caddy's admin API when they changed."""
        self.answers.set(table.upstreams)
        if table.routes != self.routes:
            try:
                await self.caddy.load(self.config(table.routes))
                self.routes = table.routes
            except RouterFailure as exc:  # Caddy restarting: the supervisor loads them
                log.error("router: %s", exc.message)
        log.info("router: %d routes, %d served", len(table.routes), len(table.upstreams))

    async def _supervise(self) -> None:
        """Start Caddy again, with the routes in force, whenever it exits."""
        wait = RESTART[0]
        while True:
            code = await self.caddy.wait()
            log.error("router: caddy exited (%s); starting it again in %g s (see %s)",
                      code, wait, self.settings.home / "caddy.log")  # fmt: skip
            await asyncio.sleep(wait)
            try:
                await self.caddy.start(self.config(self.routes))
                wait = RESTART[0]
            except (RouterFailure, OSError) as exc:
                log.error("router: caddy did not start again: %s", exc)
                wait = min(wait * 2, RESTART[1])

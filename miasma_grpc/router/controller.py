"""The route controller: follows ``WatchPortEvents`` like any client and keeps Caddy's
routes and their upstreams in step (docs/routing.md).

Only the events say where an app serves: a route's upstream becomes the new port
when the app's rollout is applied (``ROLLOUT_APPLIED``, or a snapshot), never at the
edit that asks for it (``CHANGED``: the old container still serves, and keeps
serving through the drain while this moves). A broken stream is resumed after the
last revision seen; one whose revision the log no longer has starts over from a
snapshot.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from miasma.v1 import apps_pb2, apps_pb2_grpc

from miasma_grpc.router.caddy import CaddyRoute
from miasma_grpc.router.dns import Upstream

log = logging.getLogger(__name__)

RECONNECT = (0.1, 5.0)  # seconds: first and longest wait before a stream is opened again
# The events after which the app serves on the bindings they carry; after the others it
# serves where it did (an edit is not yet rolled out; a failed one was undone).
SERVES_ON = frozenset({apps_pb2.PORT_EVENT_KIND_SNAPSHOT, apps_pb2.PORT_EVENT_KIND_ROLLOUT_APPLIED})


def route_id(host: str, path: str) -> str:
    """A route's stable name in Caddy and DNS (a DNS label); a host and path belong to
    one app at a time."""
    digest = hashlib.sha256(f"{host}{path}".encode()).hexdigest()[:12]
    return f"r{digest}"


@dataclass
class AppState:
    """What the router knows of one app: its routes, and the ports it serves on now."""

    routes: tuple[apps_pb2.Route, ...] = ()
    serving: dict[int, int] = field(default_factory=dict)  # slot -> published port


@dataclass(frozen=True)
class Table:
    """What Caddy and the DNS answers are made of."""

    routes: tuple[CaddyRoute, ...]
    upstreams: dict[str, Upstream]


Apply = Callable[[Table], Awaitable[None]]


class RouteController:
    """Keeps :class:`Table` in step with the event stream, calling ``apply`` with each new
    one (after a snapshot, and after every event that changes it)."""

    def __init__(
        self,
        stub: apps_pb2_grpc.AppServiceAsyncStub,
        apply: Apply,
        *,
        upstream_host: str = "127.0.0.1",
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.stub = stub
        self.apply = apply
        self.upstream_host = upstream_host
        self.metadata = tuple(metadata)
        self.apps: dict[str, AppState] = {}
        self.revision = 0  # the last revision handled (0: none: start with a snapshot)
        self.table = Table((), {})

    async def run(self) -> None:
        """Follow the stream until cancelled, resuming it whenever it breaks."""
        wait = RECONNECT[0]
        while True:
            try:
                await self._follow()
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:  # compacted: start over
                    log.warning("router: revision %d is no longer in the log; starting "
                                "from a snapshot", self.revision)  # fmt: skip
                    self.revision = 0
                    wait = RECONNECT[0]
                    continue
                log.info("router: event stream broke (%s); resuming after revision %d",
                         exc.code().name, self.revision)  # fmt: skip
            except Exception:  # the router must outlive its own bugs
                log.exception("router: following the events failed; starting over")
                self.revision = 0
            await asyncio.sleep(wait)
            wait = min(wait * 2, RECONNECT[1])

    async def _follow(self) -> None:
        request = apps_pb2.WatchPortEventsRequest(name="apps/-", start_revision=self.revision)
        stream = self.stub.WatchPortEvents(request, metadata=self.metadata)
        fresh = self.revision == 0
        if fresh:
            snapshot: dict[str, AppState] = {}
        async for item in stream:
            kind = item.WhichOneof("payload")
            if kind == "event":
                event = item.event
                if fresh:
                    snapshot[event.app] = _state(event)
                else:
                    self._handle(event)
                    await self._publish()
                self.revision = max(self.revision, event.revision)
            elif kind == "snapshot_complete":
                fresh = False
                self.apps = snapshot
                self.revision = item.snapshot_complete.revision
                await self._publish()
            else:
                self.revision = max(self.revision, item.progress.revision)

    def _handle(self, event: apps_pb2.PortEvent) -> None:
        if event.kind == apps_pb2.PORT_EVENT_KIND_RELEASED:
            self.apps.pop(event.app, None)
            return
        state = self.apps.setdefault(event.app, AppState())
        state.routes = tuple(event.routes)
        if event.kind in SERVES_ON:
            state.serving = _serving(event)

    async def _publish(self) -> None:
        table = self._table()
        if table != self.table:
            await self.apply(table)
            self.table = table

    def _table(self) -> Table:
        routes: list[CaddyRoute] = []
        upstreams: dict[str, Upstream] = {}
        for _, state in sorted(self.apps.items()):
            for route in state.routes:
                rid = route_id(route.host, route.path_prefix)
                routes.append(CaddyRoute(rid, route.host, route.path_prefix, route.tls))
                if route.slot in state.serving:
                    upstreams[rid] = Upstream(self.upstream_host, state.serving[route.slot])
        return Table(tuple(routes), upstreams)


def _serving(event: apps_pb2.PortEvent) -> dict[int, int]:
    return {
        slot: b.published_port
        for slot, b in enumerate(event.new_bindings)
        if b.protocol != apps_pb2.PROTOCOL_UDP
    }


def _state(event: apps_pb2.PortEvent) -> AppState:
    return AppState(tuple(event.routes), _serving(event))

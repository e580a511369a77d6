"""Routes: a hostname (and a path prefix) that the router sends to one of an app's ports
(docs/routing.md).

A route names the app's port slot (0: ``PORT``, 1: ``PORT_2`` …), not a port
number, so it follows the app through every port move: the router reads the slot's
published port from the port events. A host and path belong to one app at most.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from miasma_grpc.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from miasma_grpc.domain.models import Binding, Protocol, Route

MAX_ROUTES = 32
MAX_HOST = 253
MAX_PATH = 256
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_PATH = re.compile(r"(/[A-Za-z0-9._~!$&'()+,;=:@-]+)+")


def validate_host(host: str, field: str) -> str:
    """``host`` lower-cased, if it is a DNS name; INVALID_ARGUMENT on ``field`` if not."""
    name = host.strip().lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > MAX_HOST or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidArgument.field(
            field,
            f"{host[:80]!r} is not a host name: use DNS labels of letters, digits and '-', "
            "joined by dots, e.g. web.localhost or api.example.com (no scheme, port or path)",
            reason="INVALID_ROUTE",
        )
    return name


def validate_path(path: str, field: str) -> str:
    """``path`` without a trailing "/" ("" or "/" for every path), if it is a plain path
    prefix; INVALID_ARGUMENT on ``field`` if not."""
    trimmed = path.strip().rstrip("/")
    if trimmed and (
        len(trimmed) > MAX_PATH
        or not _PATH.fullmatch(trimmed)
        or any(part in (".", "..") for part in trimmed.split("/"))
    ):
        raise InvalidArgument.field(
            field,
            f"{path[:80]!r} is not a path prefix: start with '/', then letters, digits and "
            "-._~ (no '..', '*', '?' or '%'), e.g. /api",
            reason="INVALID_ROUTE",
        )
    return trimmed


def validate_routes(
    routes: Sequence[Route], bindings: Sequence[Binding], field: str
) -> tuple[Route, ...]:
    """``routes`` normalised and sorted, each to a TCP slot the app has, each host and path
    once; INVALID_ARGUMENT (or FAILED_PRECONDITION for a slot the app lacks) if not."""
    seen: dict[tuple[str, str], int] = {}
    result: list[Route] = []
    for index, route in enumerate(routes):
        where = f"{field}[{index}]"
        host = validate_host(route.host, f"{where}.host")
        path = validate_path(route.path, f"{where}.path_prefix")
        if route.slot < 0:
            raise InvalidArgument.field(f"{where}.slot", "must be 0 (PORT) or more")
        if route.slot >= len(bindings):
            raise FailedPrecondition(
                f"route {host}{path} goes to port slot {route.slot}, and the app has "
                f"{_slots(len(bindings))}: publish a port first (or remove the route)",
                reason="ROUTE_WITHOUT_PORT",
            )
        if bindings[route.slot].protocol is not Protocol.TCP:
            raise InvalidArgument.field(
                f"{where}.slot",
                f"slot {route.slot} is UDP ({bindings[route.slot].published_port}/udp): "
                "the router speaks HTTP, over TCP",
                reason="INVALID_ROUTE",
            )
        key = (host, path)
        if key in seen:
            raise InvalidArgument.field(where, f"{host}{path} is routed twice (also #{seen[key]})")
        seen[key] = index
        result.append(Route(host, path, route.slot, route.tls))
    if len(result) > MAX_ROUTES:
        raise InvalidArgument.field(field, f"at most {MAX_ROUTES} routes per app")
    return tuple(sorted(result))


def _slots(count: int) -> str:
    return {0: "no port", 1: "only slot 0 (PORT)"}.get(count, f"slots 0-{count - 1}")


@dataclass(frozen=True)
class RouteEdit:
    """Routes to add (a host and path the app has already is replaced) and to remove (by
    host and path), in one change (``routes:set`` / ``routes:rm``)."""

    add: tuple[Route, ...] = ()
    remove: tuple[Route, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)

    def applied_to(
        self, routes: tuple[Route, ...], bindings: Sequence[Binding]
    ) -> tuple[Route, ...]:
        """``routes`` without those removed, then with those added; removing one the app
        does not have is INVALID_ARGUMENT."""
        kept = {r.key: r for r in routes}
        for index, route in enumerate(self.remove):
            key = (
                validate_host(route.host, f"remove_routes[{index}].host"),
                validate_path(route.path, f"remove_routes[{index}].path_prefix"),
            )
            if kept.pop(key, None) is None:
                raise InvalidArgument.field(
                    f"remove_routes[{index}]",
                    f"the app has no route {''.join(key)} (it has "
                    f"{', '.join(map(str, routes)) or 'none'})",
                )
        added = validate_routes(self.add, bindings, "add_routes")
        kept |= {r.key: r for r in added}
        return validate_routes(list(kept.values()), bindings, "add_routes")


def taken(routes: Iterable[Route], others: Iterable[tuple[str, Iterable[Route]]]) -> None:
    """ALREADY_EXISTS naming the app if another app has one of ``routes``' host and path."""
    wanted = {r.key: r for r in routes}
    if not wanted:
        return
    for app, theirs in others:
        for route in theirs:
            if route.key in wanted:
                raise AlreadyExists(
                    f"{route} is routed to app {app!r} already: remove it there first",
                    reason="ROUTE_TAKEN",
                    resource=f"apps/{app}",
                )

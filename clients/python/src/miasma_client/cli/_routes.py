"""``miasma routes``, ``routes:set``, ``routes:rm``, and Miasma's own spelling of them:
``traefik:set`` and ``plugins`` (the router is the server's: ``--router caddy``).

A route sends a host name (and a path prefix) to one of the app's port slots; the
router follows the slot's published port through every port move (docs/routing.md).
"""

from __future__ import annotations

import re

import click
from miasma.v1 import apps_pb2
from rich.table import Table

from miasma_client._client import MiasmaClient
from miasma_client._operations import route
from miasma_client.cli._context import EXIT_CONFLICT, CliError, State, pass_state
from miasma_client.cli._params import F, app_option, json_option
from miasma_client.cli._render import out, print_json

# Traefik's rule syntax, as Miasma's traefik:set --rule took it: Host(`a`) [&& PathPrefix(`/p`)]
_RULE_PART = re.compile(r"\s*(Host|PathPrefix)\(\s*`([^`]*)`\s*\)\s*")


def route_urls(info: apps_pb2.GetServerInfoResponse, found: apps_pb2.Route) -> list[str]:
    """Where a route answers, if the server runs a router."""
    if not info.router:
        return []
    urls = [f"http://{found.host}:{info.router_http_port}{found.path_prefix or '/'}"]
    if found.tls:
        urls.append(f"https://{found.host}:{info.router_https_port}{found.path_prefix or '/'}")
    return urls


def _routes_table(client: MiasmaClient, apps: list[apps_pb2.App]) -> Table:
    info = client.server_info()
    table = Table(box=None, pad_edge=False)
    for column in ("HOST", "PATH", "APP", "PORT", "URL"):
        table.add_column(column)
    for app in apps:
        for found in app.routes:
            slot = app.bindings[found.slot] if found.slot < len(app.bindings) else None
            port = f"{slot.env_names[0]} ({slot.published_port})" if slot else "?"
            table.add_row(found.host, found.path_prefix or "/", app.name.removeprefix("apps/"),
                          port, " ".join(route_urls(info, found)) or "(no router)")  # fmt: skip
    return table


@click.command("routes")
@click.option("-a", "--app", "app", metavar="NAME", help="Only the routes of this app.")
@json_option()
@pass_state
def list_routes(state: State, app: str | None, as_json: bool) -> None:
    """List routes: host and path, the app and port they go to, and where they answer."""
    with state.client() as client:
        apps = [client.get_app(app)] if app else list(client.list_apps(show_hidden=True))
        routed = [a for a in apps if a.routes]
        if as_json:
            print_json([{"app": a.name, "routes": list(a.routes)} for a in routed])
        elif routed:
            out.print(_routes_table(client, routed))
        else:
            out.print("No routes." + ("" if app else " Add one: miasma routes:set -a APP --host H"))


def _set(state: State, app: str, host: str, path: str, slot: int, tls: bool, as_json: bool) -> None:
    with state.client() as client:
        edited = client.edit_app(app, add_routes=[route(host, path, slot=slot, tls=tls)]).app
        if as_json:
            print_json(edited)
            return
        info = client.server_info()
    key = (host.strip().lower().rstrip("."), path.strip().rstrip("/"))
    [made] = [r for r in edited.routes if (r.host, r.path_prefix) == key]
    urls = route_urls(info, made)
    where = f": {' '.join(urls)}" if urls else " (the server runs no router: --router caddy)"
    out.print(f"Routed {made.host}{made.path_prefix or '/'} to {app}{where}")


def _host_path_options(command: F) -> F:
    path = click.option(
        "--path", default="", metavar="PREFIX", help="Only paths under this prefix (/api)."
    )
    host = click.option(
        "--host", required=True, metavar="HOST", help="The host name (web.localhost)."
    )
    return host(path(command))


@click.command("routes:set")
@app_option()
@_host_path_options
@click.option("--slot", type=click.IntRange(min=0), default=0, show_default=True,
              help="The app's port slot: 0 is PORT, 1 is PORT_2, ...")  # fmt: skip
@click.option("--tls", is_flag=True, help="Also on the router's HTTPS port (its local CA).")
@json_option()
@pass_state
def set_route(
    state: State, app: str, host: str, path: str, slot: int, tls: bool, as_json: bool
) -> None:
    """Send HOST (and PATH) to the app: the router follows its port through every move.

    \b
      miasma routes:set -a web --host web.localhost
      miasma routes:set -a api --host web.localhost --path /api --tls
    """
    _set(state, app, host, path, slot, tls, as_json)


@click.command("routes:rm")
@app_option()
@_host_path_options
@json_option()
@pass_state
def remove_route(state: State, app: str, host: str, path: str, as_json: bool) -> None:
    """Stop routing HOST (and PATH) to the app."""
    with state.client() as client:
        edited = client.edit_app(app, remove_routes=[route(host, path)]).app
    if as_json:
        print_json(edited)
    else:
        out.print(f"Removed route {host.lower()}{path.rstrip('/') or '/'} of {app}.")


def parse_rule(rule: str) -> tuple[str, str]:
    """Traefik's ``Host(`h`)`` or ``Host(`h`) && PathPrefix(`/p`)``: (host, path)."""
    found: dict[str, str] = {}
    for part in rule.split("&&"):
        match = _RULE_PART.fullmatch(part)
        if match is None or match[1] in found:
            raise click.BadParameter(
                f"{rule!r}: only Host(`HOST`) and PathPrefix(`/PATH`), joined by &&, are "
                "understood (use --host and --path)",
                param_hint="--rule",
            )
        found[match[1]] = match[2]
    if "Host" not in found:
        raise click.BadParameter(f"{rule!r} names no Host(`...`)", param_hint="--rule")
    return found["Host"], found.get("PathPrefix", "")


@click.command("traefik:set")
@app_option()
@click.option("--host", metavar="HOST", help="The host name.")
@click.option("--path", default="", metavar="PREFIX", help="A path prefix (/api).")
@click.option("--rule", metavar="RULE", help="Traefik's Host(`h`) && PathPrefix(`/p`).")
@pass_state
def traefik_set(state: State, app: str, host: str | None, path: str, rule: str | None) -> None:
    """Miasma's spelling of routes:set (its Traefik plugin): the server's router serves it."""
    if rule:
        if host or path:
            raise click.UsageError("give --rule, or --host/--path, not both")
        host, path = parse_rule(rule)
    if not host:
        raise click.UsageError("give --host HOST (or --rule)")
    _set(state, app, host, path, 0, False, False)


@click.command("plugins")
@pass_state
def plugins(state: State) -> None:
    """Miasma's plugins: its one plugin, TRAEFIK, is this server's router."""
    with state.client() as client:
        info = client.server_info()
    if info.router:
        out.print(f"TRAEFIK  enabled: {info.router} on HTTP {info.router_http_port}, "
                  f"HTTPS {info.router_https_port} (routes: miasma routes)")  # fmt: skip
    else:
        out.print("TRAEFIK  disabled: start the server with --router caddy (README Routing)")


@click.command("plugins:enable")
@click.argument("plugin", type=click.Choice(["TRAEFIK"], case_sensitive=False))
@pass_state
def plugins_enable(state: State, plugin: str) -> None:
    """Miasma's plugins:enable TRAEFIK: here the router is the server's own setting."""
    with state.client() as client:
        info = client.server_info()
    if not info.router:
        raise CliError("the router is the server's setting: start it with --router caddy "
                       "(README Routing)", EXIT_CONFLICT)  # fmt: skip
    out.print(f"TRAEFIK is enabled: {info.router} on HTTP {info.router_http_port}.")


@click.command("plugins:disable")
@click.argument("plugin", type=click.Choice(["TRAEFIK"], case_sensitive=False))
def plugins_disable(plugin: str) -> None:
    """Miasma's plugins:disable TRAEFIK: stop the server's router by starting it without
    --router."""
    raise CliError("the router is the server's setting: start it without --router to stop it",
                   EXIT_CONFLICT)  # fmt: skip


COMMANDS = [list_routes, set_route, remove_route, traefik_set, plugins, plugins_enable,
            plugins_disable]  # fmt: skip

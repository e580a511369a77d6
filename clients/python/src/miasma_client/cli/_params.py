"""Click parameter types for ports (``8081``, ``5353/udp``, ``8081,8082``), volumes
(``pgdata:/data[:ro]``) and env pairs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click
from click.shell_completion import CompletionItem
from miasma.v1 import apps_pb2

from miasma_client._client import MiasmaClient
from miasma_client._errors import MiasmaError
from miasma_client._ports import parse_ports
from miasma_client._settings import SettingsError, resolve, save_app, saved_app
from miasma_client._volumes import parse_volume


class PortsType(click.ParamType[list[apps_pb2.Port], Any]):
    """One option value -> a list of ports; comma lists allowed."""

    name = "PORT[/udp]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[apps_pb2.Port]:
        """Parse, or fail with the accepted forms."""
        if isinstance(value, list):
            return value
        try:
            return parse_ports([value])
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class VolumeType(click.ParamType[apps_pb2.Volume, Any]):
    """``SOURCE:TARGET[:ro]`` -> a ``Volume`` (``target_only``: a bare ``/TARGET`` too)."""

    name = "SOURCE:TARGET[:ro]"

    def __init__(self, *, target_only: bool = False) -> None:
        self.target_only = target_only

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> apps_pb2.Volume:
        """Parse, or fail with the accepted forms."""
        if isinstance(value, apps_pb2.Volume):
            return value
        try:
            return parse_volume(value, target_only=self.target_only)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class EnvType(click.ParamType[tuple[str, str], Any]):
    """``KEY=VALUE`` -> ``(KEY, VALUE)``."""

    name = "KEY=VALUE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        """Split at the first ``=``."""
        if isinstance(value, tuple):
            return value
        key, sep, text = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not KEY=VALUE", param, ctx)
        return key, text


F = TypeVar("F", bound=Callable[..., Any])

PORTS = PortsType()
ENV = EnvType()
VOLUME = VolumeType()
VOLUME_OR_TARGET = VolumeType(target_only=True)


def flatten(groups: tuple[list[apps_pb2.Port], ...]) -> list[apps_pb2.Port]:
    """The ports of a repeated option, in the order they were given."""
    return [port for group in groups for port in group]


def ports_option(*names: str, help: str) -> Callable[[F], F]:
    """A repeatable port option accepting comma lists."""
    return click.option(*names, type=PORTS, multiple=True, metavar="PORT[/udp]", help=help)


def stop_grace_option() -> Callable[[F], F]:
    """``--stop-grace SECONDS``: from the stop signal to SIGKILL."""
    return click.option(
        "--stop-grace", type=click.FloatRange(0, 3600), metavar="SECONDS",
        help="Seconds a stopping app gets after its stop signal before it is killed "
        "(default 10; give a database time to shut down cleanly).",
    )  # fmt: skip


def complete_app_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of ``-a NAME``: the server's apps (hidden ones too) that start with
    what is typed; nothing when the server does not answer within a second."""
    server = ctx.find_root().params.get("server")
    try:
        with MiasmaClient(settings=resolve(server=server), timeout=1.0) as client:
            names = [a.name.removeprefix("apps/") for a in client.list_apps(show_hidden=True)]
    except (MiasmaError, SettingsError):
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def sticky_app(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """Miasma's sticky ``-a``: a command given ``-a NAME`` remembers it (in the config
    file), and one without ``-a`` works on the app remembered."""
    if ctx.resilient_parsing:  # shell completion: neither ask nor remember
        return value or ""
    try:
        if value:
            save_app(value)
            return value
        if remembered := saved_app():
            return remembered
    except SettingsError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    raise click.MissingParameter(ctx=ctx, param=param)


def app_option() -> Callable[[F], F]:
    """``-a/--app NAME``, as in Miasma's commands: remembered for the next command without
    it; completed from the server's apps."""
    return click.option(
        "-a", "--app", "app", metavar="NAME", callback=sticky_app,
        help="The app's name (default: the app of the last command given -a).",
        shell_complete=complete_app_names,
    )  # fmt: skip


def json_option() -> Callable[[F], F]:
    """``--json``: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SinceType(click.ParamType[datetime | timedelta, Any]):
    """``10m``, ``2h``, ``90s``, ``1d`` (that long ago) or an ISO 8601 time."""

    name = "10m|TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime | timedelta:
        """Parse, or fail with the accepted forms."""
        if isinstance(value, datetime | timedelta):
            return value
        text = str(value).strip()
        number, unit = text[:-1], text[-1:]
        if unit in SINCE_UNITS and number.replace(".", "", 1).isdigit():
            return timedelta(seconds=float(number) * SINCE_UNITS[unit])
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is neither a duration (10m, 2h, 90s, 1d) nor a time "
                      "(2026-12-01T10:00:00Z)", param, ctx)  # fmt: skip
        return when if when.tzinfo else when.astimezone()  # a naive time is local


SINCE = SinceType()

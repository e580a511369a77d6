"""The CLI's shared state: connection settings from flags, one client, error translation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import click
import grpc

from miasma_client._client import MiasmaClient
from miasma_client._errors import MiasmaError
from miasma_client._settings import Settings, SettingsError, resolve


class CliError(click.ClickException):
    """A failure the user should read: printed as one line, exit code 1."""


@dataclass
class State:
    """What the group's options decided, handed to every command."""

    overrides: dict[str, object] = field(default_factory=dict)
    timeout: float = 120.0

    def settings(self, **more: object) -> Settings:
        """Flags (and ``more``) over environment over config file."""
        try:
            return resolve(**(self.overrides | more))
        except SettingsError as exc:
            raise CliError(str(exc)) from None

    @contextmanager
    def client(self, settings: Settings | None = None) -> Iterator[MiasmaClient]:
        """A connected client; Miasma's errors become one-line CLI errors."""
        settings = settings or self.settings()
        try:
            with MiasmaClient(settings=settings, timeout=self.timeout) as client:
                yield client
        except MiasmaError as exc:
            raise CliError(describe(exc, settings.server)) from None
        except SettingsError as exc:
            raise CliError(str(exc)) from None


# Request fields -> the CLI flags that fill them, so errors name what the user typed.
FLAGS = {
    "add_published_ports": "--add-published-ports",
    "remove_published_ports": "--rm-published-ports",
    "add_target_ports": "--add-target-ports",
    "remove_target_ports": "--rm-target-ports",
    "published_ports": "--published-ports",
    "target_ports": "--target-ports",
    "add_volumes": "--add-volume",
    "remove_volumes": "--rm-volume",
    "app.volumes": "--volume",
    "app.stop_grace": "--stop-grace",
    "app.image": "--image",
    "app.env": "--env",
    "app_id": "NAME",
}
_FIELD = re.compile(r"^(?P<field>[a-z_.]+)(?:\[\d+\])?")


def _with_flags(error: MiasmaError) -> str:
    text = str(error)
    match = _FIELD.match(text)
    if match and match["field"] in FLAGS:
        text = FLAGS[match["field"]] + text[match.end() :]
    return text


def describe(error: MiasmaError, server: str) -> str:
    """One line for humans; transport failures get a hint about the address."""
    if error.code == grpc.StatusCode.UNAVAILABLE and not error.reason:
        return (
            f"cannot reach Miasma at {server} ({error.message}); is the server running? "
            "Set the address with `miasma connect HOST:PORT`, MIASMA_SERVER or --server."
        )
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (
            f"{server} did not answer in time: the change may or may not have been made (a "
            "rollout cut short is finished by the server). See the app as it is now with "
            "`miasma apps:show -a NAME` before trying again; --timeout waits longer"
        )
    return _with_flags(error)


pass_state = click.make_pass_decorator(State)

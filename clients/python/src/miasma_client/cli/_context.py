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

# Exit codes, by what went wrong (README "Exit codes"); 2 is click's bad command line.
EXIT_FAILED = 1  # anything else: the server's own failure, a rollout that failed
EXIT_INVALID = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
EXIT_UNAVAILABLE = 6
EXIT_UNAUTHENTICATED = 7
EXIT_NOT_LIVE = 8  # the app did not come up (the change was made, or undone because of it)
NOT_LIVE_REASONS = frozenset({"CONTAINER_EXITED", "TASK_FAILED"})
EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_INVALID,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: EXIT_CONFLICT,
    grpc.StatusCode.ABORTED: EXIT_CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_CONFLICT,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_UNAUTHENTICATED,
}


class CliError(click.ClickException):
    """A failure the user should read: printed as one line; its exit code says what kind,
    and ``error`` is the server's (for ``--json``)."""

    def __init__(
        self, message: str, exit_code: int = EXIT_FAILED, error: MiasmaError | None = None
    ) -> None:
        super().__init__(message)
        self.status = exit_code  # click's exit_code is a class variable
        self.error = error

    @classmethod
    def of(cls, error: MiasmaError, server: str) -> CliError:
        """The CLI's error for a failed call."""
        code = EXIT_CODES.get(error.code, EXIT_FAILED)
        if error.reason in NOT_LIVE_REASONS:  # refused because the app did not come up
            code = EXIT_NOT_LIVE
        return cls(describe(error, server), code, error)


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
            raise CliError(str(exc), EXIT_INVALID) from None

    @contextmanager
    def client(self, settings: Settings | None = None) -> Iterator[MiasmaClient]:
        """A connected client; Miasma's errors become one-line CLI errors."""
        settings = settings or self.settings()
        try:
            with MiasmaClient(settings=settings, timeout=self.timeout) as client:
                yield client
        except MiasmaError as exc:
            raise CliError.of(exc, settings.server) from None
        except SettingsError as exc:
            raise CliError(str(exc), EXIT_INVALID) from None


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
    "app.env": "--env {key}",
    "app.constraints": "--constraint",
    "add_constraints": "--add-placement-constraint",
    "remove_constraints": "--rm-placement-constraint",
    "app.group": "--group",
    "group": "--group",
    "set_env": "{key}",
    "unset_env": "KEY",
    "app_id": "NAME",
    "new_app_id": "--name",
}
_FIELD = re.compile(r"^(?P<field>[a-z_.]+)(?:\[(?P<key>[^\]]*)\])?")


# API names in the server's words -> what a CLI user runs instead.
API_COMMANDS = {"EditPorts": "`miasma apps:edit`", "UpdateApp": "`miasma apps:update`"}


def _with_flags(error: MiasmaError) -> str:
    text = str(error)
    for api, command in API_COMMANDS.items():
        text = text.replace(api, command)
    match = _FIELD.match(text)
    if match and match["field"] in FLAGS:
        flag = FLAGS[match["field"]].format(key=match["key"] or "").strip()
        text = flag + text[match.end() :]
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

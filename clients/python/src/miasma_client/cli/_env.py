"""``miasma env``, ``env:set``, ``env:unset`` and ``env:edit``: an app's variables, one at a
time, each change atomic on the server (no read-modify-write here but in ``env:edit``,
which sends the etag it read: a change made meanwhile is refused, not overwritten)."""

from __future__ import annotations

import json

import click
import grpc

from miasma_client._env import env_changes, format_env, parse_env
from miasma_client._errors import MiasmaError
from miasma_client.cli._apps import wait_option, wait_timeout_option
from miasma_client.cli._context import (
    EXIT_CONFLICT,
    EXIT_INVALID,
    CliError,
    State,
    pass_state,
)
from miasma_client.cli._params import ENV, app_option, json_option
from miasma_client.cli._progress import following, settle
from miasma_client.cli._render import out, status_text

EDIT_HEADER = """\
# Environment of {app}: one KEY=VALUE per line; a value with spaces, quotes or '#' as a
# JSON string (KEY="two words"). Lines starting with '#' are ignored. Save and quit to
# apply (a removed line unsets its variable); quit without saving to change nothing.
# PORT and PORT_<n> are set by Miasma from the app's ports.
"""


@click.command("env")
@app_option()
@json_option()
@pass_state
def show_env(state: State, app: str, as_json: bool) -> None:
    """Print an app's variables, KEY=VALUE (PORT and PORT_<n> come from its ports)."""
    with state.client() as client:
        found = client.get_app(app)
    if as_json:
        print(json.dumps(dict(sorted(found.env.items())), indent=2, ensure_ascii=False))
        return
    print(format_env(found.env), end="")


@click.command("env:set")
@app_option()
@click.argument("pairs", nargs=-1, required=True, type=ENV, metavar="KEY=VALUE...")
@wait_option
@wait_timeout_option
@pass_state
def set_env(
    state: State, app: str, pairs: tuple[tuple[str, str], ...], wait: bool, wait_timeout: float
) -> None:
    """Set (or change) variables; the others stay. The app is rolled out again.

    \b
      miasma env:set -a web GREETING=hello DEBUG=1
    """
    with state.client() as client, following(client, app) as phases:
        edited = client.edit_app(app, set_env=dict(pairs)).app
        if wait:
            edited = settle(client, edited, wait_timeout, phases)
    out.print(f"Set {', '.join(key for key, _ in pairs)} on {app}.", status_text(edited))


@click.command("env:unset")
@app_option()
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@wait_option
@wait_timeout_option
@pass_state
def unset_env(
    state: State, app: str, keys: tuple[str, ...], wait: bool, wait_timeout: float
) -> None:
    """Remove variables (one the app does not have is ignored). The app is rolled out again."""
    with state.client() as client, following(client, app) as phases:
        edited = client.edit_app(app, unset_env=keys).app
        if wait:
            edited = settle(client, edited, wait_timeout, phases)
    out.print(f"Unset {', '.join(keys)} on {app}.", status_text(edited))


@click.command("env:edit")
@app_option()
@wait_option
@wait_timeout_option
@pass_state
def edit_env(state: State, app: str, wait: bool, wait_timeout: float) -> None:
    """Edit an app's variables in $EDITOR (then $VISUAL, then vi), as Miasma's env:edit.

    What changed is sent in one change, with the app's etag: if someone changed
    the app meanwhile, nothing is applied and you are told to run it again.
    """
    with state.client() as client:
        found = client.get_app(app)
        text = click.edit(EDIT_HEADER.format(app=app) + format_env(found.env), extension=".env")
        if text is None:
            out.print("No changes (the file was not saved).")
            return
        try:
            wanted = parse_env(text)
        except ValueError as exc:
            raise CliError(f"nothing changed: {exc}", EXIT_INVALID) from None
        changed, removed = env_changes(found.env, wanted)
        if not changed and not removed:
            out.print("No changes.")
            return
        with following(client, app) as phases:
            try:
                edited = client.edit_app(
                    app, set_env=changed, unset_env=removed, etag=found.etag
                ).app
            except MiasmaError as exc:
                if exc.code is grpc.StatusCode.ABORTED:
                    raise CliError(f"{app} changed while you edited; nothing applied: run "
                                   "env:edit again", EXIT_CONFLICT, exc) from None  # fmt: skip
                raise
            if wait:
                edited = settle(client, edited, wait_timeout, phases)
    parts = [f"set {', '.join(sorted(changed))}" if changed else "",
             f"unset {', '.join(removed)}" if removed else ""]  # fmt: skip
    out.print(f"Edited {app}: {'; '.join(p for p in parts if p)}.", status_text(edited))


COMMANDS = [show_env, set_env, unset_env, edit_env]

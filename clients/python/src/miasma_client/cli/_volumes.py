"""``miasma volumes`` and ``volumes:rm``: the named volumes Miasma made, and those left over."""

from __future__ import annotations

import sys

import click

from miasma_client.cli._context import State, pass_state
from miasma_client.cli._params import json_option
from miasma_client.cli._render import out, print_json, volume_list_table


@click.command("volumes")
@click.option("-a", "--app", "app", metavar="NAME", help="Only the volumes of this app.")
@json_option()
@pass_state
def list_volumes(state: State, app: str | None, as_json: bool) -> None:
    """List the volumes Miasma made: the app each was made for and who mounts it now.

    A volume nobody mounts outlived its app; `miasma volumes:rm NAME` deletes it.
    """
    with state.client() as client:
        volumes = client.list_volumes(app or "")
    if as_json:
        print_json(volumes)
    elif volumes:
        out.print(volume_list_table(volumes))
    else:
        out.print("No volumes.")


@click.command("volumes:rm")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask first.")
@json_option()
@pass_state
def remove_volume(state: State, name: str, yes: bool, as_json: bool) -> None:
    """Delete volume NAME and its data (refused while an app mounts it)."""
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("this deletes data: confirm with --yes when not on a terminal")
        click.confirm(f"Delete volume {name} and all its data?", abort=True)
    with state.client() as client:
        deleted = client.delete_volume(name)
    if as_json:
        print_json(deleted)
    else:
        out.print(f"Deleted volume {name}.")


COMMANDS = [list_volumes, remove_volume]

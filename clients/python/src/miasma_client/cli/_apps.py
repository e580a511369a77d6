"""``miasma apps`` and ``apps:*``: Miasma's app and port commands, spelled as in its docs."""

from __future__ import annotations

import click
from miasma.v1 import apps_pb2

from miasma_client._client import MiasmaClient
from miasma_client._status import AppStatus, app_status
from miasma_client.cli._context import CliError, State, pass_state
from miasma_client.cli._params import ENV, app_option, flatten, json_option, ports_option
from miasma_client.cli._render import (
    apps_table,
    err,
    out,
    print_changes,
    print_json,
    short_name,
    show_app,
    slots_table,
    status_text,
)


@click.command("apps")
@json_option()
@pass_state
def list_apps(state: State, as_json: bool) -> None:
    """List apps: status, name, URLs and running/total."""
    with state.client() as client:
        apps = client.list_apps()
    if as_json:
        print_json(apps)
    elif apps:
        out.print(apps_table(apps))
    else:
        out.print("No apps yet. Create one with `miasma apps:create NAME -i IMAGE`.")


@click.command("apps:show")
@app_option()
@json_option()
@pass_state
def show(state: State, app: str, as_json: bool) -> None:
    """Show an app: image, state, URLs and its port slots (published ↔ target)."""
    with state.client() as client:
        found = client.get_app(app)
    if as_json:
        print_json(found)
    else:
        show_app(found)


def _settle(client: MiasmaClient, app: apps_pb2.App, timeout: float) -> apps_pb2.App:
    """Wait (with a spinner on a terminal) until the rollout is live or failed."""
    if not app_status(app).settled:
        with err.status(f"Waiting for {short_name(app)} to be live…"):
            app = client.wait_settled(app.name, timeout=timeout)
    status = app_status(app)
    if status is AppStatus.FAILED:
        raise CliError(f"{short_name(app)} failed: {app.observed.last_error}")
    if not status.settled:
        detail = f": {app.observed.last_error}" if app.observed.last_error else ""
        raise CliError(f"{short_name(app)} is still {status} after {timeout:g}s{detail}")
    return app


wait_option = click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until the change is live (or failed) before returning.",
)
constraint_option = click.option(
    "--constraint",
    multiple=True,
    metavar="KEY==VALUE",
    help="Swarm placement constraint, e.g. node.labels.zone==a (repeatable).",
)
wait_timeout_option = click.option(
    "--wait-timeout", type=float, default=120.0, show_default=True, metavar="SECONDS",
    help="How long --wait waits.",
)  # fmt: skip


@click.command("apps:create")
@click.argument("name")
@click.option("-i", "--image", required=True, help="Docker image to run.")
@ports_option(
    "-p", "--published-ports", "--add-published-ports",
    help="Publish on this host port (repeatable, comma lists ok, 5353/udp for UDP).",
)  # fmt: skip
@ports_option(
    "-t", "--target-ports", "--add-target-ports",
    help="Use this port inside the container instead of a random one (repeatable).",
)  # fmt: skip
@click.option(
    "-e", "--env", "env", type=ENV, multiple=True, help="Environment variable (repeatable)."
)
@constraint_option
@click.option("--stopped", is_flag=True, help="Create the app without starting it.")
@click.option("--dry-run", is_flag=True, help="Show the ports it would get; create nothing.")
@wait_option
@wait_timeout_option
@json_option()
@click.argument("command", nargs=-1, metavar="[-- COMMAND...]")
@pass_state
def create(
    state: State,
    name: str,
    image: str,
    published_ports: tuple[list[apps_pb2.Port], ...],
    target_ports: tuple[list[apps_pb2.Port], ...],
    env: tuple[tuple[str, str], ...],
    constraint: tuple[str, ...],
    stopped: bool,
    dry_run: bool,
    wait: bool,
    wait_timeout: float,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Create app NAME from an image and start it on its own ports.

    Without port flags the app gets a random target port (its PORT) published
    on a free host port. Anything after `--` replaces the image's command.
    """
    with state.client() as client:
        app = client.create_app(
            name, image, command=command, env=dict(env), published_ports=flatten(published_ports),
            target_ports=flatten(target_ports), constraints=constraint, stopped=stopped,
            validate_only=dry_run,
        )  # fmt: skip
        if wait and not dry_run:
            app = _settle(client, app, wait_timeout)
    if as_json:
        print_json(app)
        return
    verb = "Would create" if dry_run else "Created"
    out.print(f"{verb} {name}.")
    out.print(slots_table(app.bindings))
    if app.urls and not dry_run:
        out.print(f"Open {', '.join(app.urls)}")


@click.command("apps:edit")
@app_option()
@ports_option(
    "--add-published-ports", help="Publish on this host port (repeatable, comma lists ok)."
)
@ports_option("--rm-published-ports", help="Go back to a random published port for this one.")
@ports_option("--add-target-ports", help="Use this port inside the container (repeatable).")
@ports_option("--rm-target-ports", help="Go back to a random target port for this one.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@wait_option
@wait_timeout_option
@json_option()
@pass_state
def edit(
    state: State,
    app: str,
    add_published_ports: tuple[list[apps_pb2.Port], ...],
    rm_published_ports: tuple[list[apps_pb2.Port], ...],
    add_target_ports: tuple[list[apps_pb2.Port], ...],
    rm_target_ports: tuple[list[apps_pb2.Port], ...],
    dry_run: bool,
    wait: bool,
    wait_timeout: float,
    as_json: bool,
) -> None:
    """Add or remove an app's published and target ports.

    \b
    Ports pair up by order: the first published port goes with the first
    target port (PORT_1, same as PORT), the second with the second (PORT_2)…
      miasma apps:edit -a postgres --add-published-ports 5432
      miasma apps:edit -a example --add-published-ports 8081,8082
      miasma apps:edit -a dns --add-published-ports 5353/udp
    """
    with state.client() as client:
        reply = client.edit_ports(
            app, add_published=flatten(add_published_ports),
            remove_published=flatten(rm_published_ports), add_target=flatten(add_target_ports),
            remove_target=flatten(rm_target_ports), validate_only=dry_run,
        )  # fmt: skip
        edited = reply.app
        if wait and not dry_run and reply.changes:
            edited = _settle(client, edited, wait_timeout)
    if as_json:
        reply.app.CopyFrom(edited)
        print_json(reply)
        return
    if dry_run:
        out.print("Dry run: nothing was changed. The plan:")
    print_changes(reply.changes)
    out.print()
    out.print(slots_table(edited.bindings))


@click.command("apps:update")
@app_option()
@click.option("-i", "--image", help="Run this image from now on.")
@click.option(
    "-e", "--env", "env", type=ENV, multiple=True,
    help="Environment variable (repeatable); the given set replaces the app's env.",
)  # fmt: skip
@constraint_option
@click.option("--no-constraints", is_flag=True, help="Remove every placement constraint.")
@wait_option
@wait_timeout_option
@json_option()
@click.argument("command", nargs=-1, metavar="[-- COMMAND...]")
@pass_state
def update(
    state: State,
    app: str,
    image: str | None,
    env: tuple[tuple[str, str], ...],
    constraint: tuple[str, ...],
    no_constraints: bool,
    wait: bool,
    wait_timeout: float,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Change an app's image, env, command or placement; it is rolled out again.

    Only what is given changes; its ports stay as they are.
    """
    if constraint and no_constraints:
        raise click.UsageError("--constraint and --no-constraints contradict each other")
    constraints = () if no_constraints else (constraint or None)
    if image is None and not env and not command and constraints is None:
        raise click.UsageError("nothing to change: give --image, --env, --constraint or a command")
    with state.client() as client:
        updated = client.update_app(
            app, image=image, env=dict(env) if env else None, command=command or None,
            constraints=constraints,
        )  # fmt: skip
        if wait:
            updated = _settle(client, updated, wait_timeout)
    if as_json:
        print_json(updated)
    else:
        out.print(f"Updated {app}.", status_text(updated))


def _lifecycle(name: str, summary: str, past: str) -> click.Command:
    """``apps:start|stop|restart|delete -a NAME``."""

    @click.command(name, help=summary)
    @app_option()
    @json_option()
    @pass_state
    def command(state: State, app: str, as_json: bool) -> None:
        with state.client() as client:
            method = {
                "apps:start": client.start_app,
                "apps:stop": client.stop_app,
                "apps:restart": client.restart_app,
                "apps:delete": client.delete_app,
            }[name]
            result = method(app)
        if as_json:
            print_json(result)
        else:
            out.print(f"{past} {app}.", status_text(result) if name != "apps:delete" else "")

    return command


COMMANDS = [
    list_apps,
    show,
    create,
    edit,
    update,
    _lifecycle("apps:start", "Start a stopped app on its ports.", "Started"),
    _lifecycle("apps:stop", "Stop an app; its ports stay reserved.", "Stopped"),
    _lifecycle("apps:restart", "Restart an app on the same ports.", "Restarted"),
    _lifecycle("apps:delete", "Delete an app, its container and its ports.", "Deleted"),
]

"""``miasma apps`` and ``apps:*``: Miasma's app and port commands, spelled as in its docs."""

from __future__ import annotations

import sys

import click
from miasma.v1 import apps_pb2

from miasma_client._client import MiasmaClient
from miasma_client._status import AppStatus, app_status
from miasma_client.cli._context import CliError, State, pass_state
from miasma_client.cli._params import (
    ENV,
    VOLUME,
    VOLUME_OR_TARGET,
    app_option,
    flatten,
    json_option,
    ports_option,
    stop_grace_option,
)
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
    volumes_table,
)


@click.command("apps")
@click.option("-g", "--group", default="", help="Only the apps of this group.")
@click.option(
    "--failing", is_flag=True, help="Only the apps whose latest change failed (need a look)."
)
@json_option()
@pass_state
def list_apps(state: State, group: str, failing: bool, as_json: bool) -> None:
    """List apps: status, name, URLs and running/total."""
    rollout = apps_pb2.ROLLOUT_STATE_FAILED if failing else apps_pb2.ROLLOUT_STATE_UNSPECIFIED
    with state.client() as client:
        apps = client.list_apps(group=group, rollout=rollout)
    if as_json:
        print_json(apps)
    elif apps:
        out.print(apps_table(apps))
    elif group or failing:
        out.print("No apps match.")
    else:
        out.print("No apps yet. Create one with `miasma apps:create NAME -i IMAGE`.")


@click.command("apps:show")
@app_option()
@json_option()
@pass_state
def show(state: State, app: str, as_json: bool) -> None:
    """Show an app: image, state, URLs, volumes and its port slots (published ↔ target)."""
    with state.client() as client:
        found = client.get_app(app)
        volumes = client.list_volumes(app) if not as_json else []
    if as_json:
        print_json(found)
    else:
        show_app(found, volumes)


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
@click.option(
    "-v", "--volume", "volumes", type=VOLUME, multiple=True,
    help="Mount a named volume (or, if the server allows, a host path): "
    "pgdata:/var/lib/postgresql/data, name:/path:ro (repeatable).",
)  # fmt: skip
@stop_grace_option()
@constraint_option
@click.option("-g", "--group", default="", help="List the app with this group (`apps -g`).")
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
    volumes: tuple[apps_pb2.Volume, ...],
    stop_grace: float | None,
    constraint: tuple[str, ...],
    group: str,
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
            target_ports=flatten(target_ports), constraints=constraint, volumes=volumes,
            stop_grace=stop_grace, group=group, stopped=stopped, validate_only=dry_run,
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
@click.option(
    "--add-volume", type=VOLUME, multiple=True,
    help="Mount SOURCE:TARGET[:ro] (a named volume, or a host path if the server allows).",
)  # fmt: skip
@click.option(
    "--rm-volume", type=VOLUME_OR_TARGET, multiple=True,
    help="Unmount SOURCE:TARGET (or just /TARGET); the volume and its data stay.",
)  # fmt: skip
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
    add_volume: tuple[apps_pb2.Volume, ...],
    rm_volume: tuple[apps_pb2.Volume, ...],
    dry_run: bool,
    wait: bool,
    wait_timeout: float,
    as_json: bool,
) -> None:
    """Add or remove an app's published and target ports, and its volumes, in one change.

    \b
    Ports pair up by order: the first published port goes with the first
    target port (PORT_1, same as PORT), the second with the second (PORT_2)…
      miasma apps:edit -a postgres --add-published-ports 5432
      miasma apps:edit -a example --add-published-ports 8081,8082
      miasma apps:edit -a dns --add-published-ports 5353/udp
      miasma apps:edit -a postgres --add-volume pgdata:/var/lib/postgresql/data
    """
    with state.client() as client:
        reply = client.edit_app(
            app, add_published=flatten(add_published_ports),
            remove_published=flatten(rm_published_ports), add_target=flatten(add_target_ports),
            remove_target=flatten(rm_target_ports), add_volumes=add_volume,
            remove_volumes=rm_volume, validate_only=dry_run,
        )  # fmt: skip
        edited = reply.app
        if wait and not dry_run and (reply.changes or add_volume or rm_volume):
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
    if add_volume or rm_volume or edited.volumes:
        out.print()
        out.print(volumes_table(edited.volumes, []))


@click.command("apps:update")
@app_option()
@click.option("-i", "--image", help="Run this image from now on.")
@click.option(
    "-e", "--env", "env", type=ENV, multiple=True,
    help="Environment variable (repeatable); the given set replaces the app's env.",
)  # fmt: skip
@constraint_option
@click.option("--no-constraints", is_flag=True, help="Remove every placement constraint.")
@stop_grace_option()
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
    stop_grace: float | None,
    wait: bool,
    wait_timeout: float,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Change an app's image, env, command, placement or stop grace; it is rolled out again.

    Only what is given changes; its ports and volumes stay as they are.
    """
    if constraint and no_constraints:
        raise click.UsageError("--constraint and --no-constraints contradict each other")
    constraints = () if no_constraints else (constraint or None)
    if (image, stop_grace, constraints) == (None, None, None) and not env and not command:
        raise click.UsageError(
            "nothing to change: give --image, --env, --constraint, --stop-grace or a command"
        )
    with state.client() as client:
        updated = client.update_app(
            app, image=image, env=dict(env) if env else None, command=command or None,
            constraints=constraints, stop_grace=stop_grace,
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
            }[name]
            result = method(app)
        if as_json:
            print_json(result)
        else:
            out.print(f"{past} {app}.", status_text(result))

    return command


@click.command("apps:delete")
@app_option()
@click.option(
    "--delete-volumes", is_flag=True,
    help="Also delete the volumes Miasma made for the app, and their data.",
)  # fmt: skip
@click.option("-y", "--yes", is_flag=True, help="Do not ask before deleting volumes.")
@json_option()
@pass_state
def delete(state: State, app: str, delete_volumes: bool, yes: bool, as_json: bool) -> None:
    """Delete an app, its container and its ports; its volumes (and data) stay unless
    --delete-volumes. `miasma volumes` lists volumes left behind."""
    with state.client() as client:
        if delete_volumes and not yes:
            doomed = [v.name for v in client.list_volumes(app) if v.created_for == f"apps/{app}"]
            if not sys.stdin.isatty():
                raise click.UsageError(
                    "--delete-volumes deletes data: confirm with --yes when not on a terminal"
                )
            listed = ", ".join(doomed) or "none found now"
            click.confirm(
                f"Delete app {app} and its volumes ({listed}) with all their data?", abort=True
            )
        reply = client.delete_app(app, delete_volumes=delete_volumes)
        kept = [v.name for v in client.list_volumes() if v.created_for == f"apps/{app}"]
    if as_json:
        print_json(reply)
        return
    out.print(f"Deleted {app}.")
    if reply.deleted_volumes:
        out.print(f"Deleted volumes: {', '.join(reply.deleted_volumes)}")
    if kept:
        out.print(f"Kept its volumes: {', '.join(kept)} (`miasma volumes:rm NAME` deletes one).")


COMMANDS = [
    list_apps,
    show,
    create,
    edit,
    update,
    _lifecycle("apps:start", "Start a stopped app on its ports.", "Started"),
    _lifecycle("apps:stop", "Stop an app; its ports stay reserved.", "Stopped"),
    _lifecycle("apps:restart", "Restart an app on the same ports.", "Restarted"),
    delete,
]

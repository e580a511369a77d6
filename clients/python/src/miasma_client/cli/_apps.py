"""``miasma apps`` and ``apps:*``: Miasma's app and port commands, spelled as in its docs."""

from __future__ import annotations

import sys

import click
import grpc
from miasma.v1 import apps_pb2

from miasma_client._client import MiasmaClient
from miasma_client._errors import MiasmaError
from miasma_client._settings import save_app, saved_app
from miasma_client.cli._context import State, pass_state
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
from miasma_client.cli._progress import following, settle
from miasma_client.cli._render import (
    apps_table,
    err,
    out,
    print_changes,
    print_json,
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
@click.option("-A", "--all", "show_all", is_flag=True, help="Hidden apps too.")
@json_option()
@pass_state
def list_apps(state: State, group: str, failing: bool, show_all: bool, as_json: bool) -> None:
    """List apps: status, name, URLs and running/total (hidden ones with --all)."""
    rollout = apps_pb2.ROLLOUT_STATE_FAILED if failing else apps_pb2.ROLLOUT_STATE_UNSPECIFIED
    with state.client() as client:
        apps = client.list_apps(group=group, rollout=rollout, show_hidden=show_all)
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


def warn_if_meaningless(client: MiasmaClient, published: list[apps_pb2.Port]) -> None:
    """Say so when a publish mode is asked of a server whose runtime has none: the
    container runtime always publishes on the Docker host."""
    host_mode = any(p.mode == apps_pb2.PUBLISH_MODE_HOST for p in published)
    if host_mode and client.server_info().runtime_mode == "container":
        err.print(
            "Note: /host changes nothing here: the container runtime always publishes "
            "on the Docker host (publish modes are for the swarm runtime).",
            style="yellow", markup=False,
        )  # fmt: skip


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
    with state.client() as client, following(client, name) as phases:
        warn_if_meaningless(client, flatten(published_ports))
        app = client.create_app(
            name, image, command=command, env=dict(env), published_ports=flatten(published_ports),
            target_ports=flatten(target_ports), constraints=constraint, volumes=volumes,
            stop_grace=stop_grace, group=group, stopped=stopped, validate_only=dry_run,
        )  # fmt: skip
        if wait and not dry_run:
            app = settle(client, app, wait_timeout, phases)
    if as_json:
        print_json(app)
        return
    verb = "Would create" if dry_run else "Created"
    out.print(f"{verb} {name}.")
    out.print(slots_table(app.bindings))
    if app.urls and not dry_run and app.desired_state != apps_pb2.DESIRED_STATE_STOPPED:
        out.print(f"Open {', '.join(app.urls)}")


@click.command("apps:edit")
@app_option()
@ports_option(
    "--add-published-ports", help="Publish on this host port (repeatable, comma lists ok)."
)
@ports_option(
    "--rm-published-ports",
    help="Forget this published port: Miasma picks one for its slot; a slot left with "
    "nothing explicit is removed, and the later slots move up (PORT_3 becomes PORT_2).",
)
@ports_option("--add-target-ports", help="Use this port inside the container (repeatable).")
@ports_option(
    "--rm-target-ports",
    help="Forget this target port: Miasma picks one for its slot; a slot left with nothing "
    "explicit is removed, and the later slots move up.",
)
@click.option(
    "--add-volume", type=VOLUME, multiple=True,
    help="Mount SOURCE:TARGET[:ro] (a named volume, or a host path if the server allows).",
)  # fmt: skip
@click.option(
    "--rm-volume", type=VOLUME_OR_TARGET, multiple=True,
    help="Unmount SOURCE:TARGET (or just /TARGET); the volume and its data stay.",
)  # fmt: skip
@click.option(
    "--add-placement-constraint", "add_constraint", multiple=True, metavar="KEY==VALUE",
    help="Swarm: run the app only on nodes that match, e.g. node.labels.zone==a (repeatable).",
)  # fmt: skip
@click.option(
    "--rm-placement-constraint", "rm_constraint", multiple=True, metavar="KEY==VALUE",
    help="Swarm: drop one of the app's placement constraints (repeatable).",
)  # fmt: skip
@click.option("-g", "--group", help="Move the app to this group ('' takes it out of its group).")
@click.option(
    "-n", "--name", "new_name", metavar="NEW",
    help="Rename the app; its ports, volumes (and data) and env stay (its container is made "
    "again under the new name).",
)  # fmt: skip
@click.option(
    "--hidden/--visible", default=None,
    help="Leave the app out of `miasma apps` (shown by `apps --all`), or list it again.",
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
    add_constraint: tuple[str, ...],
    rm_constraint: tuple[str, ...],
    group: str | None,
    new_name: str | None,
    hidden: bool | None,
    dry_run: bool,
    wait: bool,
    wait_timeout: float,
    as_json: bool,
) -> None:
    """Change an app's ports, volumes, placement, group or visibility, in one change.

    \b
    Ports pair up by order: the first published port goes with the first
    target port (PORT_1, same as PORT), the second with the second (PORT_2)…
      miasma apps:edit -a postgres --add-published-ports 5432
      miasma apps:edit -a example --add-published-ports 8081,8082
      miasma apps:edit -a dns --add-published-ports 5353/udp
      miasma apps:edit -a postgres --add-volume pgdata:/var/lib/postgresql/data
      miasma apps:edit -a db --add-placement-constraint node.labels.disk==ssd
      miasma apps:edit -a traefik --group infra --hidden
      miasma apps:edit -a db --name postgres
    """
    if new_name:
        with state.client() as client, following(client, new_name) as phases:
            renamed = client.rename_app(app, new_name, validate_only=dry_run)
            if not dry_run:
                if saved_app() == app:  # the sticky -a follows the app
                    save_app(new_name)
                if wait:
                    renamed = settle(client, renamed, wait_timeout, phases)
        err.print(f"{'Would rename' if dry_run else 'Renamed'} {app} to {new_name}.")
        app = new_name
        edits = (add_published_ports, rm_published_ports, add_target_ports, rm_target_ports,
                 add_volume, rm_volume, add_constraint, rm_constraint)  # fmt: skip
        if dry_run or (not any(edits) and group is None and hidden is None):
            if as_json:
                print_json(renamed)
            elif not dry_run:
                out.print(slots_table(renamed.bindings))
            return
    with state.client() as client, following(client, app) as phases:
        warn_if_meaningless(client, flatten(add_published_ports))
        reply = client.edit_app(
            app, add_published=flatten(add_published_ports),
            remove_published=flatten(rm_published_ports), add_target=flatten(add_target_ports),
            remove_target=flatten(rm_target_ports), add_volumes=add_volume,
            remove_volumes=rm_volume, add_constraints=add_constraint,
            remove_constraints=rm_constraint, group=group, hidden=hidden, validate_only=dry_run,
        )  # fmt: skip
        edited = reply.app
        rolled_out = reply.changes or add_volume or rm_volume or add_constraint or rm_constraint
        if wait and not dry_run and rolled_out:  # not for a group or visibility alone
            edited = settle(client, edited, wait_timeout, phases)
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
    help="Set this variable (repeatable); the app's others stay (see --replace-env).",
)  # fmt: skip
@click.option(
    "--replace-env", is_flag=True,
    help="The -e variables replace the app's whole env (none given: it is emptied).",
)  # fmt: skip
@click.option("--default-command", is_flag=True, help="Go back to the image's own command.")
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
    replace_env: bool,
    default_command: bool,
    constraint: tuple[str, ...],
    no_constraints: bool,
    stop_grace: float | None,
    wait: bool,
    wait_timeout: float,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Change an app's image, env, command, placement or stop grace; it is rolled out again.

    Only what is given changes; its ports and volumes stay as they are. `-e`
    sets variables and leaves the others (`env:unset` removes one).
    """
    if constraint and no_constraints:
        raise click.UsageError("--constraint and --no-constraints contradict each other")
    if command and default_command:
        raise click.UsageError("a command and --default-command contradict each other")
    constraints = () if no_constraints else (constraint or None)
    new_command = () if default_command else (command or None)
    if (image, stop_grace, constraints, new_command) == (None,) * 4 and not (env or replace_env):
        raise click.UsageError(
            "nothing to change: give --image, --env, --constraint, --stop-grace, a command "
            "or --default-command"
        )
    with state.client() as client, following(client, app) as phases:
        updated = client.update_app(
            app, image=image, env=dict(env) if replace_env else None,
            set_env=None if replace_env else dict(env), command=new_command,
            constraints=constraints, stop_grace=stop_grace,
        )  # fmt: skip
        if wait:
            updated = settle(client, updated, wait_timeout, phases)
    if as_json:
        print_json(updated)
    else:
        out.print(f"Updated {app}.", status_text(updated))


def _lifecycle(name: str, summary: str, past: str) -> click.Command:
    """``apps:start|stop|restart|delete -a NAME``."""

    @click.command(name, help=summary)
    @app_option()
    @wait_option
    @wait_timeout_option
    @json_option()
    @pass_state
    def command(state: State, app: str, wait: bool, wait_timeout: float, as_json: bool) -> None:
        with state.client() as client, following(client, app) as phases:
            method = {
                "apps:start": client.start_app,
                "apps:stop": client.stop_app,
                "apps:restart": client.restart_app,
            }[name]
            result = method(app)
            if wait:
                result = settle(client, result, wait_timeout, phases)
        if as_json:
            print_json(result)
        else:
            out.print(f"{past} {app}.", status_text(result))

    return command


@click.command("apps:upgrade")
@app_option()
@wait_option
@wait_timeout_option
@json_option()
@pass_state
def upgrade(state: State, app: str, wait: bool, wait_timeout: float, as_json: bool) -> None:
    """Pull the app's image again; roll the app out only if the registry has a new one.

    The pull may take minutes: the command waits for it (up to 6), whatever --timeout.
    """
    with state.client() as client:
        image = client.get_app(app).image
        with following(client, app) as phases:
            reply = client.upgrade_app(app)
            upgraded = reply.app
            if wait and reply.changed:
                upgraded = settle(client, upgraded, wait_timeout, phases)
    if as_json:
        reply.app.CopyFrom(upgraded)
        print_json(reply)
    elif reply.changed:
        out.print(f"Upgraded {app} to {upgraded.image_digest}.", status_text(upgraded))
    else:
        out.print(f"{app} is up to date: {image} has not changed.")


@click.command("apps:delete")
@app_option()
@click.option(
    "--delete-volumes", is_flag=True,
    help="Also delete the volumes Miasma made for the app, and their data.",
)  # fmt: skip
@click.option("-y", "--yes", is_flag=True, help="Do not ask first (on a terminal it asks).")
@click.option("--if-exists", is_flag=True, help="An app that does not exist is not an error.")
@json_option()
@pass_state
def delete(
    state: State, app: str, delete_volumes: bool, yes: bool, if_exists: bool, as_json: bool
) -> None:
    """Delete an app, its container and its ports; its volumes (and data) stay unless
    --delete-volumes. `miasma volumes` lists volumes left behind."""
    with state.client() as client:
        try:
            client.get_app(app)
        except MiasmaError as exc:
            if if_exists and exc.code is grpc.StatusCode.NOT_FOUND:
                if as_json:
                    print_json(apps_pb2.DeleteAppResponse())
                else:
                    out.print(f"{app} does not exist: nothing to delete.")
                return
            raise
        if not yes:
            _confirm_delete(client, app, delete_volumes)
        try:
            with following(client, app):
                reply = client.delete_app(app, delete_volumes=delete_volumes)
        except MiasmaError as exc:  # deleted meanwhile
            if not (if_exists and exc.code is grpc.StatusCode.NOT_FOUND):
                raise
            reply = apps_pb2.DeleteAppResponse()
        kept = [v.name for v in client.list_volumes() if v.created_for == f"apps/{app}"]
    if as_json:
        print_json(reply)
        return
    out.print(f"Deleted {app}.")
    if reply.deleted_volumes:
        out.print(f"Deleted volumes: {', '.join(reply.deleted_volumes)}")
    if kept:
        out.print(f"Kept its volumes: {', '.join(kept)} (`miasma volumes:rm NAME` deletes one).")


def _confirm_delete(client: MiasmaClient, app: str, delete_volumes: bool) -> None:
    """Ask on a terminal; off one, deleting data needs --yes (deleting the app does not)."""
    if not sys.stdin.isatty():
        if delete_volumes:
            raise click.UsageError(
                "--delete-volumes deletes data: confirm with --yes when not on a terminal"
            )
        return
    if delete_volumes:
        doomed = [v.name for v in client.list_volumes(app) if v.created_for == f"apps/{app}"]
        listed = ", ".join(doomed) or "none found now"
        question = f"Delete app {app} and its volumes ({listed}) with all their data?"
    else:
        question = f"Delete app {app}? (its volumes stay)"
    click.confirm(question, abort=True)


COMMANDS = [
    list_apps,
    show,
    create,
    edit,
    update,
    _lifecycle("apps:start", "Start a stopped app on its ports.", "Started"),
    _lifecycle("apps:stop", "Stop an app; its ports stay reserved.", "Stopped"),
    _lifecycle("apps:restart", "Restart an app on the same ports.", "Restarted"),
    upgrade,
    delete,
]

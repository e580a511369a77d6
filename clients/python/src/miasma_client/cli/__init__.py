"""The ``miasma`` command line: Miasma's commands over the gRPC API.

Every command talks to one server (``miasma connect``, ``MIASMA_SERVER`` or
``--server``), prints tables for people and ``--json`` for scripts, and
exits non-zero with a one-line message when something fails.
"""

from __future__ import annotations

import json
import sys

import click

from miasma_client._errors import MiasmaError
from miasma_client._ports import format_port
from miasma_client._settings import DEFAULT_SERVER, config_path, save_file
from miasma_client.cli import _apps, _audit, _env, _logs, _routes, _volumes, _watch
from miasma_client.cli._context import CliError, State, pass_state
from miasma_client.cli._params import json_option
from miasma_client.cli._render import err, out, print_json

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.option(
    "--server",
    metavar="HOST:PORT",
    help=f"Miasma server [env MIASMA_SERVER; saved by `connect`; default {DEFAULT_SERVER}].",
)
@click.option(
    "--token", metavar="TOKEN", help="Access token [env MIASMA_TOKEN; saved by `connect`]."
)
@click.option("--tls", is_flag=True, default=None, help="Use TLS with the system's trusted CAs.")
@click.option("--tls-ca", metavar="FILE", help="Trust this CA (PEM) for the server; implies TLS.")
@click.option("--tls-cert", metavar="FILE", help="Client certificate (PEM) for mutual TLS.")
@click.option("--tls-key", metavar="FILE", help="Client private key (PEM) for mutual TLS.")
@click.option(
    "--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for each call."
)
@click.version_option(None, "-v", "--version", package_name="miasma-client", prog_name="miasma")
@click.pass_context
def cli(ctx: click.Context, /, timeout: float, **connection: object) -> None:
    """Run apps on Docker with Heroku-style port management.

    \b
    Start with:
      miasma connect 127.0.0.1:50051
      miasma apps:create web -i IMAGE
      miasma apps:edit -a web --add-published-ports 8080
      miasma apps
    """
    ctx.obj = State(overrides=connection, timeout=timeout)


@cli.command("connect")
@click.argument("server", metavar="HOST:PORT")
@click.option("--auth", "token", metavar="TOKEN", help="Access token the server requires.")
@pass_state
def connect(state: State, server: str, token: str | None) -> None:
    """Check that a Miasma server answers at HOST:PORT, then save it (and the token).

    Later commands use the saved server unless MIASMA_SERVER or --server say
    otherwise. TLS flags given to `miasma` are saved too.
    """
    settings = state.settings(server=server, token=token)
    with state.client(settings) as client:
        info = client.server_info()
    path = save_file(settings, config_path())
    docker = f"Docker {info.docker_version}" if info.docker_reachable else "Docker unreachable"
    out.print(f"Connected to Miasma {info.version} at {server} ({docker}, {info.runtime_mode}).")
    out.print(f"Saved to {path}")


@cli.command("whoami")
@json_option()
@pass_state
def whoami(state: State, as_json: bool) -> None:
    """Show who the server takes you for (token name or certificate subject) and its role."""
    with state.client() as client:
        caller = client.whoami()
    if as_json:
        print_json(caller)
        return
    how = {"token": "by token", "certificate": "by client certificate"}.get(caller.source)
    out.print(f"{caller.name} ({caller.role}" + (f", {how})" if how else ": the server asks "
              "nobody)"))  # fmt: skip
    out.print(f"May: {', '.join(caller.permissions)}")
    scope = [f"apps {', '.join(caller.app_patterns)}"] if caller.app_patterns else []
    scope += [f"groups {', '.join(caller.groups)}"] if caller.groups else []
    out.print(f"On: {' and '.join(scope) if scope else 'every app'}")


@cli.command("server:info")
@json_option()
@pass_state
def server_info(state: State, as_json: bool) -> None:
    """Show the server's version, Docker engine, runtime mode and port ranges."""
    with state.client() as client:
        info = client.server_info()
    if as_json:
        print_json(info)
        return
    rows = {
        "Version": info.version,
        "Docker": info.docker_version if info.docker_reachable else "unreachable",
        "Runtime": info.runtime_mode,
        "Swarm ID": info.swarm_id,
        "Join command": info.join_command,
        "Published ports": info.published_port_range,
        "Target ports": info.target_port_range,
        "Reserved ports": ", ".join(format_port(p.number, p.protocol) for p in info.reserved_ports),
        "Public host": info.public_host,
        "Bind mounts": "allowed" if info.bind_mounts_allowed else "not allowed",
    }
    for label, value in rows.items():
        if value:
            out.print(f"{label:16} {value}")


for command in [
    *_apps.COMMANDS, *_env.COMMANDS, _logs.logs, *_volumes.COMMANDS, _watch.watch, _audit.audit,
    *_routes.COMMANDS,
]:  # fmt: skip
    cli.add_command(command)

# The names of Miasma's first CLI, which its templates use (docs/miasma-cli.md).
ALIASES = {
    "apps:configure": "apps:edit",
    "apps:destroy": "apps:delete",
    "apps:reload": "apps:restart",
}
for alias, name in ALIASES.items():
    original = cli.commands[name]
    cli.add_command(
        click.Command(
            alias,
            params=original.params,
            callback=original.callback,
            help=f"The same as `miasma {name}` (Miasma's older name).",
            hidden=True,
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``miasma`` script: errors become one line on stderr (a JSON
    object with ``--json``), and an exit code that says what kind (README "Exit codes")."""
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
    try:
        result = cli.main(args=args, prog_name="miasma", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `miasma` alone: its help, no error
        print(exc.format_message())
        return 0
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        return _fail(f"{exc.format_message()}{hint}", exc.exit_code, as_json)
    except CliError as exc:
        return _fail(exc.format_message(), exc.status, as_json, exc.error)
    except click.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code, as_json)
    except click.Abort:
        return _fail("Aborted.", 130, as_json)
    return result if isinstance(result, int) else 0


def _fail(message: str, code: int, as_json: bool, error: MiasmaError | None = None) -> int:
    """Say what failed on stderr; the exit code."""
    if not as_json:
        err.print("Aborted." if code == 130 else f"Error: {message}", markup=False)
        return code
    detail: dict[str, object] = {"message": message, "exit_code": code}
    if error is not None:
        detail |= {
            "code": error.code.name,
            "reason": error.reason,
            "field_violations": [
                {"field": v.field, "description": v.description} for v in error.violations
            ],
            "resource": error.resource,
        }
    print(json.dumps({"error": detail}, ensure_ascii=False), file=sys.stderr)
    return code


__all__ = ["CliError", "cli", "main"]

if __name__ == "__main__":
    sys.exit(main())

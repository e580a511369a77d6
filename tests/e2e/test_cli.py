"""The `miasma` CLI as a user runs it: a real subprocess against a real server and Docker.

The seed page's commands are run verbatim (strings copied from
Miasma's port management page); results are checked with
``docker inspect`` and HTTP, never only with the CLI's own output.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import HTTPD_COMMAND
from tests.docker_cli import containers, http_get, the_container
from tests.polling import eventually
from tests.server import ServerProcess, free_port

pytestmark = pytest.mark.docker

MIASMA = str(Path(sys.executable).with_name("miasma"))
PUBLISHED_RANGE = range(15001, 16000)


class Cli:
    """Runs ``miasma`` with a private config folder and the test server's address."""

    def __init__(self, server: ServerProcess, config_home: Path, image: str) -> None:
        self.server = server
        self.image = image
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MIASMA_")}
        self.env |= {"XDG_CONFIG_HOME": str(config_home), "MIASMA_SERVER": server.address}

    def run(
        self, command: str | list[str], *, ok: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``miasma ARGS`` (a shell-like string, or a list of args)."""
        args = shlex.split(command) if isinstance(command, str) else command
        if args[0] == "miasma":
            args = args[1:]
        result = subprocess.run(
            [MIASMA, *args],
            stdin=subprocess.DEVNULL,  # not a terminal: nothing asks
            capture_output=True,
            text=True,
            timeout=180,
            env=self.env | (env or {}),
            check=False,
        )
        if ok:
            assert result.returncode == 0, f"miasma {args} failed: {result.stderr}"
        return result

    def json(self, command: str) -> object:
        """Run a read command with ``--json`` and parse its output."""
        return json.loads(self.run(f"{command} --json").stdout)

    def create(self, name: str) -> None:
        """Create a running app whose busybox httpd serves every PORT_n."""
        self.run(["apps:create", name, "-i", self.image, "--", *HTTPD_COMMAND])


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose auto published ports come from 15001-15999."""
    return make_server(published_range="15001-15999")


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path, test_image: str) -> Cli:
    """The CLI pointed at this test's server, with its own config folder."""
    return Cli(server, tmp_path / "config", test_image)


def published(server: ServerProcess, app: str) -> dict[str, int]:
    """What Docker publishes for ``app``: ``{"TARGET/tcp": HOST_PORT}``."""
    return the_container(server.docker_host, server.instance, app).published


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command printed: exactly one line on stderr, after the steps of a
    rollout it showed (``NAME: stopping the old container …``)."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    steps, lines = lines[:-1], lines[-1:]
    assert all(re.match(r"[a-z][a-z0-9-]*: ", step) for step in steps), result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def test_seed_published_port_commands(cli: Cli, server: ServerProcess) -> None:
    """`--add-published-ports 5432` publishes the app there; `--rm-…` goes back to a random port."""
    cli.create("postgres")
    [(target, _)] = published(server, "postgres").items()
    cli.run("miasma apps:edit -a postgres --add-published-ports 5432")
    assert published(server, "postgres") == {target: 5432}
    assert http_get(5432).strip() == "miasma-test"
    cli.run("miasma apps:edit -a postgres --rm-published-ports 5432")
    [(same_target, port)] = published(server, "postgres").items()
    assert same_target == target
    assert port in PUBLISHED_RANGE
    assert http_get(port).strip() == "miasma-test"


def test_seed_target_port_commands(cli: Cli, server: ServerProcess) -> None:
    """`--add-target-ports 80` runs the app on 80 inside; `--rm-target-ports 80` re-randomizes."""
    cli.create("example-website")
    [(_, port)] = published(server, "example-website").items()
    cli.run("miasma apps:edit -a example-website --add-target-ports 80")
    container = the_container(server.docker_host, server.instance, "example-website")
    assert container.published == {"80/tcp": port}  # the published port is sticky
    assert container.env["PORT"] == "80"
    assert http_get(port).strip() == "miasma-test"
    # The seed page's "go back" line names postgres, so give postgres target 80 first.
    cli.create("postgres")
    cli.run("miasma apps:edit -a postgres --add-target-ports 80")
    cli.run("miasma apps:edit -a postgres --rm-target-ports 80")
    container = the_container(server.docker_host, server.instance, "postgres")
    assert container.env["PORT"] != "80"
    assert list(container.published) == [f"{container.env['PORT']}/tcp"]


def test_seed_multiple_ports_in_order(cli: Cli, server: ServerProcess) -> None:
    """8081 then 8082 give PORT_1/PORT_2; hard-coded targets pair them 8081:8081, 8082:8082."""
    cli.create("example")
    cli.run("miasma apps:edit -a example --add-published-ports 8081 --add-published-ports 8082")
    container = the_container(server.docker_host, server.instance, "example")
    assert container.published == {
        f"{container.env['PORT_1']}/tcp": 8081,
        f"{container.env['PORT_2']}/tcp": 8082,
    }
    assert container.env["PORT"] == container.env["PORT_1"]
    assert http_get(8081).strip() == http_get(8082).strip() == "miasma-test"
    # The page repeats the published command where it means target ports: both must work.
    repeated = cli.run(
        "miasma apps:edit -a example --add-published-ports 8081 --add-published-ports 8082"
    )
    assert "No port changes" in repeated.stdout
    cli.run("miasma apps:edit -a example --add-target-ports 8081 --add-target-ports 8082")
    assert published(server, "example") == {"8081/tcp": 8081, "8082/tcp": 8082}
    assert http_get(8081).strip() == http_get(8082).strip() == "miasma-test"


def test_seed_order_matters(cli: Cli, server: ServerProcess) -> None:
    """8082 before 8081 on the published side ends up as 8081:8082 and 8082:8081."""
    cli.create("example")
    cli.run("miasma apps:edit -a example --add-published-ports 8082 --add-published-ports 8081")
    cli.run("miasma apps:edit -a example --add-target-ports 8081 --add-target-ports 8082")
    assert published(server, "example") == {"8081/tcp": 8082, "8082/tcp": 8081}
    assert http_get(8081).strip() == http_get(8082).strip() == "miasma-test"


def test_comma_lists_and_udp(cli: Cli, server: ServerProcess) -> None:
    """`8083,8084` adds two slots; `5353/udp` publishes a UDP slot."""
    cli.create("multi")
    cli.run(
        "miasma apps:edit -a multi --add-published-ports 8083,8084 --add-published-ports 5353/udp"
    )
    ports = published(server, "multi")
    assert sorted(ports.values()) == [5353, 8083, 8084]
    [udp] = [key for key, value in ports.items() if value == 5353]
    assert udp.endswith("/udp")


def test_show_and_list_print_slots_urls_and_counts(cli: Cli, server: ServerProcess) -> None:
    """`apps:show` has the slot table with env names; `apps` has URL and running/total."""
    cli.create("web")
    cli.run("apps:edit -a web --add-published-ports 8085 --add-target-ports 8080")
    shown = cli.run("apps:show -a web").stdout
    assert "8085 (explicit)" in shown
    assert "8080 (explicit)" in shown
    assert "PORT, PORT_1" in shown
    assert "running" in shown
    listed = cli.run("apps").stdout  # not a terminal: no colour, the status as a word
    assert "web" in listed
    assert "http://localhost:8085" in listed
    assert "1/1" in listed
    assert "● running" in listed


def test_json_output_parses_and_matches_docker(cli: Cli, server: ServerProcess) -> None:
    """`--json` on apps, apps:show, apps:edit and server:info is JSON with the real ports."""
    cli.create("web")
    edited = json.loads(cli.run("apps:edit -a web --add-published-ports 8086 --json").stdout)
    assert edited["changes"][0]["new_binding"]["published_port"] == 8086
    shown = cli.json("apps:show -a web")
    assert isinstance(shown, dict)
    [binding] = shown["bindings"]
    assert published(server, "web") == {f"{binding['target_port']}/tcp": 8086}
    assert shown["observed"] == {
        "running": 1,
        "total": 1,
        "last_error": "",
        "rollout": "ROLLOUT_STATE_APPLIED",
        "phase": "",
        "not_listening": [],
    }
    listed = cli.json("apps")
    assert isinstance(listed, list)
    assert [app["name"] for app in listed] == ["apps/web"]
    info = cli.json("server:info")
    assert isinstance(info, dict)
    assert info["runtime_mode"] == "container"
    assert info["docker_reachable"] is True


def test_dry_run_prints_the_plan_and_changes_nothing(cli: Cli, server: ServerProcess) -> None:
    """`apps:edit --dry-run` shows the new slot but Docker and the app keep the old ports."""
    cli.create("web")
    before = published(server, "web")
    result = cli.run("apps:edit -a web --add-published-ports 8087 --dry-run")
    assert "Dry run" in result.stdout
    assert "8087" in result.stdout
    assert published(server, "web") == before
    shown = cli.json("apps:show -a web")
    assert isinstance(shown, dict)
    assert [b["published_port"] for b in shown["bindings"]] == list(before.values())


def test_bad_input_gets_one_line_and_changes_nothing(cli: Cli, server: ServerProcess) -> None:
    """abc, 70000, an unknown app and a held port each fail with one line and a non-zero exit."""
    cli.create("web")
    cli.create("other")
    before = published(server, "web")
    line = one_line_error(cli.run("apps:edit -a web --add-published-ports abc", ok=False))
    assert "--add-published-ports" in line
    assert "'abc' is not a port" in line
    result = cli.run("apps:edit -a web --add-published-ports 70000", ok=False)
    line = one_line_error(result)
    assert result.returncode == 3  # invalid input (README "Exit codes")
    assert "--add-published-ports" in line
    assert "70000" in line
    assert "INVALID_ARGUMENT" in line
    line = one_line_error(cli.run("apps:edit -a nope --add-published-ports 8088", ok=False))
    assert "NOT_FOUND" in line
    assert "nope" in line
    cli.run("apps:edit -a other --add-published-ports 8089")
    line = one_line_error(cli.run("apps:edit -a web --add-published-ports 8089", ok=False))
    assert "ALREADY_EXISTS" in line
    assert "other" in line
    assert published(server, "web") == before


def test_lifecycle_commands(cli: Cli, server: ServerProcess) -> None:
    """stop keeps the ports, start brings the app back on them, delete removes it."""
    cli.create("web")
    before = published(server, "web")
    cli.run("apps:stop -a web")
    assert not any(c.running for c in containers(server.docker_host, server.instance, "web"))
    cli.run("apps:start -a web")
    assert published(server, "web") == before
    cli.run("apps:restart -a web")
    assert published(server, "web") == before
    cli.run("apps:delete -a web")
    assert containers(server.docker_host, server.instance, "web") == []
    assert cli.json("apps") == []


def test_apps_by_group_and_failing(cli: Cli, server: ServerProcess) -> None:
    """`apps:create -g` puts an app in a group, `apps -g` lists that group, `apps:show`
    names it; `apps --failing` lists the app whose container cannot start."""

    def names(command: str) -> list[str]:
        listing = cli.json(command)
        assert isinstance(listing, list)
        return [app["name"] for app in listing]

    cli.run(["apps:create", "api", "-i", cli.image, "-g", "backend", "--stopped"])
    cli.create("www")
    assert names("apps -g backend") == ["apps/api"]
    assert "No apps match." in cli.run("apps -g nobody").stdout
    assert "backend" in cli.run("apps:show -a api").stdout
    assert names("apps --failing") == []
    cli.run(["apps:create", "broken", "-i", cli.image, "--no-wait", "--", "false"])

    def failing() -> None:
        assert names("apps --failing") == ["apps/broken"]

    eventually(failing, "the app whose process exits to be listed as failing")


def test_volume_commands(cli: Cli, server: ServerProcess) -> None:
    """--volume, --add-volume/--rm-volume, `volumes`, `volumes:rm`, and --delete-volumes,
    which wants --yes when it cannot ask (stdin is not a terminal here)."""
    data, cache = f"{server.instance}-data", f"{server.instance}-cache"
    cli.run(["apps:create", "db", "-i", cli.image, "--volume", f"{data}:/data", "--stop-grace",
             "3", "--", *HTTPD_COMMAND])  # fmt: skip
    mounts = the_container(server.docker_host, server.instance, "db").mounts
    assert mounts == [("volume", data, "/data", True)]
    shown = cli.run("miasma apps:show -a db").stdout
    assert data in shown
    assert "3 s" in shown
    edited = cli.run(f"miasma apps:edit -a db --rm-volume /data --add-volume {cache}:/cache:ro")
    assert cache in edited.stdout
    mounts = the_container(server.docker_host, server.instance, "db").mounts
    assert mounts == [("volume", cache, "/cache", False)]
    bad = one_line_error(cli.run("miasma apps:edit -a db --add-volume x1:relative", ok=False))
    assert "--add-volume" in bad
    assert "absolute" in bad
    listed = cli.json("miasma volumes")
    assert isinstance(listed, list)
    assert {v["name"]: v["mounted_by"] for v in listed} == {data: [], cache: ["apps/db"]}
    assert "nobody (left over)" in cli.run("miasma volumes").stdout
    cli.run(f"miasma volumes:rm {data} --yes")
    refused = cli.run("miasma apps:delete -a db --delete-volumes", ok=False)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert containers(server.docker_host, server.instance, "db")  # nothing was deleted
    deleted = cli.run("miasma apps:delete -a db --delete-volumes --yes")
    assert f"Deleted volumes: {cache}" in deleted.stdout
    assert cli.json("miasma volumes") == []


def test_a_call_cut_short_says_the_outcome_is_unknown(
    cli: Cli, server: ServerProcess, volume_image: str
) -> None:
    """--timeout shorter than the rollout: the CLI does not claim the change failed; it
    says it may have been made and how to look. (It was: the app has the port.)"""
    slow_stop = ["sh", "-c", "trap 'sleep 2; exit 0' TERM; while :; do sleep 1 & wait $!; done"]
    # (--no-wait: it listens nowhere, a worker)
    cli.run(["apps:create", "slow", "-i", volume_image, "--no-wait", "--", *slow_stop])
    cut = cli.run("miasma --timeout 0.5 apps:edit -a slow --add-published-ports 15555", ok=False)
    line = one_line_error(cut)
    assert "may or may not have been made" in line
    assert "apps:show" in line
    shown = cli.json("miasma apps:show -a slow")
    assert isinstance(shown, dict)
    assert [b["published_port"] for b in shown["bindings"]] == [15555]


def test_connect_saves_the_server_and_env_and_flags_override_it(
    cli: Cli, server: ServerProcess, tmp_path: Path
) -> None:
    """`connect` writes an owner-only config file; MIASMA_SERVER and --server win over it."""
    del cli.env["MIASMA_SERVER"]
    result = cli.run(f"connect {server.address} --auth s3cret")
    assert "Connected to Miasma" in result.stdout
    path = tmp_path / "config" / "miasma" / "config.json"
    saved = {"server": server.address, "tokens": {server.address: "s3cret"}}
    assert json.loads(path.read_text()) == saved
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cli.json("apps") == []
    elsewhere = f"127.0.0.1:{free_port()}"
    line = one_line_error(cli.run("apps", ok=False, env={"MIASMA_SERVER": elsewhere}))
    assert f"cannot reach Miasma at {elsewhere}" in line
    cli.run(["--server", server.address, "apps"], env={"MIASMA_SERVER": elsewhere})


def test_exit_codes_say_what_failed_and_json_errors_are_json(cli: Cli) -> None:
    """Not found 4, conflict 5, invalid 3, unavailable 6, bad command line 2; with --json the
    error is one JSON object on stderr; apps:delete --if-exists of no app succeeds."""
    cli.create("web")
    codes = {
        "apps:show -a nope": 4,
        "apps:delete -a nope": 4,
        "ports:watch -a nope": 4,  # at once, not a wait for an app that never comes
        f"apps:create web -i {cli.image}": 5,
        "env:set -a web 'BAD KEY=1'": 3,
        "apps:edit -a web --add-published-ports abc": 2,  # the command line itself
        f"--server 127.0.0.1:{free_port()} apps": 6,
    }
    for command, code in codes.items():
        result = cli.run(command, ok=False)
        assert result.returncode == code, f"{command}: {result.returncode} {result.stderr}"
    assert "BAD KEY" in cli.run("env:set -a web 'BAD KEY=1'", ok=False).stderr
    died = cli.run(["apps:update", "-a", "web", "--", "sh", "-c", "echo bad >&2; exit 4"], ok=False)
    assert died.returncode == 8, died.stderr  # it did not come up: undone, and said why
    assert "exit code 4" in died.stderr
    assert "bad" in died.stderr

    failed = cli.run("apps:show -a nope --json", ok=False)
    error = json.loads(failed.stderr)["error"]
    assert (error["code"], error["reason"], error["exit_code"]) == ("NOT_FOUND", "APP_NOT_FOUND", 4)
    assert failed.stdout == ""
    invalid = json.loads(cli.run("apps:create Bad -i x --json", ok=False).stderr)["error"]
    assert invalid["code"] == "INVALID_ARGUMENT"
    assert [v["field"] for v in invalid["field_violations"]] == ["app_id"]

    assert "nothing to delete" in cli.run("apps:delete -a nope --if-exists").stdout
    assert cli.run("miasma").stdout.startswith("Usage: miasma")  # `miasma` alone: help, exit 0
    stopped = cli.run(f"apps:create idle -i {cli.image} --stopped").stdout
    assert "Created idle." in stopped
    assert "Open" not in stopped
    cli.run("apps:delete -a web --if-exists")
    assert containers(cli.server.docker_host, cli.server.instance, "web") == []


def test_a_token_saved_for_one_server_is_never_sent_to_another(
    make_server: Callable[..., ServerProcess], tmp_path: Path, test_image: str
) -> None:
    """Two servers that take the same token: after `connect A --auth`, `connect B` (no
    --auth) is refused by B, since A's token stays A's; exit code 7 says why."""
    a, b = (make_server(published_range=r, environment={"MIASMA_ACCESS_TOKEN": "s3cret"})
            for r in ("15001-15499", "15500-15999"))  # fmt: skip
    cli = Cli(a, tmp_path / "config", test_image)
    del cli.env["MIASMA_SERVER"]
    cli.run(f"connect {a.address} --auth s3cret")
    refused = cli.run(f"connect {b.address}", ok=False)
    assert refused.returncode == 7, refused.stderr
    assert "UNAUTHENTICATED" in refused.stderr
    cli.run(f"connect {b.address} --auth s3cret")
    cli.run(f"connect {a.address}")  # A's token was kept for A
    assert cli.json("apps") == []


def test_connect_refuses_an_unreachable_server(cli: Cli, tmp_path: Path) -> None:
    """`connect` to a port nobody serves fails with one line and saves nothing."""
    elsewhere = f"127.0.0.1:{free_port()}"
    line = one_line_error(cli.run(f"connect {elsewhere}", ok=False))
    assert "cannot reach Miasma" in line
    assert not (tmp_path / "config" / "miasma" / "config.json").exists()


def test_help_lists_every_command(cli: Cli) -> None:
    """`miasma --help` names each command; `apps:edit --help` describes each port and
    volume flag."""
    top = cli.run("--help").stdout
    for command in ("connect", "apps", "apps:create", "apps:edit", "apps:show", "apps:delete",
                    "volumes", "volumes:rm"):  # fmt: skip
        assert command in top
    edit = cli.run("apps:edit --help").stdout
    flags = ("--add-published-ports", "--rm-published-ports", "--add-target-ports",
             "--rm-target-ports", "--add-volume", "--rm-volume", "--dry-run", "--json")  # fmt: skip
    for flag in flags:
        assert flag in edit


def test_ports_watch_prints_changes_live(cli: Cli, server: ServerProcess) -> None:
    """`ports:watch` prints the current ports, then each change as it happens (and --json)."""
    cli.create("web")
    [(_, auto)] = published(server, "web").items()
    watcher = subprocess.Popen(
        [MIASMA, "ports:watch", "-a", "web", "--max-events", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env,
    )
    assert watcher.stdout is not None
    current = watcher.stdout.readline()
    assert "web  current" in current
    assert str(auto) in current
    assert "watching" in watcher.stdout.readline()
    cli.run("apps:edit -a web --add-published-ports 8095")
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    changed, applied = out.strip().splitlines()
    assert "web  changed" in changed
    assert f"{auto} → " in changed
    assert "⇒  8095 → " in changed
    assert "web  applied" in applied
    revision = int(changed.split()[0].lstrip("#"))
    lines = cli.run(f"ports:watch -a web --since {revision} --max-events 1 --json").stdout
    [message] = [json.loads(line) for line in lines.splitlines()]
    assert message["event"]["kind"] == "PORT_EVENT_KIND_ROLLOUT_APPLIED"
    assert int(message["event"]["revision"]) > revision


def test_apps_edit_group_hidden_and_placement_as_miasmas_cli(
    cli: Cli, server: ServerProcess
) -> None:
    """`--group`, `--hidden`/`--visible` (listed again by `apps --all`), and placement
    constraints, which the container runtime refuses rather than ignores."""
    cli.create("proxy")
    before = the_container(server.docker_host, server.instance, "proxy")
    cli.run("apps:edit -a proxy --group infra --hidden")
    assert cli.json("apps") == []
    every = cli.json("apps --all")
    assert isinstance(every, list)
    assert [(a["name"], a["group"], a["hidden"]) for a in every] == [("apps/proxy", "infra", True)]
    assert "Hidden" in cli.run("apps:show -a proxy").stdout
    assert the_container(server.docker_host, server.instance, "proxy").id == before.id
    cli.run("apps:edit -a proxy --visible")
    infra = cli.json("apps -g infra")
    assert isinstance(infra, list)
    assert [a["name"] for a in infra] == ["apps/proxy"]
    refused = cli.run("apps:edit -a proxy --add-placement-constraint node.labels.zone==a", ok=False)
    assert refused.returncode == 5
    assert "swarm" in refused.stderr
    noted = cli.run("apps:edit -a proxy --add-published-ports 15777/host")  # done, with a note
    assert "changes nothing here" in noted.stderr


def test_shell_completion_offers_the_servers_app_names(cli: Cli) -> None:
    """What `eval "$(_MIASMA_COMPLETE=bash_source miasma)"` wires up: `-a` completes from the
    server's apps (hidden ones too)."""
    cli.create("web")
    cli.run(f"apps:create worker -i {cli.image} --stopped")
    cli.run("apps:edit -a worker --hidden")
    env = {"_MIASMA_COMPLETE": "bash_complete", "COMP_WORDS": "miasma apps:show -a w",
           "COMP_CWORD": "3"}  # fmt: skip
    offered = cli.run("miasma", env=env).stdout.split()
    assert offered == ["plain,web", "plain,worker"]
    assert "_miasma_completion" in cli.run("miasma", env={"_MIASMA_COMPLETE": "bash_source"}).stdout


def test_a_command_without_a_works_on_the_app_of_the_last_one_and_old_names_work(
    cli: Cli, server: ServerProcess
) -> None:
    """Miasma's sticky -a, which its templates rely on (`env:edit -a db`, then
    `apps:configure --add-target-ports 5432`), and its first CLI's command names."""
    missing = cli.run("apps:show", ok=False)
    assert missing.returncode == 2
    assert "-a" in missing.stderr
    cli.create("db")
    cli.create("web")
    cli.run("env -a db")  # remembered from here on
    cli.run("apps:configure --add-target-ports 5432")
    assert the_container(server.docker_host, server.instance, "db").env["PORT"] == "5432"
    assert the_container(server.docker_host, server.instance, "web").env["PORT"] != "5432"
    cli.run("apps:reload")
    cli.run("apps:destroy -a web")
    listed = cli.json("apps")
    assert isinstance(listed, list)
    assert [a["name"] for a in listed] == ["apps/db"]
    assert cli.run("-v").stdout.startswith("miasma, version")

"""Rollouts that tell the truth, as a user sees them: the `miasma` CLI as a subprocess
against a real server and Docker shows what Docker does while it works, and fails
(exit 8, and why) when the app does not come up; the same facts are in the API (the
app's observed state and its port events). docs/design.md §4, README "Rollouts"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from miasma.v1 import apps_pb2
from miasma_client import MiasmaClient

from tests.docker_cli import http_get
from tests.e2e.test_cli import Cli
from tests.polling import eventually
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

READY = 3  # the server's --ready-timeout here, seconds
LISTEN_6379 = "trap 'exit 0' TERM; httpd -f -p 6379 -h /www & wait"
DEAF_TO_TERM = "trap '' TERM; httpd -f -p $PORT -h /www & wait"  # only SIGKILL stops it


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return make_server(
        published_range="17001-17499",
        extra_args=["--ready-timeout", str(READY), "--watch-heartbeat", "0.2"],
    )


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path, test_image: str) -> Cli:
    return Cli(server, tmp_path / "config", test_image)


def test_an_app_that_exits_at_once_fails_with_its_exit_code_and_output(cli: Cli) -> None:
    """Exit 8 with Docker's words (exit code 3) and what it wrote; failed in reads too."""
    result = cli.run(["apps:create", "api", "-i", cli.image, "--", "sh", "-c",
                      "echo boom >&2; exit 3"], ok=False)  # fmt: skip
    assert result.returncode == 8, result.stderr
    assert "api: starting the new container" in result.stderr
    assert "Error: api failed: not running:" in result.stderr
    assert "(3)" in result.stderr
    assert "boom" in result.stderr
    assert "Open http" not in result.stdout

    def failed() -> None:  # not in the moment of its next start (docs/design.md §4)
        shown = cli.json("apps:show -a api")
        assert isinstance(shown, dict)
        assert shown["observed"]["rollout"] == "ROLLOUT_STATE_FAILED"
        assert "boom" in shown["observed"]["last_error"]

    eventually(failed, "reads to say it failed", timeout=30)


def test_an_app_not_listening_on_its_port_is_said_so_until_told_where_it_listens(
    cli: Cli, server: ServerProcess
) -> None:
    """It runs, but nothing answers on PORT: the CLI waits for it (saying so), then exits 8
    naming the port; reads list it in not_listening and a NOT_LISTENING event records it.
    --add-target-ports 6379 makes it live, and the verdict goes."""
    result = cli.run(["apps:create", "redis", "-i", cli.image, "--", "sh", "-c", LISTEN_6379],
                     ok=False)  # fmt: skip
    assert result.returncode == 8, result.stderr
    shown = cli.json("apps:show -a redis")
    assert isinstance(shown, dict)
    port = shown["bindings"][0]["target_port"]
    assert f"redis: waiting for the app to listen on {port} (up to {READY} s)" in result.stderr
    assert f"redis runs, but is not listening on {port} after {READY} s" in result.stderr
    assert "--add-target-ports PORT" in result.stderr
    observed = shown["observed"]
    assert observed["not_listening"] == [port]
    assert (observed["running"], observed["rollout"]) == (1, "ROLLOUT_STATE_APPLIED")
    assert observed["last_error"] == f"not listening on {port} after {READY} s"
    listed = cli.run("apps").stdout
    assert "not listening" in listed
    with MiasmaClient(server.address) as client:
        history = [item.event for item in _events(client, "redis")]
    assert [e.kind for e in history][-1] == apps_pb2.PORT_EVENT_KIND_NOT_LISTENING
    assert history[-1].message == observed["last_error"]

    fixed = cli.run("apps:edit -a redis --add-target-ports 6379 --add-published-ports 17600")
    assert "redis: " in fixed.stderr  # it said what it did
    assert "miasma-test" in http_get(17600)
    after = cli.json("apps:show -a redis")
    assert isinstance(after, dict)
    assert (after["observed"]["not_listening"], after["observed"]["last_error"]) == ([], "")


def _events(client: MiasmaClient, app: str) -> list[apps_pb2.WatchPortEventsResponse]:
    """Every event of ``app`` recorded so far: its watch from the start, until the server
    says it is idle (a Progress heartbeat)."""
    seen: list[apps_pb2.WatchPortEventsResponse] = []
    for item in client.watch_port_events(app, since=1, resume=False):
        if item.HasField("progress"):
            return seen
        seen.append(item)
    return seen


def test_a_worker_that_serves_no_port_is_fine_without_the_wait(cli: Cli) -> None:
    """--no-wait: created, exit 0, nothing waited for."""
    result = cli.run(["apps:create", "worker", "-i", cli.image, "--no-wait", "--", "sh", "-c",
                      "trap 'exit 0' TERM; sleep 1000 & wait"])  # fmt: skip
    assert "Created worker." in result.stdout


def test_a_slow_stop_says_what_it_waits_for(cli: Cli) -> None:
    """apps:stop of an app that ignores SIGTERM: 'stopping the container (up to 2 s)' while
    Docker waits for the grace period, then stopped."""
    cli.run(["apps:create", "slow", "-i", cli.image, "--stop-grace", "2", "--", "sh", "-c",
             DEAF_TO_TERM])  # fmt: skip
    result = cli.run("apps:stop -a slow")
    assert "slow: stopping the container (up to 2 s)" in result.stderr
    assert "Stopped slow." in result.stdout
    assert "stopped" in result.stdout
    cli.run("apps:start -a slow")
    deleted = cli.run("apps:delete -a slow")
    assert "slow: stopping the container (up to 2 s)" in deleted.stderr


def test_a_crash_loop_is_shown_with_its_exit_and_output(cli: Cli) -> None:
    """An app that exits a moment after each start: failed, 'crash loop', its exit code and
    last output, rather than running 1/1 between two restarts."""
    cli.run(["apps:create", "flaky", "-i", cli.image, "--no-wait", "--", "sh", "-c",
             "echo crashing >&2; sleep 0.5; exit 4"])  # fmt: skip

    def looping() -> dict[str, object]:
        shown = cli.json("apps:show -a flaky")
        assert isinstance(shown, dict)
        error = shown["observed"]["last_error"]
        assert "crash loop: started again" in error, error
        assert "(4)" in error
        assert "crashing" in error
        return shown

    shown = eventually(looping, "the crash loop to be reported", timeout=60)
    assert shown["observed"]["rollout"] == "ROLLOUT_STATE_FAILED"  # type: ignore[index]

    def listed_as_failing() -> None:  # not in the moment of a new start: retried
        assert "flaky" in cli.run("apps --failing").stdout

    eventually(listed_as_failing, "apps --failing to list it", timeout=30)

"""An app's output on the real engine: ``miasma apps:logs`` as a subprocess and the Python
client's ``read_logs``, against a real server. What is printed is compared with what the
app wrote (stdout and stderr apart), and a follow is checked across a rollout, a server
restart and a flood of long lines."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from miasma.v1 import apps_pb2, apps_pb2_grpc
from miasma_client import MiasmaClient

from tests.docker_cli import docker, the_container
from tests.e2e.test_cli import MIASMA, Cli
from tests.polling import wait_for
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

# Writes "out N" to stdout and "err N" to stderr, N = 1, 2, … every 0.1 s; GEN tells the
# containers of a rollout apart. Exits at once on SIGTERM.
TALKER = [
    "sh", "-c",
    "trap 'exit 0' TERM; echo \"start $GEN\"; i=0; "
    "while :; do i=$((i+1)); echo \"out $GEN $i\"; echo \"err $GEN $i\" >&2; "
    "sleep 0.1 & wait $!; done",
]  # fmt: skip


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose auto published ports come from 28001-28999."""
    return make_server(published_range="28001-28999")


@pytest.fixture
def client(server: ServerProcess) -> Iterator[MiasmaClient]:
    """A blocking client on the server."""
    with MiasmaClient(server.address, timeout=60) as miasma:
        yield miasma


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path, test_image: str) -> Cli:
    """The CLI pointed at this test's server."""
    return Cli(server, tmp_path / "config", test_image)


def lines_of(client: MiasmaClient, app: str, **query: object) -> list[apps_pb2.LogLine]:
    """The lines a read that ends returns."""
    return [r.line for r in client.read_logs(app, **query) if r.HasField("line")]  # type: ignore[arg-type]


def test_apps_logs_prints_stdout_and_stderr_apart_the_last_lines_and_json(
    cli: Cli, client: MiasmaClient, test_image: str
) -> None:
    client.create_app("talker", test_image, command=TALKER, env={"GEN": "1"})
    wait_for(lambda: len(lines_of(client, "talker")) >= 7, "talker to write 3 rounds")

    printed = cli.run("apps:logs -a talker -n 0")
    out, err = printed.stdout.splitlines(), printed.stderr.splitlines()
    assert out[:3] == ["start 1", "out 1 1", "out 1 2"]
    assert err[:2] == ["err 1 1", "err 1 2"]
    assert all(line.startswith(("start", "out")) for line in out)
    assert all(line.startswith("err") for line in err)

    last = cli.run("apps:logs -a talker -n 4 --json").stdout.splitlines()
    last_lines = [json.loads(line)["line"] for line in last]
    assert len(last_lines) == 4
    assert {line["stream"] for line in last_lines} == {"LOG_STREAM_STDOUT", "LOG_STREAM_STDERR"}
    container = the_container(cli.server.docker_host, cli.server.instance, "talker")
    assert {line["source"] for line in last_lines} == {container.id[:12]}
    times = [line["time"] for line in last_lines]
    assert times == sorted(times)

    stamped = cli.run("apps:logs -a talker -n 1 --timestamps")
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (out|err) 1 \d+"
    assert re.fullmatch(stamp, (stamped.stdout + stamped.stderr).strip())

    since = lines_of(client, "talker", tail=3)[0]
    after = lines_of(client, "talker", since=since.time.ToDatetime().astimezone())
    assert after[0].text == since.text  # "since" keeps the line written at that time

    gone = cli.run("apps:logs -a nope", ok=False)
    assert gone.returncode != 0
    assert "nope" in gone.stderr


def test_an_app_that_crashes_at_once_fails_the_create_with_why_and_its_output_can_be_read(
    cli: Cli, client: MiasmaClient, test_image: str
) -> None:
    """`apps:create` of an app that exits at once says so, with the exit code and its last
    output, and exits 8 (not "Created … Open http://…"); the app stays, failed, for every
    client: in GetApp, in the rollout event, and its output in apps:logs."""
    created = cli.run(["apps:create", "crash", "-i", test_image, "--", "sh", "-c",
                       "echo boom >&2; exit 3"], ok=False)  # fmt: skip
    assert created.returncode == 8, created.stdout + created.stderr
    assert "(3)" in created.stderr
    assert "boom" in created.stderr
    assert "Open" not in created.stdout
    failed = next(
        m.event
        for m in client.watch_port_events("crash", since=1)
        if m.HasField("event") and m.event.kind == apps_pb2.PORT_EVENT_KIND_ROLLOUT_FAILED
    )
    assert "boom" in failed.message
    wait_for(lambda: "boom" in cli.run("apps:logs -a crash").stderr, "boom in the logs")

    seen: list[apps_pb2.ObservedState] = []

    def says_why() -> bool:  # between two of its restarts
        seen[:] = [client.get_app("crash").observed]
        return seen[0].running == 0 and "(3)" in seen[0].last_error

    wait_for(says_why, "GetApp to say it exits with 3")
    assert "boom" in seen[0].last_error  # its last output, in every client's GetApp
    assert seen[0].rollout == apps_pb2.ROLLOUT_STATE_FAILED


def test_a_follow_moves_to_the_new_container_of_a_rollout_and_survives_a_restart(
    server: ServerProcess, client: MiasmaClient, test_image: str
) -> None:
    client.create_app("talker", test_image, command=TALKER, env={"GEN": "1"})
    got: list[apps_pb2.ReadLogsResponse] = []
    stop = threading.Event()

    def follow() -> None:
        with MiasmaClient(server.address, timeout=60) as reader:
            stream = reader.read_logs("talker", tail=1, follow=True)
            for response in stream:
                got.append(response)
                if stop.is_set():
                    stream.close()
                    return

    def texts() -> list[str]:
        return [r.line.text for r in got if r.HasField("line")]

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        wait_for(lambda: any(t.startswith("out 1") for t in texts()), "gen 1 lines")
        first = the_container(server.docker_host, server.instance, "talker")
        client.update_app("talker", env={"GEN": "2"})
        wait_for(lambda: "start 2" in texts(), "the new container's first line")
        second = the_container(server.docker_host, server.instance, "talker")
        assert second.id != first.id
        [notice] = [r.notice for r in got if r.HasField("notice")]
        assert notice.source == second.id[:12]
        assert first.id[:12] in notice.message
        moved = [r.line.source for r in got if r.HasField("line")]
        assert set(moved) == {first.id[:12], second.id[:12]}

        server.restart()  # the follow ends with UNAVAILABLE; the client reopens it
        seen = len(texts())
        wait_for(lambda: len(texts()) > seen + 10, "lines after the server restart")
        stop.set()
    finally:
        stop.set()
        follower.join(timeout=30)
    for stream_name in ("out", "err"):
        numbers = [int(t.split()[2]) for t in texts() if t.startswith(f"{stream_name} 2 ")]
        assert numbers == list(range(numbers[0], numbers[-1] + 1)), "a line lost or twice"


def test_long_lines_are_cut_and_a_flood_is_read_to_the_end(
    client: MiasmaClient, test_image: str
) -> None:
    """A 100 KB line comes as Docker splits it (16 KiB pieces); 20,000 lines all come."""
    flood = "head -c 100000 /dev/zero | tr '\\0' a; echo; seq 1 20000; echo done"
    client.create_app("flood", test_image, command=["sh", "-c", f"{flood}; sleep 600"])

    def done() -> bool:
        return any(line.text == "done" for line in lines_of(client, "flood", tail=1))

    wait_for(done, "the flood to be written")
    lines = lines_of(client, "flood")
    assert all(len(line.text.encode()) <= 16 * 1024 for line in lines)
    assert sum(line.text.count("a") for line in lines) == 100_000
    numbers = [line.text for line in lines if line.text.isdigit()]
    assert numbers == [str(n) for n in range(1, 20001)]


def test_the_cli_follows_until_interrupted(cli: Cli, client: MiasmaClient) -> None:
    """`apps:logs -f` keeps printing; Ctrl-C (SIGINT) ends it cleanly."""
    client.create_app("talker", cli.image, command=TALKER, env={"GEN": "1"})
    process = subprocess.Popen(
        [MIASMA, "apps:logs", "-a", "talker", "-f", "-n", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli.env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        seen = [process.stdout.readline() for _ in range(5)]
        assert all(line.startswith(("out 1", "start 1")) for line in seen), seen
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) in (0, 130)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_follower_that_does_not_read_costs_the_server_no_memory_under_a_flood(
    server: ServerProcess, client: MiasmaClient, test_image: str
) -> None:
    """While an app writes 32 MiB and a follower reads nothing, the server's memory stays
    put (Docker's stream waits behind gRPC's flow control); then the follower reads on."""
    line = "x" * 100
    client.create_app("flood", test_image, command=["sh", "-c", f"while :; do echo {line}; done"])
    container = the_container(server.docker_host, server.instance, "flood")
    log_file = Path(docker(server.docker_host, "inspect", "-f", "{{.LogPath}}", container.id)
                    .strip())  # fmt: skip
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status")

    def rss_kib() -> int:
        return int(status.read_text().split("VmRSS:")[1].split()[0])

    with server.channel() as channel:
        stub = apps_pb2_grpc.AppServiceStub(channel)
        call = stub.ReadLogs(apps_pb2.ReadLogsRequest(name="apps/flood", follow=True))
        replies = iter(call)
        try:
            assert next(replies).line.text == line
            before, written = rss_kib(), log_file.stat().st_size
            wait_for(lambda: log_file.stat().st_size > written + 32 * 2**20, "32 MiB written", 120)
            grown = rss_kib() - before
            print(f"server memory grew {grown} KiB while 32 MiB of lines were written")
            assert grown < 16 * 1024, f"the server grew by {grown} KiB"
            for _ in range(10_000):  # the follower reads on
                assert next(replies).line.text == line
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs

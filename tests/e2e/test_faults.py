"""Fault injection on real servers and engines: SIGKILL in a burst, a Docker outage, drift."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from miasma.v1 import apps_pb2
from miasma_client import AsyncMiasmaClient, MiasmaClient, MiasmaError

from scripts.engine import TEST_IMAGE, ensure_test_image
from tests.conftest import HTTPD_COMMAND
from tests.docker_cli import Container, containers, docker, http_get, the_container
from tests.engines import ThrowawayEngine, can_start_engines, throwaway_engine
from tests.polling import eventually
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

T = TypeVar("T")
KIND = apps_pb2.PortEventKind
Response = apps_pb2.WatchPortEventsResponse
RANGE = "22001-22999"
HEARTBEAT = ("--watch-heartbeat", "0.5")  # idle watches report progress: reads end on time
UNKNOWN_OUTCOME = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
Ledger = set[tuple[str, int, str]]  # (protocol, port, app)


# -- helpers ---------------------------------------------------------------------------------


def revision_of(message: Response) -> int:
    """The revision a watch message stands for."""
    payload = message.WhichOneof("payload")
    return int(getattr(message, payload).revision) if payload else 0


def watch_events(
    client: MiasmaClient,
    since: int,
    done: Callable[[list[apps_pb2.PortEvent], Response], bool],
    timeout: float = 30.0,
) -> list[apps_pb2.PortEvent]:
    """Events after ``since`` until ``done(events, last_message)`` holds."""
    seen: list[apps_pb2.PortEvent] = []
    stream = client.watch_port_events(since=since)
    deadline = time.monotonic() + timeout
    try:
        for message in stream:  # idle streams get a heartbeat: the deadline is checked
            if message.HasField("event"):
                seen.append(message.event)
            if done(seen, message):
                return seen
            assert time.monotonic() < deadline, f"not within {timeout:g} s; events: {seen}"
    finally:
        stream.close()
    raise AssertionError("the watch stream ended")


async def current_revision(client: AsyncMiasmaClient) -> int:
    """The server's revision now (a watch's snapshot marker; it reconnects if need be)."""
    stream = client.watch_port_events()
    async with asyncio.timeout(30):
        async for message in stream:
            if message.HasField("snapshot_complete"):
                await stream.aclose()
                return int(message.snapshot_complete.revision)
    raise AssertionError("the watch stream ended")


async def watch_events_async(
    client: AsyncMiasmaClient, since: int, until_revision: int
) -> list[apps_pb2.PortEvent]:
    """Every event after ``since`` up to ``until_revision``."""
    seen: list[apps_pb2.PortEvent] = []
    stream = client.watch_port_events(since=since)
    async with asyncio.timeout(30):
        async for message in stream:
            if message.HasField("event"):
                seen.append(message.event)
            if revision_of(message) >= until_revision:
                break
    await stream.aclose()
    return seen


def with_kind(kind: int, app: str) -> Callable[[list[apps_pb2.PortEvent], Response], bool]:
    """Done once an event of ``kind`` for ``app`` arrived."""
    return lambda seen, _: any(e.kind == kind and e.app == f"apps/{app}" for e in seen)


def published(bindings: Iterable[apps_pb2.PortBinding]) -> set[int]:
    """The published ports of ``bindings``."""
    return {b.published_port for b in bindings}


def shape(bindings: Iterable[apps_pb2.PortBinding]) -> list[tuple[int, int, int, bool, bool]]:
    """Bindings as comparable tuples, slot order kept."""
    return [
        (b.published_port, b.target_port, b.protocol, b.published_explicit, b.target_explicit)
        for b in bindings
    ]


def docker_ports(app: apps_pb2.App) -> dict[str, int]:
    """What ``docker inspect`` must show as the app's port bindings."""
    return {f"{b.target_port}/tcp": b.published_port for b in app.bindings}


def runs_with(host: str, instance: str, app: apps_pb2.App) -> Callable[[], Container]:
    """A check: ``app`` has exactly one container, running, with exactly its bindings."""
    name = app.name.removeprefix("apps/")

    def check() -> Container:
        found = containers(host, instance, name)
        assert len(found) == 1, f"containers of {name}: {found}"
        assert found[0].running, f"{name} is not running: {found}"
        assert found[0].published == docker_ports(app), f"{name}: {found[0].published}"
        return found[0]

    return check


def read_ledger(db: Path) -> tuple[Ledger, list[tuple[str, int, str]]]:
    """The ``published_ports`` rows and the bindings' published ports, straight from SQLite."""
    with closing(sqlite3.connect(db)) as conn:
        held = set(conn.execute("SELECT protocol, port, app FROM published_ports"))
        bound = list(conn.execute("SELECT protocol, published, app FROM bindings"))
    return held, bound


def assert_no_double_allocation(held: Ledger, bound: list[tuple[str, int, str]]) -> None:
    """No published port is held or bound by two apps, and every bound port is held."""
    assert len({(proto, port) for proto, port, _ in held}) == len(held), held
    owners: dict[tuple[str, int], set[str]] = {}
    for proto, port, app in bound:
        owners.setdefault((proto, port), set()).add(app)
    assert not {k: v for k, v in owners.items() if len(v) > 1}, "a port bound by two apps"
    assert set(bound) <= held, f"bound but not held: {set(bound) - held}"


def listen_on(port: int) -> socket.socket:
    """A socket listening on ``port`` on every address, as a process outside Miasma would."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as most servers do
        sock.bind(("0.0.0.0", port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


@contextmanager
def remove_and_squat(host: str, instance: str, app: str, port: int) -> Iterator[None]:
    """``docker rm -f`` the app's container and take ``port`` before Miasma recreates it."""
    deadline = time.monotonic() + 20
    while True:
        names = [c.name for c in containers(host, instance, app)]
        if names:
            docker(host, "rm", "-f", *names)
        try:
            sock = listen_on(port)
            break
        except OSError:  # the reconciler was quicker: its new container holds the port
            assert time.monotonic() < deadline, f"could not take port {port} from {app}"
    with sock:
        yield


# -- 1. SIGKILL in the middle of a burst of edits --------------------------------------------

RUNNING = ("r0", "r1")
STOPPED = ("s0", "s1", "s2", "s3")
NAMES = RUNNING + STOPPED


def anchor(i: int) -> int:
    """App ``i``'s first published port: never edited, so others asking for it must fail."""
    return 22100 + i


def own(i: int, k: int) -> int:
    """The ``k``-th port of app ``i``'s private block in 22500-22999."""
    return 22500 + 60 * i + k


@dataclass(frozen=True)
class Edit:
    """One EditPorts call of the burst, when it is sent, and the code it must fail with."""

    app: str
    add: tuple[int, ...] = ()
    remove: tuple[int, ...] = ()
    refusal: grpc.StatusCode | None = None
    delay: float = 0.0


@dataclass
class Outcome:
    """What the client learned: the reply (acknowledged) or the error."""

    edit: Edit
    reply: apps_pb2.EditPortsResponse | None = None
    error: MiasmaError | None = None


def burst_plan() -> list[Edit]:
    """Ten edits per app: four removals, four additions, two that must be refused."""
    rng = random.Random(7)
    plan: list[Edit] = []
    for i, name in enumerate(NAMES):
        other = anchor((i + 1) % len(NAMES))  # held by the next app
        edits = [
            *(Edit(name, remove=(own(i, k),)) for k in range(4)),
            *(Edit(name, add=(own(i, 10 + k),)) for k in range(4)),
            Edit(name, add=(own(i, 20), other), refusal=grpc.StatusCode.ALREADY_EXISTS),
            Edit(name, add=(own(i, 21), 0), refusal=grpc.StatusCode.INVALID_ARGUMENT),
        ]
        # Running apps' edits queue behind each rollout at once; stopped apps' quick ones are
        # spread over 4 s, so some are in flight when the kill comes.
        plan += [replace(e, delay=0 if name in RUNNING else rng.uniform(0, 4)) for e in edits]
    rng.shuffle(plan)
    return plan


async def fire(plan: list[Edit], server: ServerProcess) -> list[Outcome]:
    """Send the edits concurrently; SIGKILL the server once 20 are acknowledged, one of
    them on each running app (so rollouts were both finished and cut short)."""
    outcomes = [Outcome(edit) for edit in plan]
    killing: list[asyncio.Task[int]] = []

    def time_to_kill() -> bool:
        acked = [o.edit.app for o in outcomes if o.reply is not None]
        return len(acked) >= 20 and all(name in acked for name in RUNNING)

    async with AsyncMiasmaClient(server.address, timeout=30) as client:

        async def send(outcome: Outcome) -> None:
            edit = outcome.edit
            await asyncio.sleep(edit.delay)
            try:
                outcome.reply = await client.edit_ports(
                    edit.app, add_published=edit.add, remove_published=edit.remove
                )
            except MiasmaError as exc:
                outcome.error = exc
                return
            if not killing and time_to_kill():
                killing.append(asyncio.create_task(asyncio.to_thread(server.stop, signal.SIGKILL)))

        await asyncio.gather(*(send(outcome) for outcome in outcomes))
        if not killing:
            server.stop(signal.SIGKILL)
        for task in killing:
            await task
    return outcomes


async def test_sigkill_during_a_burst_keeps_every_acknowledged_edit(
    make_server: Callable[..., ServerProcess], test_image: str
) -> None:
    """After SIGKILL amid 60 concurrent edits, acknowledged edits survive, refused ones leave
    no trace, no port has two owners, and Docker converges to the database."""
    server = make_server(published_range=RANGE, extra_args=HEARTBEAT)
    async with AsyncMiasmaClient(server.address, timeout=30) as client:
        for i, name in enumerate(NAMES):
            await client.create_app(
                name, test_image, command=HTTPD_COMMAND if name in RUNNING else (),
                published_ports=[anchor(i), *(own(i, k) for k in range(4))],
                stopped=name not in RUNNING,
            )  # fmt: skip
        before = {a.name.removeprefix("apps/"): a for a in await client.list_apps()}
        start = await current_revision(client)

    outcomes = await fire(burst_plan(), server)
    acked = [o for o in outcomes if o.reply is not None]
    errors = [(o, o.error) for o in outcomes if o.error is not None]
    unknown = [o for o, e in errors if e.code in UNKNOWN_OUTCOME]
    refused = [o for o, e in errors if e.code not in UNKNOWN_OUTCOME]
    assert len(acked) >= 20, "the kill comes after the 20th acknowledgement"
    assert all(any(o.edit.app == name for o in acked) for name in RUNNING), "no rollout done"
    assert unknown, "the kill must land in the middle of the burst"
    assert all(o.edit.refusal is None for o in acked), "an edit that must fail succeeded"
    for outcome, error in errors:
        assert error.code in {outcome.edit.refusal, *UNKNOWN_OUTCOME}, (outcome.edit, error)

    held, bound = read_ledger(server.db_path)  # as the crash left it
    assert_no_double_allocation(held, bound)
    extra = len(held - set(bound))  # ports held by rollouts the kill cut short

    server.start()
    server.wait_health(serving=True)
    async with AsyncMiasmaClient(server.address, timeout=30) as client:
        # Watches resume: this process's gRPC may still back off from the dead server's port.
        log = await watch_events_async(client, start, await current_revision(client))
        after = {a.name.removeprefix("apps/"): a for a in await client.list_apps()}

    committed = sum(e.kind == KIND.PORT_EVENT_KIND_CHANGED for e in log)
    print(
        f"burst: {len(acked)} acknowledged, {len(refused)} refused, {len(unknown)} unknown "
        f"({committed - len(acked)} of them committed); {extra} extra ledger rows at the kill"
    )
    kinds = {e.kind for e in log}
    assert kinds <= {KIND.PORT_EVENT_KIND_CHANGED, KIND.PORT_EVENT_KIND_ROLLOUT_APPLIED}, log
    by_revision = {e.revision: e for e in log}
    for name in NAMES:  # each app's CHANGED events chain from its old bindings to its current
        current = before[name].bindings
        for event in (e for e in log if e.app == f"apps/{name}"):
            if event.kind == KIND.PORT_EVENT_KIND_CHANGED:
                assert shape(event.old_bindings) == shape(current), event
                current = event.new_bindings
        assert shape(after[name].bindings) == shape(current), name
    for outcome in acked:
        assert outcome.reply is not None
        event = by_revision[outcome.reply.app.revision]
        assert (event.kind, event.app) == (KIND.PORT_EVENT_KIND_CHANGED, outcome.reply.app.name)
        assert shape(event.new_bindings) == shape(outcome.reply.app.bindings)
        final = published(after[outcome.edit.app].bindings)  # ports are never re-added/removed
        assert set(outcome.edit.add) <= final, outcome.edit
        assert not set(outcome.edit.remove) & final, outcome.edit
    for edit in (o.edit for o in outcomes if o.edit.refusal is not None):
        fresh = edit.add[0]  # the edit's valid port: an atomic refusal must not keep it
        assert not any(fresh in published(e.new_bindings) for e in log), edit
        assert all(fresh not in published(a.bindings) for a in after.values()), edit
    everywhere = [p for a in after.values() for p in published(a.bindings)]
    assert len(everywhere) == len(set(everywhere)), "a published port held by two apps"

    for name in RUNNING:
        await asyncio.to_thread(
            eventually, runs_with(server.docker_host, server.instance, after[name]),
            f"{name} converges", 30,
        )  # fmt: skip
        for port in published(after[name].bindings):
            assert (await asyncio.to_thread(http_get, port)).strip() == "miasma-test"
    for name in STOPPED:
        assert not containers(server.docker_host, server.instance, name)

    server.stop()
    held, bound = read_ledger(server.db_path)
    assert_no_double_allocation(held, bound)
    assert held == set(bound), "after a clean stop the ledger is exactly the bindings"


# -- 2. Docker goes away while the server runs -----------------------------------------------


@pytest.fixture
def own_engine() -> Iterator[ThrowawayEngine]:
    """A throw-away engine with the test image, which the test may stop and start."""
    if not can_start_engines():
        pytest.skip("starting a throw-away dockerd needs root")
    with throwaway_engine() as engine:
        ensure_test_image(engine.host)
        yield engine


@pytest.fixture
def outage_server(
    own_engine: ThrowawayEngine, tmp_path: Path, instance: str
) -> Iterator[ServerProcess]:
    """A server on the throw-away engine that reconciles every 2 s."""
    server = ServerProcess(
        db_path=tmp_path / "miasma.db", docker_host=own_engine.host, instance=instance,
        published_range=RANGE, extra_args=["--reconcile-interval", "2", *HEARTBEAT],
    )  # fmt: skip
    server.start()
    try:
        server.wait_health(serving=True)
        yield server
    finally:
        server.stop()


def edit_while_docker_is_away(
    client: MiasmaClient, server: ServerProcess, engine: ThrowawayEngine, port: int
) -> tuple[apps_pb2.App, apps_pb2.App]:
    """Create a running app on ``port``, stop the engine, add ``port + 1``: (created, edited)."""
    created = client.create_app("steady", TEST_IMAGE, command=HTTPD_COMMAND, published_ports=[port])
    assert http_get(port).strip() == "miasma-test"
    engine.stop()
    server.wait_health(serving=False, timeout=20)
    edited = client.edit_ports("steady", add_published=[port + 1]).app
    assert published(edited.bindings) == {port, port + 1}
    assert edited.observed.rollout == apps_pb2.ROLLOUT_STATE_PENDING, edited.observed
    assert "applied when Docker returns" in edited.observed.last_error
    return created, edited


def seen_again(client: MiasmaClient) -> Callable[[], apps_pb2.App]:
    """A check that reads of "steady" are current (not unknown since an outage)."""

    def check() -> apps_pb2.App:
        app = client.get_app("steady")
        assert not app.observed.HasField("unknown_since"), app.observed
        return app

    return check


def test_the_engine_going_away_shows_in_reads_at_once(
    own_engine: ThrowawayEngine, outage_server: ServerProcess
) -> None:
    """The engine stops: reads say since when the figures are unknown, within seconds (the
    event stream breaks at once); it starts again: reads are current again."""
    engine, server = own_engine, outage_server
    with MiasmaClient(server.address, timeout=30) as client:
        client.create_app("steady", TEST_IMAGE, command=HTTPD_COMMAND, published_ports=[22331])
        eventually(seen_again(client), "reads to be current")
        engine.stop()
        stopped = time.monotonic()

        def unknown() -> apps_pb2.App:
            app = client.get_app("steady")
            assert app.observed.HasField("unknown_since"), app.observed
            return app

        eventually(unknown, "reads to say Docker is not seen", timeout=10)
        print(f"reads said unknown {time.monotonic() - stopped:.2f} s after the engine stopped")
        engine.start()
        eventually(seen_again(client), "reads to be current again")


def test_docker_outage_keeps_serving_reads_and_applies_edits_when_docker_returns(
    own_engine: ThrowawayEngine, outage_server: ServerProcess
) -> None:
    """With the engine stopped health is NOT_SERVING, reads answer and an edit is stored as
    pending (ROLLOUT_PENDING); when the engine is back the same process applies it."""
    engine, server = own_engine, outage_server
    assert server.process is not None
    pid = server.process.pid
    with MiasmaClient(server.address, timeout=30) as client:
        created, edited = edit_while_docker_is_away(client, server, engine, 22301)
        read = client.get_app("steady")
        assert shape(read.bindings) == shape(edited.bindings)
        assert read.observed.rollout == apps_pb2.ROLLOUT_STATE_PENDING, read.observed
        assert read.observed.HasField("unknown_since"), "reads must say Docker is not seen"
        assert [a.name for a in client.list_apps()] == ["apps/steady"]
        pending = watch_events(
            client, created.revision, with_kind(KIND.PORT_EVENT_KIND_ROLLOUT_PENDING, "steady")
        )[-1]
        assert shape(pending.new_bindings) == shape(edited.bindings)
        assert "applied when Docker returns" in pending.message, pending

        engine.start()  # same directory, same socket: containers of before are still there
        server.wait_health(serving=True, timeout=30)
        applied = watch_events(
            client, pending.revision, with_kind(KIND.PORT_EVENT_KIND_ROLLOUT_APPLIED, "steady")
        )[-1]
        assert shape(applied.new_bindings) == shape(edited.bindings)
        eventually(runs_with(engine.host, server.instance, edited), "steady converges")
        assert http_get(22301).strip() == http_get(22302).strip() == "miasma-test"
        final = eventually(seen_again(client), "reads to be current again")
        assert (final.observed.running, final.observed.last_error) == (1, ""), final.observed
        assert final.observed.rollout == apps_pb2.ROLLOUT_STATE_APPLIED
    assert server.process is not None, "the server is gone"
    assert server.process.pid == pid, "Miasma was restarted"


def test_a_rollout_pending_across_a_miasma_restart_still_gets_its_result_event(
    own_engine: ThrowawayEngine, outage_server: ServerProcess
) -> None:
    """An edit stored while Docker was away and applied after Miasma restarted is followed
    by its ROLLOUT_APPLIED event."""
    engine, server = own_engine, outage_server
    with MiasmaClient(server.address, timeout=30) as client:
        _, edited = edit_while_docker_is_away(client, server, engine, 22311)
    server.restart()
    engine.start()
    server.wait_health(serving=True, timeout=30)
    eventually(runs_with(engine.host, server.instance, edited), "steady converges")
    with MiasmaClient(server.address, timeout=30) as client:
        applied = with_kind(KIND.PORT_EVENT_KIND_ROLLOUT_APPLIED, "steady")
        watch_events(client, edited.revision, applied, timeout=2)  # it is due by now


def test_reads_while_docker_returns_keep_the_pending_rollout_and_its_result_event(
    own_engine: ThrowawayEngine, outage_server: ServerProcess
) -> None:
    """A client polling GetApp while Docker comes back (as `miasma apps:edit` does) sees the
    edit pending, then applied, and the ROLLOUT_APPLIED event is logged."""
    engine, server = own_engine, outage_server
    seen: list[str] = []  # what each read said: its rollout state, or the call's error
    done = threading.Event()

    def poll() -> None:
        with MiasmaClient(server.address, timeout=5) as poller:
            while not done.is_set():
                try:
                    observed = poller.get_app("steady").observed
                    seen.append(apps_pb2.RolloutState.Name(observed.rollout))
                except MiasmaError as exc:
                    seen.append(f"error: {exc}")
                time.sleep(0.05)

    with MiasmaClient(server.address, timeout=30) as client:
        _, edited = edit_while_docker_is_away(client, server, engine, 22321)
        poller = threading.Thread(target=poll)
        poller.start()
        try:
            engine.start()
            eventually(runs_with(engine.host, server.instance, edited), "steady converges")
        finally:
            done.set()
            poller.join()
        wrong = set(seen) - {"ROLLOUT_STATE_PENDING", "ROLLOUT_STATE_IN_PROGRESS",
                             "ROLLOUT_STATE_APPLIED"}  # fmt: skip
        assert not wrong, f"reads while Docker returned said: {wrong}"
        applied = with_kind(KIND.PORT_EVENT_KIND_ROLLOUT_APPLIED, "steady")
        watch_events(client, edited.revision, applied, timeout=2)  # it is due by now


# -- 3. Drift repaired while the server runs -------------------------------------------------


@pytest.fixture
def drift_server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server that reconciles every second (every ping, in practice: 2 s)."""
    return make_server(published_range=RANGE, extra_args=["--reconcile-interval", "1", *HEARTBEAT])


# Idles until SIGTERM, then exits at once (a bare `sleep` as PID 1 ignores it: each removal
# would wait out the 10 s grace period).
IDLE = ("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done")


def run_labelled(host: str, name: str, labels: dict[str, str], *args: str) -> None:
    """``docker run -d`` a container by hand, with ``labels``."""
    flags = [f"--label={key}={value}" for key, value in labels.items()]
    docker(host, "run", "-d", "--name", name, *flags, *args)


def test_container_removed_stopped_or_replaced_by_hand_is_put_back_on_the_same_ports(
    drift_server: ServerProcess, test_image: str
) -> None:
    """A running app's container removed, stopped, removed while a foreign process holds
    one of its ports, or replaced by a hand-made one runs again on its ports."""
    host, instance = drift_server.docker_host, drift_server.instance
    with MiasmaClient(drift_server.address, timeout=30) as client:
        app = client.create_app(
            "phoenix", test_image, command=HTTPD_COMMAND, published_ports=[22401, 22402]
        )
    original = eventually(runs_with(host, instance, app), "phoenix runs")

    docker(host, "rm", "-f", original.name)
    eventually(runs_with(host, instance, app), "phoenix is recreated after docker rm -f")
    assert http_get(22401).strip() == http_get(22402).strip() == "miasma-test"

    docker(host, "stop", "-t", "1", the_container(host, instance, "phoenix").name)
    eventually(runs_with(host, instance, app), "phoenix is started after docker stop")
    assert http_get(22401).strip() == "miasma-test"

    with remove_and_squat(host, instance, "phoenix", 22402):
        log_path = drift_server.log_path
        assert log_path is not None

        def refused() -> None:
            log = log_path.read_text(errors="replace")
            assert "could not converge app phoenix" in log, "no reconciliation failed yet"

        eventually(refused, "the reconciler tries while 22402 is held")
    eventually(runs_with(host, instance, app), "phoenix is recreated once 22402 is free")

    labels = {"io.miasma.instance": instance, "io.miasma.app": "phoenix"}
    target = app.bindings[0].target_port
    run_labelled(
        host, f"{instance}-byhand", {**labels, "io.miasma.spec-hash": "byhand"},
        "-p", f"127.0.0.1:22403:{target}", test_image, "sleep", "600",
    )  # fmt: skip
    eventually(runs_with(host, instance, app), "the hand-made container is removed")
    assert http_get(22401).strip() == "miasma-test"


def test_hand_made_container_with_miasmas_labels_but_other_ports_is_replaced(
    drift_server: ServerProcess, test_image: str
) -> None:
    """A container re-created by hand with Miasma's labels but another published port is
    replaced by one on the app's port."""
    host, instance = drift_server.docker_host, drift_server.instance
    with MiasmaClient(drift_server.address, timeout=30) as client:
        app = client.create_app(
            "forged", test_image, command=HTTPD_COMMAND, published_ports=[22411]
        )
    container = eventually(runs_with(host, instance, app), "forged runs")
    [raw] = json.loads(docker(host, "inspect", container.name))
    target = app.bindings[0].target_port
    with drift_server.paused():  # else its repair of the removal takes the name first
        docker(host, "rm", "-f", container.name)
        run_labelled(
            host, container.name, raw["Config"]["Labels"], "--network", instance,
            *(f"--env={item}" for item in raw["Config"]["Env"]),
            "-p", f"127.0.0.1:22412:{target}", test_image, *HTTPD_COMMAND,
        )  # fmt: skip
        # Looked at while the server is paused: once it runs, it repairs at once.
        forged = [c.published for c in containers(host, instance, "forged")]
        assert forged == [{f"{target}/tcp": 22412}], f"the forgery did not take: {forged}"
    eventually(runs_with(host, instance, app), "forged is put back on 22411", timeout=5)


def test_labelled_container_of_an_unknown_app_is_removed_while_running(
    drift_server: ServerProcess, test_image: str
) -> None:
    """Containers labelled with this instance but no app go; another instance's one stays."""
    host, instance = drift_server.docker_host, drift_server.instance
    other = f"{instance}x"

    def run_ghost(owner: str, app: str) -> None:
        labels = {"io.miasma.instance": owner, "io.miasma.app": app}
        run_labelled(host, f"{owner}-{app}", labels, test_image, *IDLE)

    def gone(app: str) -> Callable[[], None]:
        def check() -> None:
            assert not containers(host, instance, app), f"orphan {app} is still there"

        return check

    run_ghost(other, "ghost")
    try:
        run_ghost(instance, "ghost")
        eventually(gone("ghost"), "the orphan is removed")
        run_ghost(instance, "ghost2")  # its removal proves a later pass ran too
        eventually(gone("ghost2"), "the second orphan is removed")
        assert [c.running for c in containers(host, other, "ghost")] == [True]
    finally:
        docker(host, "rm", "-f", f"{other}-ghost", check=False)


def test_foreign_listener_on_a_reserved_port_fails_the_start_and_says_which_port(
    drift_server: ServerProcess, test_image: str
) -> None:
    """StartApp fails with FAILED_PRECONDITION naming a port a foreign process took while
    the app was stopped, so does a ROLLOUT_FAILED event; once the port is free it starts."""
    with MiasmaClient(drift_server.address, timeout=30) as client:
        client.create_app("squatted", test_image, command=HTTPD_COMMAND, published_ports=[22451])
        assert http_get(22451).strip() == "miasma-test"
        stopped = client.stop_app("squatted")
        assert published(stopped.bindings) == {22451}, "a stopped app keeps its ports"
        with listen_on(22451):
            with pytest.raises(MiasmaError) as refused:
                client.start_app("squatted")
            assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION, refused.value
            assert "22451" in refused.value.message, refused.value
            failed = with_kind(KIND.PORT_EVENT_KIND_ROLLOUT_FAILED, "squatted")
            event = watch_events(client, stopped.revision, failed)[-1]
            assert "22451" in event.message, event
            app = client.get_app("squatted")
            assert published(app.bindings) == {22451}, "the app keeps its port"
            assert app.desired_state == apps_pb2.DESIRED_STATE_STOPPED, "the start is undone"
        started = client.start_app("squatted")
        assert started.desired_state == apps_pb2.DESIRED_STATE_RUNNING
        assert http_get(22451).strip() == "miasma-test"


def test_failed_start_leaves_the_port_conflict_on_the_app(
    drift_server: ServerProcess, test_image: str
) -> None:
    """After StartApp failed on a port a foreign process holds, GetApp's
    ``observed.last_error`` names that port."""
    with MiasmaClient(drift_server.address, timeout=30) as client:
        client.create_app("squatted", test_image, stopped=True, published_ports=[22461])
        with listen_on(22461):
            with pytest.raises(MiasmaError):
                client.start_app("squatted")
            app = client.get_app("squatted")
    assert "22461" in app.observed.last_error, app.observed


def test_port_taken_from_a_running_app_is_reported_on_the_app_and_in_events(
    drift_server: ServerProcess, test_image: str
) -> None:
    """When the reconciler cannot recreate a container because a foreign process took its
    port, GetApp's ``observed.last_error`` and a ROLLOUT_FAILED event name the port."""
    host, instance = drift_server.docker_host, drift_server.instance
    with MiasmaClient(drift_server.address, timeout=30) as client:
        app = client.create_app(
            "squatted", test_image, command=HTTPD_COMMAND, published_ports=[22471]
        )
        eventually(runs_with(host, instance, app), "squatted runs")
        with remove_and_squat(host, instance, "squatted", 22471):

            def reported() -> None:
                observed = client.get_app("squatted").observed
                assert "22471" in observed.last_error, observed

            eventually(reported, "the conflict shows on the app", timeout=5)
            failed = with_kind(KIND.PORT_EVENT_KIND_ROLLOUT_FAILED, "squatted")
            watch_events(client, app.revision, failed, timeout=5)

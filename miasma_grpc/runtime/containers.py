"""Container runtime: one Docker container per running app, through aiodocker.

Docker cannot change the ports of an existing container, so any change of
an app's spec (image, command, env, ports, volumes) recreates its container.
The new container starts first when that is safe (no downtime); it starts
only after the old one has stopped when the two would share a published
port, or a writable volume (two processes on one data directory corrupt
it). If the new one fails, the old one is started again, so a failed change
leaves the app as it was. Stops send the image's stop signal and wait the
app's ``stop_grace`` before Docker kills (docs/volumes.md).

Every ``VOLUME`` the image declares gets a named volume of the app's own,
mounted again by every container the app gets; containers are removed
without their volumes.

While an old container exists, the new one is given until its app accepts
TCP connections on its target ports, or ``ready_timeout`` seconds (the app
may not listen at all); if it stops running meanwhile, the change has failed.
Docker's proxy accepts on a published port before the app listens, so the
probe goes to the container's own address on the network: only possible when
the engine runs on this machine, so the server passes ``ready_timeout=0`` (no
wait) for a remote engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from aiodocker.containers import DockerContainer

from miasma_grpc.domain.errors import RuntimeFailure, Unavailable
from miasma_grpc.domain.images import PulledImage
from miasma_grpc.domain.logs import LogLine, LogSource
from miasma_grpc.domain.models import (
    DEFAULT_STOP_GRACE,
    App,
    DesiredState,
    Observed,
    Port,
    Protocol,
)
from miasma_grpc.domain.volumes import Mount, app_mounts, writable
from miasma_grpc.runtime.base import (
    LABEL_APP,
    LABEL_MANAGED,
    LABEL_SPEC,
    RuntimeInfo,
    Survey,
    say,
)
from miasma_grpc.runtime.docker import (
    ENGINE_ERRORS,
    declared_volumes,
    docker_errors,
    ensure_image,
)
from miasma_grpc.runtime.logs import read_logs
from miasma_grpc.runtime.networks import ensure_network
from miasma_grpc.runtime.volumes import DockerVolumes, mount_spec

log = logging.getLogger(__name__)

LOG_LINES = 5  # of a new container that died, quoted in the failure
# Container events that can change what an app runs (exec_* and the like cannot).
# Docker's container events that change what an app's observed state is made of. Not
# "create": it changes nothing that runs (a "start" follows for a running app), and a
# burst of creates (10,000 apps made in a row) would cost a look at Docker each.
CONTAINER_CHANGES = frozenset(
    {"start", "restart", "stop", "kill", "die", "oom", "destroy", "pause", "unpause",
     "rename", "health_status"}
)  # fmt: skip
READY_POLL = 0.02  # seconds between readiness probes of a new container
FIRST_WINDOW = 1.0  # seconds a first start is watched for an app that exits at once
PROBE_TIMEOUT = 0.5  # seconds one connection attempt of a probe may take


DEFAULT_PUBLISH_ADDRESS = "0.0.0.0"


def spec_hash(app: App, network: str, publish_address: str = DEFAULT_PUBLISH_ADDRESS) -> str:
    """A digest of everything that forces a new container when it changes."""
    spec: dict[str, Any] = {
        "image": app.image,
        "command": list(app.command),
        "env": app.container_env,
        "bindings": [(b.protocol.value, b.published, b.target) for b in app.bindings],
        "network": network,
    }
    # Only when set: an app without them keeps the hash (and the container) it had.
    if app.volumes:
        spec["volumes"] = [[v.source, v.target, v.read_only] for v in app.volumes]
    if app.stop_grace != DEFAULT_STOP_GRACE:  # the container's StopTimeout
        spec["stop_grace"] = _seconds(app.stop_grace)
    if publish_address != DEFAULT_PUBLISH_ADDRESS:  # --publish-address changed: re-bind
        spec["publish_address"] = publish_address
    if app.image_digest:  # an upgrade pulled a new image for the tag
        spec["image_digest"] = app.image_digest
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class DockerContainerRuntime(DockerVolumes):
    """Runs each app as one container on a single Docker engine."""

    mode = "container"

    def __init__(
        self,
        docker_host: str | None = None,
        *,
        instance: str = "miasma",
        publish_address: str = DEFAULT_PUBLISH_ADDRESS,
        ready_timeout: float = 0.0,
        drain: float = 0.0,
    ) -> None:
        super().__init__(docker_host)
        self.instance = instance
        self.network = instance
        self.publish_address = publish_address
        self.ready_timeout = ready_timeout  # 0: remove the old container as soon as the new starts
        # Seconds an old container keeps serving once its successor is applied, while
        # routers and clients that follow the events move (docs/routing.md).
        self.drain = drain
        self._retiring: dict[str, asyncio.Task[None]] = {}  # container ID -> its removal
        self._network_lock = asyncio.Lock()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in set(self._retiring.values()):  # the reconciler removes them at next start
            task.cancel()
        await super().__aexit__(exc_type, exc, tb)

    # -- Runtime protocol ----------------------------------------------------

    async def info(self) -> RuntimeInfo:
        """Ping the engine; never raises."""
        try:
            async with asyncio.timeout(5):
                version = await self.docker.version()
        except ENGINE_ERRORS as exc:
            log.debug("docker ping failed: %s", exc)
            return RuntimeInfo(reachable=False, mode=self.mode)
        return RuntimeInfo(
            reachable=True, mode=self.mode, docker_version=str(version.get("Version", ""))
        )

    async def apply(self, app: App) -> Observed:
        """Make the app's container match its spec and desired state.

        Callers serialise calls per app (AppManager holds the app's lock).
        """
        containers = await self._containers(app.name)
        if app.desired_state is DesiredState.STOPPED:
            for container in containers:
                await self._stop(container, app.stop_grace, "the container")
            return Observed(running=0, total=0)
        want = self._hash(app)
        current = [c for c in containers if self._current(app, want, c)]
        retiring = [c for c in containers if c.id in self._retiring and c not in current]
        stale = [c for c in containers if c not in current and c not in retiring]
        if current:
            keep, *extra = current
            # The others go first: one of them may write to the app's volumes. Those
            # serving out their drain stay until it ends.
            await self._remove_all([*extra, *stale], app.stop_grace)
            if not _running(keep):
                say("starting the container")
                async with docker_errors(f"start the container of app {app.name!r}"):
                    await keep.start()
        else:
            for container in retiring:  # this rollout deals with them now
                self._retiring.pop(container.id).cancel()
            await self._replace(app, want, [*stale, *retiring])
        return await self.observe(app)

    async def restart(self, app: App) -> Observed:
        """Restart the container (create it if it is missing)."""
        observed = await self.apply(app)
        for container in await self._containers(app.name):
            say(f"restarting the container (stopping it may take up to {app.stop_grace:g} s)")
            async with docker_errors(f"restart the container of app {app.name!r}"):
                await container.restart(t=_seconds(app.stop_grace))
        return observed

    async def remove(self, name: str, stop_grace: float = DEFAULT_STOP_GRACE) -> None:
        """Stop and remove every container of the app (its volumes stay)."""
        await self._remove_all(await self._containers(name), stop_grace, "the container")

    async def survey(self, apps: Sequence[App]) -> Survey:
        """One container listing: the apps found, and those that run exactly as stored.

        A running app is in sync with one running container of its current spec
        on its ports and nothing else; a stopped app with nothing running.
        """
        async with docker_errors("list containers"):
            found = await self.docker.containers.list(
                all=True, filters=json.dumps({"label": [f"{LABEL_MANAGED}={self.instance}"]})
            )
        by_app: dict[str, list[DockerContainer]] = {}
        for container in found:
            if container.id in self._retiring:
                continue  # serves out its drain, then goes
            if name := _labels(container).get(LABEL_APP):
                by_app.setdefault(name, []).append(container)
        in_sync: dict[str, Observed] = {}
        for app in apps:
            containers = by_app.get(app.name, [])
            if app.desired_state is DesiredState.STOPPED:
                if not any(_running(c) for c in containers):
                    in_sync[app.name] = Observed(running=0, total=0)
            elif (
                len(containers) == 1
                and _running(containers[0])
                and self._current(app, self._hash(app), containers[0])
            ):
                in_sync[app.name] = Observed(running=1, total=1)
        return Survey(found=frozenset(by_app), in_sync=in_sync)

    def _hash(self, app: App) -> str:
        return spec_hash(app, self.network, self.publish_address)

    @staticmethod
    def _current(app: App, want: str, container: DockerContainer) -> bool:
        """Whether ``container`` is of the app's spec ``want`` (and, running, on its ports).

        The label alone is not proof: a copy made by hand may carry it with other ports.
        """
        return _labels(container).get(LABEL_SPEC) == want and (
            not _running(container)
            or _published(container) == {b.published_port for b in app.bindings}
        )

    async def observe(self, app: App) -> Observed:
        """Running/total for the app's current spec, and why it is not running."""
        want = self._hash(app)
        containers = [
            c for c in await self._containers(app.name) if _labels(c).get(LABEL_SPEC) == want
        ]
        if app.desired_state is DesiredState.STOPPED:
            return Observed(running=0, total=0)
        if any(_running(c) for c in containers):
            return Observed(running=1, total=1)
        if not containers:
            return Observed(running=0, total=1, last_error="not running: no container")
        status = str(_field(containers[0], "Status") or "")  # "Exited (3) 2 seconds ago"
        output = await self._last_output(containers[0])
        detail = f"; its last output: {output}" if output else ""
        return Observed(running=0, total=1, last_error=f"not running: {status}{detail}")

    async def deaf_ports(self, app: App) -> frozenset[int] | None:
        """The app's TCP target ports its running container accepts no connection on now
        (all while none runs); None when the engine is not on this machine (its
        containers' addresses are not reachable from here: ``ready_timeout`` 0)."""
        ports = frozenset(b.target for b in app.bindings if b.protocol is Protocol.TCP)
        if self.ready_timeout <= 0:
            return None
        want = self._hash(app)
        for container in await self._containers(app.name):
            if _running(container) and _labels(container).get(LABEL_SPEC) == want:
                address = _address(container, self.network)
                if address:
                    return frozenset([p for p in ports if not await accepts(address, p)])
        return ports

    async def _last_output(self, container: DockerContainer) -> str:
        """The last lines a container wrote (stdout and stderr), for a failure message;
        "" when there are none or Docker cannot say."""
        try:
            async with docker_errors("read the logs of a container"):
                lines = await container.log(stdout=True, stderr=True, tail=LOG_LINES)
        except (RuntimeFailure, Unavailable):
            return ""
        return " | ".join(line.strip() for line in lines if line.strip())[-1000:]

    async def changes(self) -> AsyncIterator[str]:
        """The apps whose containers Docker reports a change of (start, stop, death,
        removal…), from one subscription to its event stream; ``""`` once subscribed."""
        filters = {
            "type": ["container"],
            "label": [f"{LABEL_MANAGED}={self.instance}"],
            "event": sorted(CONTAINER_CHANGES),  # Docker sends no other
        }
        async with (
            docker_errors("watch Docker's events"),
            self.docker._query(
                "events",
                params={"filters": json.dumps(filters)},
                timeout=self.docker._resolve_long_running_timeout(None),
            ) as response,
        ):
            yield ""
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                name = (event.get("Actor") or {}).get("Attributes", {}).get(LABEL_APP)
                action = str(event.get("Action", "")).partition(":")[0]  # "health_status: …"
                if name and action in CONTAINER_CHANGES:
                    yield str(name)
        raise Unavailable("Docker's event stream ended")

    async def log_source(self, app: App) -> LogSource | None:
        """The app's container: the running one (of its current spec first), else the one
        made last; None when it has none."""
        containers = await self._containers(app.name)
        if not containers:
            return None
        want = self._hash(app)
        best = max(
            containers,
            key=lambda c: (
                _running(c),
                _labels(c).get(LABEL_SPEC) == want,
                int(_field(c, "Created") or 0),
            ),
        )
        return LogSource(best.id, _running(best))

    def pin(self, pulled: PulledImage) -> str:
        """What an app upgraded to ``pulled`` runs: its ID on this engine."""
        return pulled.id

    def logs(
        self, source: LogSource, *, tail: int, since: int | None, follow: bool
    ) -> AsyncIterator[LogLine]:
        """The container's output (docs/logs.md)."""
        return read_logs(
            self.docker, "containers", source.ident, tail=tail, since=since, follow=follow
        )

    # -- internals -----------------------------------------------------------

    async def _containers(self, name: str) -> list[DockerContainer]:
        async with docker_errors(f"list the containers of app {name!r}"):
            return await self.docker.containers.list(
                all=True,
                filters=json.dumps(
                    {"label": [f"{LABEL_APP}={name}", f"{LABEL_MANAGED}={self.instance}"]}
                ),
            )

    async def _replace(self, app: App, want: str, stale: list[DockerContainer]) -> None:
        image = await ensure_image(self.docker, app.image_digest or app.image)
        mounts = app_mounts(app, declared_volumes(image), self.instance)
        await self.check_mountable(mounts)
        network = await self._ensure_network()
        new_ports = {b.published_port for b in app.bindings}
        serving = [c for c in stale if _running(c)]
        # Stop-first for a container that writes the app's volumes (two processes on one
        # data directory corrupt it) or holds a port the new one needs; the others serve
        # on until the new one is up.
        in_the_way = serving if writable(mounts) else [
            c for c in serving if _published(c) & new_ports
        ]  # fmt: skip
        stopped: list[DockerContainer] = []
        for container in in_the_way:
            await self._stop(container, app.stop_grace, "the old container")
            stopped.append(container)
        name = self._name(app, want)
        for container in stale:  # an old one (or a copy made by hand) may hold the name
            if name in _names(container):
                try:
                    async with docker_errors(f"rename a stale container of app {app.name!r}"):
                        await container.rename(f"{name}-stale-{container.id[:8]}")
                except RuntimeFailure as exc:
                    if not _gone(exc):
                        raise
        try:
            say("starting the new container")
            new = await self._create_and_start(app, want, mounts, network)
            if serving:  # the app served before: the new container must come up
                try:
                    await self._wait_ready(app, new)
                except BaseException:
                    await self._remove_all([new], app.stop_grace)
                    raise
            else:  # a first start: see it listen, or die at once, before saying it runs
                await self._first_moments(app, new)
        except BaseException:
            for container in stopped:  # put the old one back: the change failed
                try:
                    async with docker_errors(f"restart the previous container of {app.name!r}"):
                        await container.start()
                    say("the change failed: the old container runs again")
                except (RuntimeFailure, Unavailable) as exc:
                    log.error("could not restore app %s: %s", app.name, exc)
            raise
        if self.drain > 0 and any(c not in stopped for c in serving):
            self._retire(stale, app)
        else:
            await self._remove_all(stale, app.stop_grace, "the old container")

    def _retire(self, containers: list[DockerContainer], app: App) -> None:
        """Remove ``containers`` after the drain: the new container is applied (and said
        so) at once, and the old one serves the requests still sent to it meanwhile."""
        say(f"the old container serves {self.drain:g} s more, while routers move")

        async def later() -> None:
            try:
                await asyncio.sleep(self.drain)
                await self._remove_all(containers, app.stop_grace)
            except (RuntimeFailure, Unavailable) as exc:
                log.warning("could not remove an old container of app %s (the reconciler "
                            "will): %s", app.name, exc.message)  # fmt: skip
            finally:
                this = asyncio.current_task()
                for container in containers:
                    if self._retiring.get(container.id) is this:
                        del self._retiring[container.id]

        task = asyncio.create_task(later(), name=f"retire-{app.name}")
        for container in containers:
            self._retiring[container.id] = task

    async def _create_and_start(
        self, app: App, want: str, mounts: Sequence[Mount], network: str
    ) -> DockerContainer:
        config = self._container_config(app, want, mounts, network)
        container: DockerContainer | None = None
        try:
            async with docker_errors(f"create the container of app {app.name!r}"):
                container = await self.docker.containers.create(config, name=self._name(app, want))
            async with docker_errors(f"start the container of app {app.name!r}"):
                await container.start()
        except BaseException:
            if container is not None:
                await self._remove_all([container], app.stop_grace)
            raise
        return container

    async def _wait_ready(
        self, app: App, container: DockerContainer, limit: float | None = None
    ) -> None:
        """Wait until the new container's app accepts connections on every TCP target port.

        Raises :class:`RuntimeFailure` (with its exit code and last log lines) if
        the container stops running meanwhile. Gives up waiting after ``limit`` seconds
        (``ready_timeout`` by default, with a warning: the app may not listen). UDP is
        not probed.
        """
        waiting = {b.target for b in app.bindings if b.protocol is Protocol.TCP}
        patience = self.ready_timeout if limit is None else limit
        if patience <= 0:
            return
        if limit is None:
            ports = ", ".join(map(str, sorted(waiting)))
            say(f"waiting for the new container to listen on {ports} (up to {patience:g} s)")
        try:
            async with asyncio.timeout(patience):
                while True:
                    async with docker_errors(f"inspect the new container of app {app.name!r}"):
                        shown = await container.show()
                    state = shown["State"]
                    if state.get("Status") != "running" or state.get("Restarting"):
                        raise await self._died(app, container, state)
                    address = _address(shown, self.network)
                    if address:
                        waiting = {p for p in waiting if not await accepts(address, p)}
                        if not waiting:
                            return
                    await asyncio.sleep(READY_POLL)
        except TimeoutError:
            if limit is None:
                log.warning(
                    "app %s does not accept connections on port(s) %s after %gs; "
                    "removing its previous container anyway",
                    app.name,
                    ", ".join(map(str, sorted(waiting))),
                    patience,
                )

    async def _first_moments(self, app: App, container: DockerContainer) -> None:
        """Watch a container's first moments (until its app listens, or :data:`FIRST_WINDOW`
        seconds): one that exits at once is then reported not running, with its exit code
        and last lines, by the look that follows, not as running (docs/design.md §4).
        Nothing to undo here: the app is new or was stopped."""
        window = min(self.ready_timeout, FIRST_WINDOW)
        if window <= 0:
            return
        try:
            await self._wait_ready(app, container, window)
        except RuntimeFailure as exc:
            if exc.reason != "CONTAINER_EXITED":
                raise
            log.info("app %s exited at once: %s", app.name, exc.message)

    async def _died(
        self, app: App, container: DockerContainer, state: dict[str, Any]
    ) -> RuntimeFailure:
        """The failure of a new container that stopped running: exit code and last lines."""
        output = await self._last_output(container)
        return RuntimeFailure(
            f"the new container of app {app.name!r} stopped with exit code "
            f"{state.get('ExitCode')} before it was ready"
            + (f"; its last output: {output}" if output else ""),
            reason="CONTAINER_EXITED",
            metadata={"exit_code": str(state.get("ExitCode", ""))},
        )

    def _name(self, app: App, want: str) -> str:
        return f"{self.instance}-{app.name}-{want[:12]}"

    def _container_config(
        self, app: App, want: str, mounts: Sequence[Mount], network: str
    ) -> dict[str, Any]:
        exposed: dict[str, dict[str, str]] = {f"{b.target}/{b.protocol}": {} for b in app.bindings}
        port_bindings = {
            f"{b.target}/{b.protocol}": [
                {"HostIp": self.publish_address, "HostPort": str(b.published)}
            ]
            for b in app.bindings
        }
        config: dict[str, Any] = {
            "Image": app.image_digest or app.image,  # the image an upgrade pulled, if any
            "Env": [f"{k}={v}" for k, v in sorted(app.container_env.items())],
            "Labels": {LABEL_MANAGED: self.instance, LABEL_APP: app.name, LABEL_SPEC: want},
            "ExposedPorts": exposed,
            "HostConfig": {
                "PortBindings": port_bindings,
                "RestartPolicy": {"Name": "unless-stopped"},
                "Mounts": [mount_spec(m, app, self.instance) for m in mounts],
            },
            # Also what `docker stop` by hand and an engine shutdown give the app.
            "StopTimeout": _seconds(app.stop_grace),
            # By ID: a name another network shares by mistake would be "ambiguous".
            "NetworkingConfig": {"EndpointsConfig": {network: {"Aliases": [app.name]}}},
        }
        if app.command:
            config["Cmd"] = list(app.command)
        return config

    async def _ensure_network(self) -> str:
        """The ID of the instance's network, made if missing (or removed by hand)."""
        async with self._network_lock:  # two first rollouts must not make two networks
            return await ensure_network(
                self.docker, self.network, instance=self.instance, driver="bridge"
            )

    async def _stop(self, container: DockerContainer, grace: float, what: str = "") -> None:
        """Stop with the image's stop signal; Docker kills after ``grace`` seconds. Says so
        (``what`` it stops) while it waits."""
        if _running(container):
            if what:
                say(f"stopping {what} (up to {grace:g} s)")
            async with docker_errors("stop a container"):
                await container.stop(t=_seconds(grace))

    async def _remove_all(
        self, containers: list[DockerContainer], grace: float, what: str = ""
    ) -> None:
        """Stop (cleanly) and remove ``containers``; never their volumes."""
        for container in containers:
            try:
                await self._stop(container, grace, what)
                async with docker_errors("remove a container"):
                    await container.delete(force=True)
            except RuntimeFailure as exc:
                if not _gone(exc):
                    raise


def _gone(exc: RuntimeFailure) -> bool:
    """Whether Docker refused because the container is gone already."""
    return "No such container" in exc.message


async def accepts(address: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``address:port`` right now."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(address, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _seconds(grace: float) -> int:
    """Docker counts a stop's grace period in whole seconds."""
    return math.ceil(grace)


def _field(container: DockerContainer | Mapping[str, Any], key: str) -> Any:
    # DockerContainer supports [] and "in" but has no .get().
    return container[key] if key in container else None  # noqa: SIM401


def _names(container: DockerContainer) -> set[str]:
    # The list endpoint gives "Names": ["/x"]; inspect gives "Name": "/x".
    names = [*(_field(container, "Names") or []), str(_field(container, "Name") or "")]
    return {n.lstrip("/") for n in names if n}


def _address(container: DockerContainer | Mapping[str, Any], network: str) -> str:
    """The container's address on ``network`` ("" when it has none yet)."""
    networks = (_field(container, "NetworkSettings") or {}).get("Networks") or {}
    endpoint = networks.get(network) or {}
    return str(endpoint.get("IPAddress") or endpoint.get("GlobalIPv6Address") or "")


def _labels(container: DockerContainer) -> dict[str, str]:
    return dict(_field(container, "Labels") or {})


def _running(container: DockerContainer) -> bool:
    # The list endpoint gives State as a string ("running"); inspect gives an object.
    state = _field(container, "State")
    if isinstance(state, dict):
        return bool(state.get("Running"))
    return bool(state == "running")


def _published(container: DockerContainer) -> set[Port]:
    return {
        Port(int(p["PublicPort"]), Protocol(p.get("Type", "tcp")))
        for p in _field(container, "Ports") or []
        if p.get("PublicPort")
    }

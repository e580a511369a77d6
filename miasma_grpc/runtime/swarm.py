"""Swarm runtime: one Docker Swarm service per app, across every node of the swarm.

Ports are the service's ``EndpointSpec``: one entry per slot, published in
ingress mode (every node routes the port) or host mode (only the node
running the task listens). A port edit is a service update at the
service's current version, retried when Docker says the update is out of
sequence (someone else updated first). A rollout is over when the
service's tasks run, or has failed when a new task is rejected or cannot
be placed (image missing, host port taken on the node): the task's error
is what the caller reports and reverts on, as in container mode.

Volumes are local to a node. An app that mounts any (its own, or those
Miasma makes for its image's ``VOLUME`` paths) is pinned to the node its
first task ran on (``node.id==…``), unless the user placed it with
constraints of their own; the node is reported back (``Observed.node``) and
kept with the app. Such an app is updated stop-first: a new task starts only
once the old one has stopped (docs/volumes.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from miasma_grpc.domain.errors import RuntimeFailure
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
from miasma_grpc.runtime.base import LABEL_APP, LABEL_MANAGED, RuntimeInfo, Survey, say
from miasma_grpc.runtime.docker import (
    ENGINE_ERRORS,
    declared_volumes,
    docker_errors,
    image_unavailable,
)
from miasma_grpc.runtime.logs import read_logs
from miasma_grpc.runtime.networks import ensure_network
from miasma_grpc.runtime.volumes import DockerVolumes, mount_spec

log = logging.getLogger(__name__)

SETTLE_TIMEOUT = 60.0  # a rollout still starting after this is reported as starting
PLACEMENT_GRACE = 5.0  # "no suitable node" may be momentary while an old task stops
# An update swarm needs no new task for (only the placement changed, and the task's node
# still fits) starts no rolling update: after this long without one, it is over.
NO_TASK_GRACE = 0.5
CHANGE_POLL = 0.5  # seconds between readings of the tasks' states (changes())
POLL = 0.2
UPDATE_ATTEMPTS = 5
FAILED_STATES = {"rejected", "failed"}
# Task states after which a task holds nothing (no process, no host port).
ENDED_STATES = {"complete", "shutdown", "failed", "rejected", "remove", "orphaned"}
RELEASE_MARGIN = 30.0  # seconds beyond an app's grace period for its tasks to end
SpecDict = dict[str, Any]
LABEL_IMAGE = "io.miasma.image"  # on a service's containers: the image an upgrade pinned


class DockerSwarmRuntime(DockerVolumes):
    """Runs each app as one replicated swarm service (one replica, zero when stopped)."""

    mode = "swarm"

    def __init__(self, docker_host: str | None = None, *, instance: str = "miasma") -> None:
        super().__init__(docker_host)
        self.instance = instance
        # Not ``instance`` itself: the container runtime's bridge network may have that name
        # on the same engine (a server that moved from container to swarm mode).
        self.network = f"{instance}-swarm"
        self._network_id = ""
        self._foreign_ports: set[Port] = set()
        self._network_lock = asyncio.Lock()

    # -- HostPorts: published ports held in the swarm by services that are not ours --

    async def refresh(self) -> None:
        """Read the published ports of every service outside this Miasma, cluster-wide."""
        async with docker_errors("list the swarm's services"):
            services = await self.docker.services.list()
        self._foreign_ports = {
            port
            for service in services
            if _labels(service).get(LABEL_MANAGED) != self.instance
            for port in _endpoint_ports(service)
        }

    def busy(self, port: Port) -> bool:
        """True if a service outside this Miasma publishes ``port`` (as of :meth:`refresh`)."""
        return port in self._foreign_ports

    # -- Runtime protocol ----------------------------------------------------

    async def info(self) -> RuntimeInfo:
        """Version, swarm ID and the command a worker runs to join; never raises."""
        try:
            async with asyncio.timeout(5):
                version = await self.docker.version()
                system = await self.docker.system.info()
                swarm = await self.docker.swarm.inspect()
        except ENGINE_ERRORS as exc:
            log.debug("docker ping failed: %s", exc)
            return RuntimeInfo(reachable=False, mode=self.mode)
        managers = system.get("Swarm", {}).get("RemoteManagers") or []
        address = managers[0]["Addr"] if managers else ""
        token = swarm.get("JoinTokens", {}).get("Worker", "")
        return RuntimeInfo(
            reachable=True,
            mode=self.mode,
            docker_version=str(version.get("Version", "")),
            swarm_id=str(swarm.get("ID", "")),
            join_command=f"docker swarm join --token {token} {address}" if token else "",
        )

    async def apply(self, app: App) -> Observed:
        """Create or update the app's service, then wait for its tasks (or their error)."""
        return await self._roll_out(app, force=False)

    async def restart(self, app: App) -> Observed:
        """Redeploy the app's task on the same ports (a forced update)."""
        return await self._roll_out(app, force=True)

    async def remove(self, name: str, stop_grace: float = DEFAULT_STOP_GRACE) -> None:
        """Remove the app's service and wait until its tasks have ended (within their grace
        period), so that what they held (a host port) is free when this returns."""
        for service in await self._services(name):
            try:
                async with docker_errors(f"remove the service of app {name!r}"):
                    await self.docker.services.delete(service["ID"])
            except RuntimeFailure as exc:
                if exc.docker_status != 404:
                    raise
            deadline = time.monotonic() + stop_grace + RELEASE_MARGIN
            while time.monotonic() < deadline:
                # The service is gone, so its tasks are looked up by their service ID.
                async with docker_errors("list tasks"):
                    tasks = await self.docker.tasks.list()
                if all(_ended(t) for t in tasks if t.get("ServiceID") == service["ID"]):
                    break
                await asyncio.sleep(POLL)

    async def survey(self, apps: Sequence[App]) -> Survey:
        """App names found on this Miasma's services; every app is checked by :meth:`apply`.

        (A service's spec and tasks need more than the list endpoint shows.)
        """
        found = {name for s in await self._services() if (name := _labels(s).get(LABEL_APP))}
        return Survey(found=frozenset(found))

    async def observe(self, app: App) -> Observed:
        """Running/total from the service's tasks, and the latest task error."""
        service = await self._service(app.name)
        if service is None:
            return Observed(running=0, total=_replicas(app), last_error="no service")
        tasks = await self._tasks(service["ID"])
        return _observed(tasks, _replicas(app))

    async def deaf_ports(self, app: App) -> frozenset[int] | None:
        """None: a task's address is on its node's overlay network, out of reach from here."""
        return None

    async def changes(self) -> AsyncIterator[str]:
        """The apps whose tasks changed state, read every ``CHANGE_POLL`` seconds: Docker
        has no event stream for the tasks of a swarm (its events cover this node only).
        ``""`` once the first reading is in."""
        seen = await self._task_states()
        yield ""
        while True:
            await asyncio.sleep(CHANGE_POLL)
            now = await self._task_states()
            for name in set(now) | set(seen):
                if now.get(name) != seen.get(name):
                    yield name
            seen = now

    def pin(self, pulled: PulledImage) -> str:
        """What an app upgraded to ``pulled`` runs: its registry digest, which every node
        can pull (the ID where the image has none: this node only)."""
        return pulled.repo_digest or pulled.id

    async def log_source(self, app: App) -> LogSource | None:
        """The app's service: Docker merges the output of its tasks, new ones included."""
        service = await self._service(app.name)
        return None if service is None else LogSource(str(service["ID"]), running=True)

    def logs(
        self, source: LogSource, *, tail: int, since: int | None, follow: bool
    ) -> AsyncIterator[LogLine]:
        """The service's output, each line from its task (docs/logs.md)."""
        return read_logs(
            self.docker, "services", source.ident, tail=tail, since=since, follow=follow
        )

    async def _task_states(self) -> dict[str, frozenset[tuple[str, str, str]]]:
        """Per app, its tasks as (ID, state, desired state): one listing of each kind."""
        apps = {str(s["ID"]): _labels(s).get(LABEL_APP, "") for s in await self._services()}
        async with docker_errors("list tasks"):
            tasks = await self.docker.tasks.list()
        states: dict[str, set[tuple[str, str, str]]] = {name: set() for name in apps.values()}
        for task in tasks:
            if name := apps.get(str(task.get("ServiceID"))):
                state = (str(task["ID"]), str(task["Status"]["State"]), str(task["DesiredState"]))
                states[name].add(state)
        return {name: frozenset(found) for name, found in states.items() if name}

    # -- internals -----------------------------------------------------------

    def _spec(
        self, app: App, mounts: Sequence[Mount], current: Mapping[str, Any] | None = None
    ) -> SpecDict:
        """The service spec for ``app`` (keeping the current spec's ForceUpdate counter)."""
        force = 0
        if current is not None:
            force = int(current["Spec"]["TaskTemplate"].get("ForceUpdate", 0))
        labels = {LABEL_MANAGED: self.instance, LABEL_APP: app.name}
        if app.image_digest:  # pinned by an upgrade: a change of it is a rollout
            labels[LABEL_IMAGE] = app.image_digest
        container: SpecDict = {
            "Image": app.image_digest or app.image,
            "Env": [f"{k}={v}" for k, v in sorted(app.container_env.items())],
            "Labels": labels,
            "StopGracePeriod": round(app.stop_grace * 1e9),
            "Mounts": [mount_spec(m, app, self.instance) for m in mounts],
        }
        if app.command:
            container["Args"] = list(app.command)
        ports = [
            {
                "Protocol": str(b.protocol),
                "TargetPort": b.target,
                "PublishedPort": b.published,
                "PublishMode": str(b.mode),
            }
            for b in app.bindings
        ]
        host_ports = {p["PublishedPort"] for p in ports if p["PublishMode"] == "host"}
        old_host = set() if current is None else _host_ports(current["Spec"])
        # The user's constraints place the app; else one that has data stays with it.
        constraints = list(app.constraints)
        if not constraints and mounts and app.node:
            constraints = [f"node.id=={app.node}"]
        return {
            "Name": f"{self.instance}-{app.name}",
            "Labels": {LABEL_MANAGED: self.instance, LABEL_APP: app.name},
            "TaskTemplate": {
                "ContainerSpec": container,
                "Placement": {"Constraints": constraints},
                "Networks": [{"Target": self._network_id, "Aliases": [app.name]}],
                "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000},
                "ForceUpdate": force,
            },
            "Mode": {"Replicated": {"Replicas": _replicas(app)}},
            # New task first (no downtime) unless it needs a host port the old one holds,
            # or a writable volume (on its node) that must have one writer.
            "UpdateConfig": {
                "Parallelism": 1,
                "Order": "stop-first"
                if host_ports & old_host or writable(mounts)
                else "start-first",
                "FailureAction": "pause",
            },
            "EndpointSpec": {"Mode": "vip", "Ports": ports},
        }

    async def _roll_out(self, app: App, *, force: bool) -> Observed:
        """Create the service, or update it when it drifted (or ``force``), then settle."""
        await self._ensure_network()
        mounts = app_mounts(app, await self._declared_volumes(app.image), self.instance)
        await self.check_mountable(mounts)  # as far as this node sees: other nodes' are not
        service = await self._service(app.name)
        try:
            if service is None:
                observed = await self._create(app, mounts)
            else:
                desired = self._spec(app, mounts, service)
                if force:
                    desired["TaskTemplate"]["ForceUpdate"] += 1
                if force or _essential(desired) != _essential(service["Spec"]):
                    before = await self._task_ids(service["ID"])
                    await self._update(service, desired)
                    observed = await self._settle(service["ID"], app, before)
                else:
                    observed = await self.observe(app)
        except RuntimeFailure as exc:
            if exc.docker_status == 404:  # e.g. the network removed by hand: look it up again
                self._network_id = ""
            raise
        return await self._pin(app, mounts, observed)

    async def _declared_volumes(self, image: str) -> tuple[str, ...]:
        """The image's ``VOLUME`` paths, if this node has the image (tasks pull on theirs)."""
        try:
            async with docker_errors(f"inspect image {image!r}"):
                return declared_volumes(await self.docker.images.inspect(image))
        except RuntimeFailure:
            log.warning(
                "image %s is not on this manager: the VOLUME paths it may declare get no volume "
                "of the app's own (pull or load it here to keep their data)",
                image,
            )
            return ()

    async def _pin(self, app: App, mounts: Sequence[Mount], observed: Observed) -> Observed:
        """Keep an app that has data on the node its task runs on; report that node."""
        if not mounts or app.constraints or app.desired_state is DesiredState.STOPPED:
            return observed
        if app.node:
            return replace(observed, node=app.node)
        service = await self._service(app.name)
        if service is None:
            return observed
        nodes = {str(t.get("NodeID")) for t in await self._tasks(service["ID"]) if _running(t)}
        if len(nodes) != 1:
            return observed  # not placed yet: the next rollout or reconcile pins it
        node = nodes.pop()
        # Only the placement changes, and the task's node satisfies it: swarm keeps the task.
        await self._update(service, self._spec(replace(app, node=node), mounts, service))
        return replace(observed, node=node)

    async def _create(self, app: App, mounts: Sequence[Mount]) -> Observed:
        spec = self._spec(app, mounts)
        async with docker_errors(f"create the service of app {app.name!r}"):
            created = await self.docker._query_json(
                "services/create", method="POST", data=json.dumps(spec)
            )
        try:
            return await self._settle(str(created["ID"]), app, set())
        except RuntimeFailure:
            await self.remove(app.name)  # a create that fails leaves nothing behind
            raise

    async def _update(self, service: Mapping[str, Any], desired: SpecDict) -> None:
        """Update at the service's version; on "out of sequence", re-read and retry."""
        for attempt in range(UPDATE_ATTEMPTS):
            version = service["Version"]["Index"]
            try:
                async with docker_errors(f"update service {desired['Name']!r}"):
                    await self.docker._query_json(
                        f"services/{service['ID']}/update",
                        method="POST",
                        params={"version": str(version)},
                        data=json.dumps(desired),
                    )
                return
            except RuntimeFailure as exc:
                if "out of sequence" not in exc.message or attempt == UPDATE_ATTEMPTS - 1:
                    raise
                log.info("service %s changed under us; retrying the update", desired["Name"])
                async with docker_errors(f"inspect service {desired['Name']!r}"):
                    service = await self.docker.services.inspect(service["ID"])

    async def _settle(self, service_id: str, app: App, before: set[str]) -> Observed:
        """Wait until the rollout's tasks run; raise the task error if one cannot."""
        replicas = _replicas(app)
        started = time.monotonic()
        # An old task may take its whole grace period to stop (stop-first).
        deadline = started + max(SETTLE_TIMEOUT, app.stop_grace + RELEASE_MARGIN)
        unplaced_since: float | None = None
        while True:
            tasks = await self._tasks(service_id)
            new = [t for t in tasks if t["ID"] not in before]
            quiet = before and not new and time.monotonic() - started > NO_TASK_GRACE
            if quiet and not await self._updating(service_id):
                return _observed(tasks, replicas)
            failed = [t for t in new if t["Status"]["State"] in FAILED_STATES]
            if failed:
                raise _task_failure(app, _latest(failed))
            unplaced = [t for t in new if t["Status"]["State"] == "pending" and _error(t)]
            stopping = [t for t in tasks if t["ID"] in before and not _ended(t)]
            if unplaced and not stopping:  # an old task still stopping may hold the port
                unplaced_since = unplaced_since or time.monotonic()
                if time.monotonic() - unplaced_since > PLACEMENT_GRACE:
                    raise _task_failure(app, _latest(unplaced))
            else:
                unplaced_since = None
            say(_settle_phase(new, stopping, app.stop_grace))
            observed = _observed(tasks, replicas)
            running_new = [t for t in new if _running(t)]
            done = len(running_new) >= replicas if before else observed.running >= replicas
            if replicas == 0:
                done = observed.running == 0
            if done or time.monotonic() > deadline:
                return observed
            await asyncio.sleep(POLL)

    async def _updating(self, service_id: str) -> bool:
        """Whether swarm is rolling out an update of the service."""
        async with docker_errors("inspect a service"):
            service = await self.docker.services.inspect(service_id)
        return (service.get("UpdateStatus") or {}).get("State") in ("updating", "rollback_started")

    async def _ensure_network(self) -> None:
        async with self._network_lock:  # two rollouts must not create two networks of one name
            if not self._network_id:
                self._network_id = await ensure_network(
                    self.docker, self.network, instance=self.instance, driver="overlay"
                )

    async def _services(self, app: str | None = None) -> list[Mapping[str, Any]]:
        labels = [f"{LABEL_MANAGED}={self.instance}"]
        if app is not None:
            labels.append(f"{LABEL_APP}={app}")
        async with docker_errors("list services"):
            return await self.docker.services.list(filters={"label": labels})

    async def _service(self, app: str) -> Mapping[str, Any] | None:
        services = await self._services(app)
        if len(services) > 1:  # adopted duplicates (e.g. created by hand): keep one
            for extra in services[1:]:
                async with docker_errors(f"remove a duplicate service of app {app!r}"):
                    await self.docker.services.delete(extra["ID"])
        return services[0] if services else None

    async def _tasks(self, service_id: str) -> list[Mapping[str, Any]]:
        async with docker_errors("list tasks"):
            return await self.docker.tasks.list(filters={"service": service_id})

    async def _task_ids(self, service_id: str) -> set[str]:
        return {str(t["ID"]) for t in await self._tasks(service_id)}


def _labels(service: Mapping[str, Any]) -> dict[str, str]:
    return dict(service.get("Spec", {}).get("Labels") or {})


def _endpoint_ports(service: Mapping[str, Any]) -> set[Port]:
    ports = service.get("Endpoint", {}).get("Ports") or service.get("Spec", {}).get(
        "EndpointSpec", {}
    ).get("Ports") or []  # fmt: skip
    return {
        Port(int(p["PublishedPort"]), Protocol(p.get("Protocol", "tcp")))
        for p in ports
        if p.get("PublishedPort")
    }


def _host_ports(spec: Mapping[str, Any]) -> set[int]:
    ports = spec.get("EndpointSpec", {}).get("Ports") or []
    return {int(p["PublishedPort"]) for p in ports if p.get("PublishMode") == "host"}


def _essential(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must match for a service to run the app as desired (drift check)."""
    template = spec.get("TaskTemplate", {})
    container = template.get("ContainerSpec", {})
    ports = spec.get("EndpointSpec", {}).get("Ports") or []
    return (
        str(container.get("Image", "")).split("@")[0],
        (container.get("Labels") or {}).get(LABEL_IMAGE, ""),
        tuple(sorted(container.get("Env") or [])),
        tuple(
            sorted(
                (m.get("Type"), m.get("Source"), m.get("Target"), bool(m.get("ReadOnly")))
                for m in container.get("Mounts") or []
            )
        ),
        int(container.get("StopGracePeriod", 0)),
        tuple(container.get("Args") or []),
        tuple(container.get("Command") or []),
        tuple(sorted(template.get("Placement", {}).get("Constraints") or [])),
        tuple(
            (n.get("Target"), tuple(n.get("Aliases") or [])) for n in template.get("Networks") or []
        ),
        tuple(
            (
                p.get("Protocol", "tcp"),
                int(p.get("TargetPort", 0)),
                int(p.get("PublishedPort", 0)),
                p.get("PublishMode", "ingress"),
            )
            for p in ports
        ),
        spec.get("Mode", {}).get("Replicated", {}).get("Replicas"),
        int(template.get("ForceUpdate", 0)),
    )


TASK_PHASES = {
    "preparing": "its node pulls the image",
    "starting": "starting",
    "pending": "waiting for a node",
    "assigned": "assigned to a node",
    "accepted": "accepted by its node",
}


def _settle_phase(
    new: Sequence[Mapping[str, Any]], stopping: Sequence[Mapping[str, Any]], grace: float
) -> str:
    """What a service rollout waits for, in words."""
    if stopping and not any(_running(t) for t in new):
        return f"stopping the old task (up to {grace:g} s)"
    if not new:
        return "waiting for swarm to schedule the new task"
    state = str(_latest(new)["Status"]["State"])
    return f"new task: {TASK_PHASES.get(state, state)}"


def _replicas(app: App) -> int:
    return 0 if app.desired_state is DesiredState.STOPPED else 1


def _running(task: Mapping[str, Any]) -> bool:
    return bool(task["Status"]["State"] == "running" and task.get("DesiredState") == "running")


def _ended(task: Mapping[str, Any]) -> bool:
    """Whether ``task`` has stopped for good (it holds nothing any more)."""
    return str(task["Status"]["State"]) in ENDED_STATES


def _error(task: Mapping[str, Any]) -> str:
    status = task.get("Status", {})
    return str(status.get("Err") or "")


def _latest(tasks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    return max(tasks, key=lambda t: str(t.get("UpdatedAt", "")))


def _observed(tasks: Sequence[Mapping[str, Any]], replicas: int) -> Observed:
    running = sum(1 for t in tasks if _running(t))
    if running >= replicas:
        return Observed(running=running, total=replicas)
    errors = [t for t in tasks if _error(t)]
    last_error = ""
    if errors:
        task = _latest(errors)
        last_error = f"task {task['Status']['State']}: {_error(task)}"
    return Observed(running=running, total=replicas, last_error=last_error)


def _task_failure(app: App, task: Mapping[str, Any]) -> RuntimeFailure:
    error = _error(task) or str(task["Status"].get("Message", ""))
    if "No such image" in error or ("image" in error.lower() and "not found" in error.lower()):
        return image_unavailable(app.image, error)
    reason = "PORT_CONFLICT_ON_NODE" if "port" in error.lower() else "TASK_FAILED"
    return RuntimeFailure(
        f"the task of app {app.name!r} could not run: {error}",
        reason=reason,
        metadata={"task_state": str(task["Status"]["State"])},
    )

"""Turn a test engine into a single-node Docker Swarm, and add a worker node to it.

Typed wrappers around ``scripts/swarm.sh`` (which holds the details, see its header):

* :func:`init_swarm` makes an engine a swarm manager advertising and listening on a
  loopback address only (idempotent) and returns the swarm's cluster ID;
* :func:`leave_swarm` forces the engine out of its swarm and removes what init created;
* :func:`start_worker` starts a second engine in its own network namespace (veth to the
  host, 10.214.N.2), copies the test image into it, joins it to the manager's swarm with
  the node label ``miasma-test=worker``, and returns where it answers; it raises
  :class:`WorkerUnsupported` when this machine cannot run it (no network namespaces or
  veth in the kernel, or no permission to create them);
* :func:`stop_worker` takes the worker out of the swarm, stops it and deletes its netns.

The swarm uses no iptables rule: host-mode published ports work (docker-proxy); the
ingress routing mesh does not (it needs iptables and kernel IPVS), so ingress ports can
only be checked in the service spec.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess

from scripts.engine import output_lines, run_script

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SWARM_SCRIPT = REPO_ROOT / "scripts" / "swarm.sh"
WORKER_LABEL = ("miasma-test", "worker")
"""The node label worker-start sets: constrain with ``node.labels.miasma-test==worker``."""

_UNSUPPORTED_EXIT = 3
_INIT_TIMEOUT = 120.0
_LEAVE_TIMEOUT = 120.0
# Starting the worker engine may wait up to 60 s for dockerd, and joining up to 60 s.
_WORKER_START_TIMEOUT = 300.0
_WORKER_STOP_TIMEOUT = 180.0


class SwarmError(RuntimeError):
    """A swarm could not be set up or torn down."""


class WorkerUnsupported(SwarmError):
    """This machine cannot run a worker node (kernel or privilege limitation)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Worker:
    """A worker engine in its own network namespace, joined to a swarm."""

    host: str
    """The worker engine's DOCKER_HOST (a unix socket, reachable from the host)."""
    address: str
    """The worker's IPv4 address (its end of the veth): host-mode ports answer there."""
    node_id: str
    """The worker's swarm node ID (constraint ``node.id==<node_id>``)."""


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run scripts/swarm.sh with args; return the finished process whatever its exit code."""
    return run_script(SWARM_SCRIPT, *args, timeout=timeout, error=SwarmError)


def _check(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Raise SwarmError unless result succeeded; return its non-empty stdout lines."""
    return output_lines(result, SwarmError)


def init_swarm(docker_host: str, advertise_addr: str | None = None) -> str:
    """Make the engine at docker_host a swarm manager (if it is not one); return the swarm ID.

    Without advertise_addr the manager takes the first loopback address (127.0.0.1,
    127.0.0.2, ...) whose swarm gossip port (7946, fixed) is free.
    """
    args = ["init", docker_host]
    if advertise_addr:
        args.append(advertise_addr)
    lines = _check(_run(*args, timeout=_INIT_TIMEOUT))
    if not lines:
        raise SwarmError("swarm.sh init printed no swarm ID")
    return lines[-1]


def leave_swarm(docker_host: str) -> None:
    """Force the engine at docker_host out of its swarm (nothing to do if it is in none)."""
    _check(_run("leave", docker_host, timeout=_LEAVE_TIMEOUT))


def start_worker(workdir: pathlib.Path, manager_host: str) -> Worker:
    """Start a worker engine under workdir and join it to manager_host's swarm.

    Raises WorkerUnsupported (with swarm.sh's one-line reason) when the machine cannot
    create the network namespace or the veth pair, SwarmError on any other failure.
    """
    result = _run(
        "worker-start", str(workdir.resolve()), manager_host, timeout=_WORKER_START_TIMEOUT
    )
    if result.returncode == _UNSUPPORTED_EXIT:
        reasons = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        raise WorkerUnsupported(reasons[-1] if reasons else "swarm.sh worker-start exited with 3")
    values: dict[str, str] = {}
    for line in _check(result):
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    try:
        return Worker(
            host=values["DOCKER_HOST"], address=values["ADDRESS"], node_id=values["NODE_ID"]
        )
    except KeyError as exc:
        raise SwarmError(
            f"swarm.sh worker-start printed no {exc.args[0]}:\n{result.stdout}"
        ) from exc


def stop_worker(workdir: pathlib.Path) -> None:
    """Take the worker under workdir out of its swarm, stop it and delete its netns."""
    _check(_run("worker-stop", str(workdir.resolve()), timeout=_WORKER_STOP_TIMEOUT))

"""What an app is doing, read from its desired and observed state."""

from __future__ import annotations

import enum

from miasma.v1 import apps_pb2


class AppStatus(enum.StrEnum):
    """One word for an app's state, as ``miasma apps`` shows it."""

    RUNNING = "running"  # every desired replica runs
    STARTING = "starting"  # desired running, not all replicas up yet
    PENDING = "pending"  # accepted, waiting for Docker to be reachable
    FAILED = "failed"  # Docker refused or the process is not running
    NOT_LISTENING = "not listening"  # runs, but accepts nothing on a TCP target port
    STOPPED = "stopped"
    STOPPING = "stopping"

    @property
    def settled(self) -> bool:
        """Whether a rollout has finished, for better or worse."""
        return self in (
            AppStatus.RUNNING, AppStatus.FAILED, AppStatus.STOPPED, AppStatus.NOT_LISTENING
        )  # fmt: skip


def app_status(app: apps_pb2.App) -> AppStatus:
    """Classify ``app`` from its desired state and what Docker reports."""
    observed = app.observed
    if app.desired_state == apps_pb2.DESIRED_STATE_STOPPED:
        return AppStatus.STOPPED if observed.running == 0 else AppStatus.STOPPING
    if observed.rollout == apps_pb2.ROLLOUT_STATE_PENDING:
        return AppStatus.PENDING
    if observed.rollout == apps_pb2.ROLLOUT_STATE_FAILED:
        return AppStatus.FAILED
    if observed.rollout == apps_pb2.ROLLOUT_STATE_IN_PROGRESS or observed.phase:
        return AppStatus.STARTING
    if observed.not_listening and observed.running:
        return AppStatus.NOT_LISTENING
    if observed.last_error:  # a server that does not say (rollout unspecified)
        return AppStatus.FAILED
    if observed.total and observed.running >= observed.total:
        return AppStatus.RUNNING
    return AppStatus.STARTING

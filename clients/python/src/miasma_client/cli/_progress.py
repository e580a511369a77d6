"""What a change does while Docker works, and whether the app came up (README "Rollouts").

While a command's call runs and while it waits for the app (``--wait``), the app's
phase as the server says it (``ObservedState.phase``: pulling, starting, waiting for
``$PORT``, stopping the old container) is shown: a spinner on a terminal, a line on
stderr per new phase off one. The wait ends in success, or in exit code 8 with why:
its exit code and last output, a crash loop, or "not listening on 3761 after 10 s".
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from miasma.v1 import apps_pb2
from rich.status import Status

from miasma_client._client import POLL_INTERVAL, MiasmaClient
from miasma_client._errors import MiasmaError
from miasma_client._status import AppStatus, app_status
from miasma_client.cli._context import EXIT_NOT_LIVE, CliError
from miasma_client.cli._render import err, short_name

FIGURES = re.compile(r"[\d.]+")


class Phases:
    """Shows an app's phases as they come (thread-safe: a poller calls :meth:`show`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.polled = True  # by following()'s thread; settle() polls itself, and says so
        self._said = ""  # the last phase printed, off a terminal
        self._status: Status | None = (
            err.status(f"{name}: waiting for the server…") if err.is_terminal else None
        )

    def __enter__(self) -> Phases:
        if self._status is not None:
            self._status.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.stop()

    def show(self, phase: str) -> None:
        """Show ``phase`` (not again off a terminal when only its figures changed)."""
        if not phase:
            return
        if self._status is not None:
            self._status.update(f"{self.name}: {phase}")
        elif FIGURES.sub("#", phase) != FIGURES.sub("#", self._said):
            self._said = phase
            err.print(f"{self.name}: {phase}", markup=False)


@contextmanager
def following(client: MiasmaClient, name: str) -> Iterator[Phases]:
    """While the block runs (a call that changes app ``name``), show what its rollout does,
    read by GetApp every POLL_INTERVAL seconds in a thread of its own."""
    done = threading.Event()

    def poll(phases: Phases) -> None:
        while not done.wait(POLL_INTERVAL):
            if not phases.polled:
                continue  # settle() reads the app now: one GetApp per interval is enough
            try:
                phases.show(client.get_app(name).observed.phase)
            except MiasmaError:  # not created yet, gone meanwhile, or the server away
                continue

    with Phases(name) as phases:
        poller = threading.Thread(target=poll, args=(phases,), daemon=True)
        poller.start()
        try:
            yield phases
        finally:
            done.set()
            poller.join()


def settle(
    client: MiasmaClient, app: apps_pb2.App, timeout: float, phases: Phases | None = None
) -> apps_pb2.App:
    """Wait until the rollout of ``app`` is over (showing its phases), then say whether it
    came up: exit code 8 with why when it did not."""
    deadline = time.monotonic() + timeout
    if phases is not None:
        phases.polled = False
    while not app_status(app).settled and time.monotonic() < deadline:
        if phases is not None:
            phases.show(app.observed.phase)
        time.sleep(POLL_INTERVAL)
        app = client.get_app(app.name)
    name, observed = short_name(app), app.observed
    status = app_status(app)
    if status is AppStatus.FAILED:
        raise CliError(f"{name} failed: {observed.last_error}", EXIT_NOT_LIVE)
    if status is AppStatus.NOT_LISTENING:
        raise CliError(
            f"{name} runs, but is {observed.last_error}: nothing answers at "
            f"{', '.join(app.urls)}. If it listens on another port: miasma apps:edit -a "
            f"{name} --add-target-ports PORT; if it serves no port, --no-wait skips this check.",
            EXIT_NOT_LIVE,
        )
    if not status.settled:
        detail = (
            f": {observed.phase or observed.last_error}"
            if observed.phase or observed.last_error
            else ""
        )
        raise CliError(f"{name} is still {status} after {timeout:g}s{detail}", EXIT_NOT_LIVE)
    return app

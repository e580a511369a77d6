"""Crash loops: an app whose process keeps exiting is started again later and later.

Miasma starts an app's container again as soon as Docker reports it down. An
app that exits again soon after each start would be started in a tight loop,
its failure hidden among the restarts; as Kubernetes' CrashLoopBackOff does,
each start that follows another within ``CALM`` seconds waits longer (1 s,
2 s, 4 s, … up to ``MAX_DELAY``), and reads say "crash loop: …" with the
exit code and last output meanwhile (docs/design.md §4). A user's change,
start or restart of the app starts afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

FREE_STARTS = 2  # starts again at once, before the delays begin
FIRST_DELAY = 1.0  # seconds; doubled per start up to MAX_DELAY
MAX_DELAY = 60.0
CALM = 2 * MAX_DELAY  # seconds after a start without a new one: the loop is over


@dataclass
class _Loop:
    starts: int  # starts again since the loop began
    last_start: float  # clock time of the last one


class CrashLoops:
    """Counts the starts Miasma makes of apps that went down by themselves."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._loops: dict[str, _Loop] = {}

    def wait(self, name: str) -> float:
        """Seconds before ``name`` may be started again (0: now)."""
        loop = self._current(name)
        if loop is None or loop.starts < FREE_STARTS:
            return 0.0
        delay = min(FIRST_DELAY * 2.0 ** (loop.starts - FREE_STARTS), MAX_DELAY)
        return max(0.0, loop.last_start + delay - self.clock())

    def starting(self, name: str) -> None:
        """``name`` went down by itself and is started again now."""
        loop = self._current(name)
        if loop is None:
            self._loops[name] = _Loop(1, self.clock())
        else:
            loop.starts += 1
            loop.last_start = self.clock()

    def starts(self, name: str) -> int:
        """How many times ``name`` was started again in its current loop (0: none)."""
        loop = self._current(name)
        return 0 if loop is None else loop.starts

    def forget(self, name: str) -> None:
        """A user's change, start or restart: count afresh."""
        self._loops.pop(name, None)

    def _current(self, name: str) -> _Loop | None:
        loop = self._loops.get(name)
        if loop is not None and self.clock() - loop.last_start > CALM:
            del self._loops[name]
            return None
        return loop

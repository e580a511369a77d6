"""An app's output as Miasma hands it on: lines, and notices along a follow."""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_LINE = 16 * 1024  # bytes of one line kept; Docker splits its own lines at 16 KiB too
MAX_TAIL = 100_000  # lines a caller may ask for at once


class Stream(enum.StrEnum):
    """Which output of the app a line was written to."""

    STDOUT = "stdout"
    STDERR = "stderr"


@dataclass(frozen=True)
class LogLine:
    """One line of output: ``time`` in nanoseconds since the epoch (Docker's own clock)."""

    time: int
    stream: Stream
    text: str
    source: str  # the container (or swarm task) that wrote it, 12 characters
    truncated: bool = False


@dataclass(frozen=True)
class LogNotice:
    """Said along a follow: it moved to ``source`` ("" while none runs), and why."""

    time: int
    message: str
    source: str = ""


@dataclass(frozen=True)
class LogSource:
    """What an app's output is read from now: a container (or a swarm service), and
    whether it runs (a follow of one that does not ends at once)."""

    ident: str
    running: bool

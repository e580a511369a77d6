"""Waiting for a condition in a test: poll it with a deadline, never sleep a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

POLL = 0.1  # seconds between checks
T = TypeVar("T")


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL)


def eventually(
    check: Callable[[], T],
    what: str,
    timeout: float = 30.0,
    retry_on: tuple[type[Exception], ...] = (AssertionError, RuntimeError),
) -> T:
    """Call ``check`` until it stops raising one of ``retry_on`` (by default AssertionError,
    or RuntimeError: a docker CLI race), and return its value; fail naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except retry_on as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:g} s: {exc}") from exc
        time.sleep(POLL)


async def until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """In a test on the event loop: let the loop run until ``check`` holds; fail naming
    ``what`` after ``within`` seconds. Work handed to threads (aiosqlite) needs real
    time, not only turns of the loop."""
    try:
        async with asyncio.timeout(within):
            while not check():  # noqa: ASYNC110 - plain state of the code under test, no event
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"never within {within:g} s: {what}") from None

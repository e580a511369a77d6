"""An app's env as text, one ``KEY=VALUE`` per line (what ``miasma env`` prints and
``env:edit`` opens): a value with spaces, quotes, ``#`` or a newline is written as a
JSON string (``KEY="two words"``), so every value reads back as it was."""

from __future__ import annotations

import json
from collections.abc import Mapping

PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,:/@+%")


def format_env(env: Mapping[str, str]) -> str:
    """``KEY=VALUE`` lines in name order."""
    return "".join(f"{key}={_value(env[key])}\n" for key in sorted(env))


def _value(value: str) -> str:
    return value if value and set(value) <= PLAIN else json.dumps(value, ensure_ascii=False)


def parse_env(text: str) -> dict[str, str]:
    """The variables of ``text`` (blank lines and ``#`` comments skipped); ValueError naming
    the line for one that is not ``KEY=VALUE`` or a name given twice."""
    env: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is text
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"line {number}: {line!r} is not KEY=VALUE")
        if key in env:
            raise ValueError(f"line {number}: {key} is given twice")
        value = value.strip()
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(
                    f"line {number}: the quoted value of {key} is not closed"
                ) from None
        env[key] = value
    return env


def env_changes(old: Mapping[str, str], new: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """What turns ``old`` into ``new``: variables to set, names to unset."""
    changed = {key: value for key, value in new.items() if old.get(key) != value}
    return changed, sorted(key for key in old if key not in new)

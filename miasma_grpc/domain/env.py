"""An app's environment: which names it may set, and edits of single variables.

``PORT`` and ``PORT_<n>`` belong to Miasma (they carry the target ports). A name
is what a shell can also use, with ``.`` and ``-`` allowed as many images read
them (``spring.profiles.active``): ``[A-Za-z_][A-Za-z0-9_.-]*``, at most 256
characters. Values are any text but NUL (Docker cannot pass it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from miasma_grpc.domain.errors import InvalidArgument
from miasma_grpc.domain.models import is_reserved_env_name

MAX_ENV = 256  # variables per app
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,255}")


def check_env_name(name: str, field: str) -> None:
    """:class:`InvalidArgument` on ``field`` unless ``name`` may be set by a user."""
    if is_reserved_env_name(name):
        raise InvalidArgument.field(
            field,
            f"{name} is set by Miasma from the app's target ports and cannot be overridden; "
            "change the ports with EditPorts instead",
            reason="RESERVED_ENV",
        )
    if not NAME.fullmatch(name):
        raise InvalidArgument.field(
            field,
            f"{name!r} is not a variable name: a letter or '_', then letters, digits, '_', "
            "'.' or '-' (at most 256)",
            reason="INVALID_ENV_NAME",
        )


def check_env(env: Mapping[str, str], field: str = "app.env") -> None:
    """Every name and value of ``env`` (errors on ``field[NAME]``), and their number."""
    if len(env) > MAX_ENV:
        raise InvalidArgument.field(field, f"at most {MAX_ENV} variables")
    for name, value in env.items():
        check_env_name(name, f"{field}[{name}]")
        if "\x00" in value:
            raise InvalidArgument.field(
                f"{field}[{name}]",
                "values may not contain NUL characters (Docker cannot pass them)",
            )


@dataclass(frozen=True)
class EnvEdit:
    """Variables to set (or change) and to remove, in one change."""

    set: Mapping[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.unset)

    def applied_to(self, env: Mapping[str, str], set_field: str = "set_env") -> dict[str, str]:
        """``env`` after this edit (checked: :class:`InvalidArgument` naming the field, the
        variables set being ``set_field``)."""
        check_env(self.set, set_field)
        for index, name in enumerate(self.unset):
            check_env_name(name, f"unset_env[{index}]")
            if name in self.set:
                raise InvalidArgument.field(
                    f"unset_env[{index}]", f"{name} is also in set_env: set it or unset it"
                )
        edited = {k: v for k, v in env.items() if k not in self.unset} | dict(self.set)
        if len(edited) > MAX_ENV:
            raise InvalidArgument.field(set_field, f"an app has at most {MAX_ENV} variables")
        return edited


def env_edit_from_mask(
    paths: list[str], env: Mapping[str, str], field: str = "update_mask.paths"
) -> EnvEdit | None:
    """The variables an update mask names one by one (AIP-161: ``env.KEY``, or
    ``env.`KEY``` for a name with dots): set to their value in ``env``, or removed when
    ``env`` has none. None when the mask names none."""
    named: dict[str, int] = {}
    for index, path in enumerate(paths):
        if path.startswith("env."):
            key = path.removeprefix("env.")
            if len(key) > 1 and key[0] == key[-1] == "`":
                key = key[1:-1]
            check_env_name(key, f"{field}[{index}]")
            named[key] = index
    if not named:
        return None
    if "env" in paths:
        raise InvalidArgument.field(
            f"{field}[{paths.index('env')}]",
            "'env' replaces every variable: it cannot go with single ones ('env.KEY')",
        )
    return EnvEdit(
        set={key: env[key] for key in named if key in env},
        unset=tuple(key for key in named if key not in env),
    )

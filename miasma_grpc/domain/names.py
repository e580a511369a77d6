"""App names and resource names (``apps/{app}``)."""

from __future__ import annotations

import re

from miasma_grpc.domain.errors import InvalidArgument

APP_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
GROUP = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9 ._-]{0,61}[A-Za-z0-9])?$")
COLLECTION = "apps/"


def validate_app_name(name: str, field: str = "app_id") -> str:
    """Return ``name`` if it is a DNS label, else raise :class:`InvalidArgument`."""
    if not APP_NAME.fullmatch(name):
        raise InvalidArgument.field(
            field,
            f"{name!r} is not a valid app name: use 1-63 lowercase letters, digits and "
            "hyphens, starting with a letter and not ending with a hyphen",
            reason="INVALID_APP_NAME",
        )
    return name


def parse_resource_name(resource: str, field: str = "name") -> str:
    """``apps/{app}`` -> ``app``, validating both parts."""
    if not resource.startswith(COLLECTION):
        raise InvalidArgument.field(
            field,
            f"{resource!r} is not a resource name of the form apps/{{app}}",
            reason="INVALID_RESOURCE_NAME",
        )
    return validate_app_name(resource[len(COLLECTION) :], field)


ALL_APPS = COLLECTION + "-"


def parse_watch_name(resource: str, field: str = "name") -> str | None:
    """``apps/{app}`` -> ``app``; ``apps/-`` (every app) -> ``None``."""
    if resource == ALL_APPS:
        return None
    if not resource:
        raise InvalidArgument.field(
            field,
            "name the app to watch (apps/{app}) or every app (apps/-)",
            reason="NAME_REQUIRED",
        )
    return parse_resource_name(resource, field)


def resource_name(app: str) -> str:
    """``app`` -> ``apps/{app}``."""
    return COLLECTION + app


def validate_group(group: str, field: str = "app.group") -> str:
    """Return ``group`` if it is empty (no group) or a valid group name."""
    if group and not GROUP.fullmatch(group):
        raise InvalidArgument.field(
            field,
            f"{group!r} is not a valid group: use 1-63 letters, digits, spaces, dots, "
            "underscores and hyphens, starting and ending with a letter or digit",
            reason="INVALID_GROUP",
        )
    return group

"""Who may do what: roles, the permission each method needs, and app scopes.

Three roles, each holding the one before (Kubernetes' view/edit/admin):

- ``viewer``: read apps, watch port events, read logs, list volumes, server info;
- ``deployer``: also create, change (ports, env, image, volumes mounted), start,
  stop, restart, upgrade and rename apps;
- ``admin``: also delete apps and volumes.

The table below is the one place a method's permission is written; a method
missing from it is refused to all.

A role may be limited to some apps (a :class:`Scope`: names matching a pattern, or
apps of a group): every app a call names, reads or changes must be in it, before and
after the change.
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from dataclasses import dataclass
from fnmatch import fnmatchcase

from miasma_grpc.domain.errors import PermissionDenied


class Role(enum.IntEnum):
    """Ordered: each role may do all that the ones below it may."""

    VIEWER = 1
    DEPLOYER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        """``viewer``, ``deployer`` or ``admin`` (any case)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: use viewer, deployer or admin") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Permission:
    """What a method does, and the least role that may do it."""

    name: str  # "apps.delete"
    role: Role


# Every AppService method, with the permission it needs (README "Security").
PERMISSIONS: dict[str, Permission] = {
    "GetApp": Permission("apps.get", Role.VIEWER),
    "ListApps": Permission("apps.list", Role.VIEWER),
    "WatchPortEvents": Permission("apps.watch", Role.VIEWER),
    "ReadLogs": Permission("apps.logs", Role.VIEWER),
    "ListVolumes": Permission("volumes.list", Role.VIEWER),
    "GetServerInfo": Permission("server.info", Role.VIEWER),
    "GetCaller": Permission("caller.get", Role.VIEWER),
    "CreateApp": Permission("apps.create", Role.DEPLOYER),
    "UpdateApp": Permission("apps.update", Role.DEPLOYER),
    "EditPorts": Permission("apps.update", Role.DEPLOYER),
    "EditApp": Permission("apps.update", Role.DEPLOYER),
    "StartApp": Permission("apps.start", Role.DEPLOYER),
    "StopApp": Permission("apps.stop", Role.DEPLOYER),
    "RestartApp": Permission("apps.restart", Role.DEPLOYER),
    "UpgradeApp": Permission("apps.upgrade", Role.DEPLOYER),
    "RenameApp": Permission("apps.rename", Role.DEPLOYER),
    "DeleteApp": Permission("apps.delete", Role.ADMIN),
    "DeleteVolume": Permission("volumes.delete", Role.ADMIN),
    "ListAuditRecords": Permission("audit.read", Role.ADMIN),
}
# The methods that may change something: each is recorded in the audit log.
CHANGES = frozenset(m for m, p in PERMISSIONS.items() if p.role > Role.VIEWER) - {
    "ListAuditRecords"
}


@dataclass(frozen=True)
class Scope:
    """The apps a role is limited to: names matching one of ``apps`` (shell patterns:
    ``web-*``), and apps whose group is one of ``groups``."""

    apps: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def covers(self, name: str, group: str = "") -> bool:
        """Whether the app ``name`` (of ``group``) is in the scope."""
        return any(fnmatchcase(name, p) for p in self.apps) or bool(group and group in self.groups)

    def __str__(self) -> str:
        parts = []
        if self.apps:
            parts.append(f"apps {', '.join(self.apps)}")
        if self.groups:
            parts.append(f"group{'s' if len(self.groups) > 1 else ''} {', '.join(self.groups)}")
        return " and ".join(parts) or "no app"


@dataclass(frozen=True)
class Identity:
    """Who calls: a named token or a certificate subject, its role, and the apps it is
    limited to (None: all)."""

    name: str
    role: Role
    source: str = "token"  # "token", "certificate", or "none" (a server that asks nobody)
    scope: Scope | None = None

    @property
    def permissions(self) -> list[str]:
        """The permissions the role holds, sorted."""
        return sorted({p.name for p in PERMISSIONS.values() if p.role <= self.role})

    def check(self, method: str) -> Permission:
        """The permission ``method`` needs; :class:`PermissionDenied` naming it if the role
        does not hold it."""
        permission = PERMISSIONS.get(method)
        if permission is None:
            raise PermissionDenied(f"{self.name} may not call {method}: no role may")
        if self.role < permission.role:
            raise PermissionDenied(
                f"{self.name} ({self.role}) may not call {method}: it needs permission "
                f"{permission.name}, which role {permission.role} has",
                metadata={"permission": permission.name, "role": str(permission.role)},
            )
        return permission

    def covers(self, name: str, group: str = "") -> bool:
        """Whether the app ``name`` (of ``group``) is one this identity may see and touch."""
        return self.scope is None or self.scope.covers(name, group)

    def check_app(self, name: str, group: str = "") -> None:
        """:class:`PermissionDenied` if the app ``name`` (of ``group``) is not in the scope."""
        if not self.covers(name, group):
            raise PermissionDenied(
                f"{self.name} may not touch app {name!r}"
                + (f" (group {group!r})" if group else "")
                + f": its role is limited to {self.scope}",
                reason="APP_OUT_OF_SCOPE",
                resource=f"apps/{name}",
            )


# The caller of the call under way (set by the access check, api/auth.py): the
# handlers read it (whoami; the scope of lists), the store checks a change's apps
# against its scope.
ANONYMOUS = Identity("anonymous", Role.ADMIN, source="none")  # a server that asks nobody
CALLER: ContextVar[Identity] = ContextVar("caller", default=ANONYMOUS)

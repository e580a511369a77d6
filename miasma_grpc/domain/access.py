"""Who may do what: roles, the permission each method needs, and app scopes.

Three roles, each holding the one before (Kubernetes' view/edit/admin):

- ``viewer``: read apps, watch port events, read logs, list volumes, server info;
- ``deployer``: also create, change (ports, env, image, volumes mounted), start,
  stop, restart, upgrade and rename apps;
- ``admin``: also delete apps and volumes.

The table below is the one place a method's permission is written; a method
missing from it is refused to all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
class Identity:
    """Who calls: a named token or a certificate subject, and its role."""

    name: str
    role: Role
    source: str = "token"  # "token", "certificate", or "none" (a server that asks nobody)

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

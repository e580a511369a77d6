"""The caller's scope in the handlers: an identity limited to some apps (docs/security.md)
names, sees and changes only those.

A call that names an app out of scope is ``PERMISSION_DENIED`` (reason
``APP_OUT_OF_SCOPE``) whether the app exists or not, so a scope does not tell what
lies outside it; lists, the event stream, volumes and the audit log leave out what
is not in scope. The store checks each change's apps once more, before and after,
in the change's own transaction (store/sqlite.py), so no race gets past a scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.access import CALLER
from miasma_grpc.domain.audit import AuditRecord
from miasma_grpc.domain.errors import NotFound
from miasma_grpc.domain.models import App


async def scoped(manager: AppManager, name: str) -> str:
    """``name``, if the caller may touch that app as it is now; PERMISSION_DENIED if not."""
    caller = CALLER.get()
    if not caller.covers(name):  # not by its name: perhaps by its group
        try:
            group = (await manager.get(name)).group
        except NotFound:
            group = ""  # out of scope by name, and no group: refused, as if it existed
        caller.check_app(name, group)
    return name


def check(name: str, group: str) -> None:
    """PERMISSION_DENIED unless the caller may have an app ``name`` in ``group`` (the
    state a creation, rename or change of group leads to)."""
    CALLER.get().check_app(name, group)


async def in_scope(
    read: Callable[[str, int], Awaitable[tuple[int, list[App]]]], after: str, limit: int
) -> tuple[int, list[App]]:
    """Up to ``limit`` apps after ``after`` that the caller may see, from pages of
    ``read(after, limit)``; and the revision of the last page read."""
    caller = CALLER.get()
    seen: list[App] = []
    while True:
        revision, page = await read(after, limit)
        seen += [a for a in page if caller.covers(a.name, a.group)]
        if len(page) < limit or len(seen) >= limit or caller.scope is None:
            return revision, seen[:limit]
        after = page[-1].name


async def groups(manager: AppManager) -> dict[str, str]:
    """Each app's group, by name, when the caller's scope is judged on groups ({} when it
    is not limited)."""
    if CALLER.get().scope is None:
        return {}
    return {a.name: a.group for a in await manager.store.list_apps()}


def visible_records(records: Sequence[AuditRecord], groups: dict[str, str]) -> list[AuditRecord]:
    """The audit records of apps the caller may see (by the app's name, or its group now),
    and those of no app."""
    caller = CALLER.get()
    names = [r.app.removeprefix("apps/") for r in records]
    return [
        r
        for r, name in zip(records, names, strict=True)
        if not name or caller.covers(name, groups.get(name, ""))
    ]

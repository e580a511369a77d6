"""The apps as committed, in memory: what every read is served from.

The store keeps two views of its apps. The working state runs ahead: it holds
the changes of transactions decided but not yet on disk. This one follows the
disk: a transaction's apps enter it when its commit is acknowledged, before its
callers and watchers hear of it, so a read never shows a change that might still
fail to commit, and always shows one that was acknowledged. Reads cost a dict
lookup, or a slice of a sorted name list for a page: no thread hop, no SQL.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping

from miasma_grpc.domain.errors import NotFound
from miasma_grpc.domain.models import App


class CommittedApps:
    """Apps by name and in name order, and the revision they are as of."""

    def __init__(self) -> None:
        self.revision = 0
        self._apps: dict[str, App] = {}
        self._names: list[str] = []  # sorted

    def __len__(self) -> int:
        return len(self._apps)

    def __contains__(self, name: object) -> bool:
        return name in self._apps

    def load(self, revision: int, apps: Iterable[App]) -> None:
        """Start over from what the database holds."""
        self.revision = revision
        self._apps = {app.name: app for app in apps}
        self._names = sorted(self._apps)

    def commit(self, revision: int, changed: Mapping[str, App | None]) -> None:
        """Take in one committed transaction's apps (``None``: deleted)."""
        for name, app in changed.items():
            if app is None:
                if self._apps.pop(name, None) is not None:
                    del self._names[bisect.bisect_left(self._names, name)]
            else:
                if name not in self._apps:
                    bisect.insort(self._names, name)
                self._apps[name] = app
        self.revision = max(self.revision, revision)

    def get(self, name: str) -> App:
        """The app called ``name``; :class:`NotFound` if there is none."""
        app = self._apps.get(name)
        if app is None:
            raise NotFound(f"app {name!r} not found", resource=f"apps/{name}")
        return app

    def page(self, after: str = "", limit: int | None = None) -> list[App]:
        """Apps in name order after ``after``, at most ``limit`` of them."""
        start = bisect.bisect_right(self._names, after) if after else 0
        stop = len(self._names) if limit is None or limit < 0 else start + limit
        return [self._apps[name] for name in self._names[start:stop]]

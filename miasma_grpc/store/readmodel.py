"""The apps as committed, in memory: what every read is served from.

The store keeps two views of its apps. The working state runs ahead: it holds
the changes of transactions decided but not yet on disk. This one follows the
disk: a transaction's apps enter it when its commit is acknowledged, before its
callers and watchers hear of it, so a read never shows a change that might still
fail to commit, and always shows one that was acknowledged. Reads cost a dict
lookup, or a slice of a sorted name list for a page: no thread hop, no SQL.
Filtered pages start from a sorted name list per group and per desired state
(whichever is shorter), so they look only at apps that may match.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable, Mapping

from miasma_grpc.domain.errors import NotFound
from miasma_grpc.domain.models import App, DesiredState

Index = dict[Hashable, list[str]]  # a key -> the names of the apps with it, sorted


class CommittedApps:
    """Apps by name and in name order, and the revision they are as of."""

    def __init__(self) -> None:
        self.revision = 0
        self._apps: dict[str, App] = {}
        self._names: list[str] = []  # sorted
        self._by_group: Index = {}
        self._by_state: Index = {}
        self._by_hidden: Index = {}

    def __len__(self) -> int:
        return len(self._apps)

    def __contains__(self, name: object) -> bool:
        return name in self._apps

    def load(self, revision: int, apps: Iterable[App]) -> None:
        """Start over from what the database holds."""
        self.revision = revision
        self._apps = {app.name: app for app in apps}
        self._names = sorted(self._apps)
        self._by_group, self._by_state, self._by_hidden = {}, {}, {}
        for name in self._names:  # in name order: appending keeps each list sorted
            app = self._apps[name]
            self._by_group.setdefault(app.group, []).append(name)
            self._by_state.setdefault(app.desired_state, []).append(name)
            self._by_hidden.setdefault(app.hidden, []).append(name)

    def commit(self, revision: int, changed: Mapping[str, App | None]) -> None:
        """Take in one committed transaction's apps (``None``: deleted)."""
        for name, app in changed.items():
            old = self._apps.get(name)
            if old is not None and app is None:
                del self._apps[name]
                _drop(self._names, name)
            elif old is None and app is not None:
                bisect.insort(self._names, name)
            if app is not None:
                self._apps[name] = app
            _refile(self._by_group, name, _key(old, "group"), _key(app, "group"))
            _refile(self._by_state, name, _key(old, "desired_state"), _key(app, "desired_state"))
            _refile(self._by_hidden, name, _key(old, "hidden"), _key(app, "hidden"))
        self.revision = max(self.revision, revision)

    def get(self, name: str) -> App:
        """The app called ``name``; :class:`NotFound` if there is none."""
        app = self._apps.get(name)
        if app is None:
            raise NotFound(f"app {name!r} not found", resource=f"apps/{name}")
        return app

    def page(
        self,
        after: str = "",
        limit: int | None = None,
        *,
        group: str | None = None,
        desired: DesiredState | None = None,
        hidden: bool | None = None,
        keep: Callable[[App], bool] | None = None,
    ) -> list[App]:
        """Apps in name order after ``after``, at most ``limit`` of them; only those of
        ``group``, of ``desired`` state, ``hidden`` or not, and that ``keep`` keeps, where
        given."""
        filters = ((self._by_hidden, hidden), (self._by_group, group), (self._by_state, desired))
        given = [index.get(key, []) for index, key in filters if key is not None]
        names = min(given, key=len, default=self._names)  # the shortest list to walk
        start = bisect.bisect_right(names, after) if after else 0
        if len(given) <= 1 and keep is None:  # the list is the whole filter
            stop = len(names) if limit is None or limit < 0 else start + limit
            return [self._apps[name] for name in names[start:stop]]
        found: list[App] = []
        for i in range(start, len(names)):
            if limit is not None and len(found) >= limit:
                break
            app = self._apps[names[i]]
            if (
                (group is None or app.group == group)
                and (desired is None or app.desired_state is desired)
                and (hidden is None or app.hidden is hidden)
                and (keep is None or keep(app))
            ):
                found.append(app)
        return found


def _key(app: App | None, field: str) -> Hashable | None:
    return None if app is None else getattr(app, field)


def _drop(names: list[str], name: str) -> None:
    del names[bisect.bisect_left(names, name)]


def _refile(index: Index, name: str, old: Hashable | None, new: Hashable | None) -> None:
    """Move ``name`` from the ``old`` key's list to the ``new`` one's (``None``: none)."""
    if old == new:
        return
    if old is not None:
        _drop(names := index[old], name)
        if not names:
            del index[old]
    if new is not None:
        bisect.insort(index.setdefault(new, []), name)

"""Each app's reply, encoded once per change, not once per read.

Reads are the hot path of service-to-service use ("what port is ``db`` on?"),
and building an ``App`` message (bindings, URLs, timestamps, env) cost more
than the rest of a ``GetApp``. The encoded ``GetAppResponse`` of an app is kept
until the app changes (a new committed ``App`` object: the read model replaces
it on every commit) or anything its observed state is made of changes (what
Docker last reported, a refused rollout, a rollout under way, Docker out of
sight: :meth:`AppManager.observation_key`). A page of ``ListApps`` is those encodings one after the
other: ``ListAppsResponse.apps`` and ``GetAppResponse.app`` are both field 1 of
type ``App``, and concatenated protobuf messages parse as one, repeated fields
appended (the protobuf encoding's rule for merging).
"""

from __future__ import annotations

from collections.abc import Iterable

from miasma.v1 import apps_pb2

from miasma_grpc.api.convert import app_to_proto
from miasma_grpc.apps import AppManager
from miasma_grpc.domain.models import App

SLACK = 64  # entries of gone apps tolerated before a sweep


class AppReplies:
    """Encoded replies by app name, each with what it was made of
    (:meth:`AppManager.observation_key`)."""

    def __init__(self, manager: AppManager, public_host: str) -> None:
        self.manager = manager
        self.public_host = public_host
        self._cache: dict[str, tuple[tuple[object, ...], bytes]] = {}
        self.built = 0  # encodings made (the rest of the reads were served from the cache)

    def __len__(self) -> int:
        return len(self._cache)

    def message(self, app: App) -> apps_pb2.App:
        """``app`` as a message (for replies that carry more than the app)."""
        return apps_pb2.GetAppResponse.FromString(self.get_app(app)).app

    def get_app(self, app: App) -> bytes:
        """The encoded ``GetAppResponse`` of ``app`` as committed, with what Docker reports."""
        key = self.manager.observation_key(app)
        cached = self._cache.get(app.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        observed = self.manager.observed_state(app)
        encoded = apps_pb2.GetAppResponse(
            app=app_to_proto(app, observed, self.public_host)
        ).SerializeToString()
        if cached is None and len(self._cache) > 2 * len(self.manager.store.committed) + SLACK:
            self._sweep()
        self._cache[app.name] = (key, encoded)
        self.built += 1
        return encoded

    def list_apps(self, apps: Iterable[App], next_page_token: str, revision: int) -> bytes:
        """The encoded ``ListAppsResponse`` of a page."""
        tail = apps_pb2.ListAppsResponse(next_page_token=next_page_token, revision=revision)
        return b"".join([*map(self.get_app, apps), tail.SerializeToString()])

    def _sweep(self) -> None:
        """Forget the replies of apps that are gone (deleted, renamed)."""
        current = self.manager.store.committed
        self._cache = {name: entry for name, entry in self._cache.items() if name in current}

"""Replies of reads, encoded once per change: over the real manager and SQLite store and the
in-memory runtime. A cached reply must never outlive a change of what it says."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from miasma.v1 import apps_pb2

from miasma_grpc.api.convert import app_to_proto
from miasma_grpc.api.replies import SLACK, AppReplies
from miasma_grpc.apps import AppManager
from miasma_grpc.domain.errors import RuntimeFailure
from miasma_grpc.domain.models import DesiredState, Port
from miasma_grpc.domain.ports import PortEdit
from miasma_grpc.runtime.fake import FakeRuntime

HOST = "apps.example"


def decoded(encoded: bytes) -> apps_pb2.App:
    return apps_pb2.GetAppResponse.FromString(encoded).app


async def test_a_reply_is_built_once_per_change_of_the_app_or_of_what_is_seen(
    manager: AppManager, runtime: FakeRuntime
) -> None:
    """Reads reuse the reply; an edit, a refused rollout, Docker out of sight, a rollout
    under way each give a new one that says so."""
    replies = AppReplies(manager, HOST)
    manager.regain_sight()  # as after the observer's first full look
    app = await manager.create("web", image="img:1")
    first = replies.get_app(app)
    assert replies.get_app(await manager.get("web")) is first
    assert replies.built == 1

    edited = (await manager.edit("web", ports=PortEdit(add_published=(Port(3500),)))).app
    assert [b.published_port for b in decoded(replies.get_app(edited)).bindings] == [3500]

    del runtime.deployed["web"]  # removed by hand, and Docker refuses to start it again
    runtime.arm("refuse")
    with pytest.raises(RuntimeFailure):
        await manager.converge("web")
    refused = decoded(replies.get_app(await manager.get("web")))
    assert refused.observed.rollout == apps_pb2.ROLLOUT_STATE_FAILED
    assert "refused" in refused.observed.last_error

    manager.lose_sight(datetime(2026, 12, 1, tzinfo=UTC))
    blind = decoded(replies.get_app(await manager.get("web")))
    assert blind.observed.unknown_since.seconds > 0
    manager.regain_sight()
    assert not decoded(replies.get_app(await manager.get("web"))).observed.HasField("unknown_since")

    manager.rolling.add("web")  # as while Docker is driven for it
    busy = decoded(replies.get_app(await manager.get("web")))
    assert busy.observed.rollout == apps_pb2.ROLLOUT_STATE_IN_PROGRESS
    manager.rolling.discard("web")
    assert replies.built == 6


async def test_a_page_is_the_replies_of_its_apps_one_after_the_other(
    manager: AppManager,
) -> None:
    """Concatenated GetAppResponse encodings and the page's own fields parse as exactly the
    ListAppsResponse built field by field."""
    replies = AppReplies(manager, HOST)
    for name in ("api", "db", "web"):
        await manager.create(name, image="img:1", desired_state=DesiredState.STOPPED)
    revision, apps = await manager.list(after="", limit=10)
    page = apps_pb2.ListAppsResponse.FromString(replies.list_apps(apps, "token", revision))
    assert page == apps_pb2.ListAppsResponse(
        apps=[app_to_proto(a, manager.observed_state(a), HOST) for a in apps],
        next_page_token="token",
        revision=revision,
    )
    assert [a.name for a in page.apps] == ["apps/api", "apps/db", "apps/web"]


async def test_replies_of_apps_that_are_gone_are_forgotten(manager: AppManager) -> None:
    """Many apps read, then deleted: their replies do not stay in memory for good."""
    replies = AppReplies(manager, HOST)
    names = [f"app-{i}" for i in range(SLACK + 10)]
    for name in names:
        replies.get_app(
            await manager.create(name, image="img:1", desired_state=DesiredState.STOPPED)
        )
    for name in names[1:]:
        await manager.delete(name)
    replies.get_app(await manager.create("new", image="img:1", desired_state=DesiredState.STOPPED))
    assert len(replies) == 2  # app-0 and new

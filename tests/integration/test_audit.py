"""The audit log in the store (a real SQLite file): a caller's change is recorded in the
change's own transaction, once per call; what is refused writes nothing; retention."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from miasma.v1 import apps_pb2

from miasma_grpc.api.audit import app_of, outcome, summarize
from miasma_grpc.domain.access import CALLER, Identity, Role, Scope
from miasma_grpc.domain.allocator import PortLedger
from miasma_grpc.domain.audit import AUDITED, AuditCall, AuditRecord
from miasma_grpc.domain.errors import AlreadyExists, PermissionDenied
from miasma_grpc.domain.events import Retention
from miasma_grpc.domain.models import App, Binding, PortRange
from miasma_grpc.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "m.db", PortLedger(PortRange(3001, 3999))) as opened:
        yield opened


@pytest.fixture
def call() -> Iterator[AuditCall]:
    """A deployer's EditApp under way."""
    audited = AuditCall("ci", "token", "EditApp", "apps/web", 'name: "apps/web"')
    token = AUDITED.set(audited)
    yield audited
    AUDITED.reset(token)


def app(name: str, port: int) -> App:
    return App(name=name, image="img", bindings=(Binding(port, 3000),))


async def records(store: SqliteStore, **filters: object) -> list[AuditRecord]:
    query = {"app": "", "identity": "", "since": None, "before_id": 0, "limit": 100} | filters
    return await store.read_audit(**query)  # type: ignore[arg-type]


async def test_a_change_carries_its_record_once_per_call(
    store: SqliteStore, call: AuditCall
) -> None:
    """The first transaction of the call that takes a revision writes the record, at that
    revision; the call's later transactions (its consequences) do not."""
    async with store.transaction() as tx:
        tx.insert_app(app("web", 3001))
        revision = tx.next_revision()
    async with store.transaction() as tx:
        tx.mark_applied("web", revision)
        tx.next_revision()
    [record] = await records(store)
    assert (record.identity, record.method, record.app, record.result, record.revision) == (
        "ci", "EditApp", "apps/web", "OK", revision,
    )  # fmt: skip
    assert record.time is not None
    assert call.changes == 1


async def test_a_refused_transaction_writes_no_record(store: SqliteStore, call: AuditCall) -> None:
    """A change the store refuses is not made, and neither is its record."""
    async with store.transaction() as tx:
        tx.insert_app(app("web", 3001))
    call.changes = 0

    async def again() -> None:
        async with store.transaction() as tx:
            tx.next_revision()
            tx.insert_app(app("web", 3002))

    with pytest.raises(AlreadyExists):
        await again()
    assert len(await records(store)) == 0  # the first had no revision: no change of a call


async def test_records_are_read_newest_first_filtered_and_kept_by_retention(
    store: SqliteStore,
) -> None:
    """Filters by app, identity and time; pages by id; compaction keeps the newest."""
    for n in range(5):
        who = "ci" if n % 2 else "ops"
        await store.record_audit(AuditRecord(who, "token", "DeleteApp", f"apps/a{n}",
                                             "PERMISSION_DENIED …", ""))  # fmt: skip
    every = await records(store)
    assert [r.app for r in every] == [f"apps/a{n}" for n in (4, 3, 2, 1, 0)]
    assert [r.app for r in await records(store, identity="ci")] == ["apps/a3", "apps/a1"]
    assert [r.app for r in await records(store, app="apps/a2")] == ["apps/a2"]
    page = await records(store, before_id=every[1].id, limit=2)
    assert [r.app for r in page] == ["apps/a2", "apps/a1"]
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await records(store, since=later) == []
    await store.compact_events(Retention(max_events=2, max_age=None))
    assert [r.app for r in await records(store)] == ["apps/a4", "apps/a3"]


def test_a_summary_leaves_the_values_of_variables_out() -> None:
    """Keys stay (what changed), values go (they may be passwords); one line."""
    request = apps_pb2.EditAppRequest(name="apps/db", set_env={"PASSWORD": "hunter2"})
    request.add_published_ports.add(number=5432)
    update = apps_pb2.UpdateAppRequest(app=apps_pb2.App(name="apps/db", env={"K": "secret"}))
    for message in (request, update):
        text = summarize(message)
        assert "hunter2" not in text
        assert "secret" not in text
        assert "\n" not in text
    assert "PASSWORD" in summarize(request)
    assert "5432" in summarize(request)
    assert app_of("UpdateApp", update) == "apps/db"
    assert app_of("CreateApp", apps_pb2.CreateAppRequest(app_id="web")) == "apps/web"
    refused = PermissionDenied("viewer may not", metadata={})
    assert outcome(refused) == "PERMISSION_DENIED PERMISSION_DENIED: viewer may not"


async def test_a_change_outside_the_callers_scope_is_refused_by_the_store(
    store: SqliteStore, call: AuditCall
) -> None:
    """The last guard of a scope: whatever a handler checked, a caller's change whose app
    is outside its scope, before or after, is refused in its transaction and not made
    (a race that moved the app away, a group changed under the caller)."""
    async with store.transaction() as tx:
        tx.insert_app(app("web", 3001))
    token = CALLER.set(Identity("ci", Role.DEPLOYER, scope=Scope(groups=("staging",))))
    try:

        async def move(group: str) -> None:
            async with store.transaction() as tx:
                tx.update_app(replace(tx.get_app("web"), group=group))
                tx.next_revision()

        with pytest.raises(PermissionDenied, match="limited to group staging"):
            await move("staging")  # before: web is in no group
        assert (await store.get_app("web")).group == ""
        assert await records(store) == []
    finally:
        CALLER.reset(token)

"""The gRPC API in-process: the real servicer on a real loopback socket, over the real
manager and SQLite store, with the in-memory runtime at the Docker edge. Fast tests of
the contract (fields, codes, masks); what Docker does is tested in tests/e2e."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from miasma.v1 import apps_pb2, apps_pb2_grpc

from miasma_grpc.apps import AppManager
from miasma_grpc.domain.errors import RuntimeFailure
from miasma_grpc.domain.logs import Stream
from miasma_grpc.runtime.fake import FakeRuntime

IMAGE = "img:1"


@pytest.fixture
def runtime() -> FakeRuntime:
    """Fake Docker, where postgres:15 declares a VOLUME."""
    return FakeRuntime(images={"postgres:15": ["/var/lib/postgresql/data"]})


async def create(stub: apps_pb2_grpc.AppServiceAsyncStub, name: str, **app: object) -> apps_pb2.App:
    """Create ``name`` (image IMAGE unless given)."""
    request = apps_pb2.CreateAppRequest(app_id=name, app=apps_pb2.App(**{"image": IMAGE, **app}))  # type: ignore[arg-type]
    return (await stub.CreateApp(request)).app


async def refused(call: object) -> grpc.aio.AioRpcError:
    """The error ``call`` (an awaitable RPC) ends with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_update_without_a_mask_changes_only_the_fields_set(
    stub: apps_pb2_grpc.AppServiceAsyncStub,
) -> None:
    """AIP-134: no mask means the fields the request sets; env, command, constraints and
    volumes it leaves empty stay as they were."""
    await create(stub, "web", env={"GREETING": "hi"}, command=["httpd"], constraints=["a==b"],
                 volumes=[apps_pb2.Volume(source="data1", target="/data")])  # fmt: skip
    updated = (
        await stub.UpdateApp(
            apps_pb2.UpdateAppRequest(app=apps_pb2.App(name="apps/web", image="img:2"))
        )
    ).app
    assert updated.image == "img:2"
    assert dict(updated.env) == {"GREETING": "hi"}
    assert list(updated.command) == ["httpd"]
    assert list(updated.constraints) == ["a==b"]
    assert [v.source for v in updated.volumes] == ["data1"]


async def test_update_with_a_mask_clears_a_named_empty_field(
    stub: apps_pb2_grpc.AppServiceAsyncStub,
) -> None:
    """A field named in the mask and left empty is cleared (that is how one clears env)."""
    await create(stub, "web", env={"GREETING": "hi"})
    mask = field_mask_pb2.FieldMask(paths=["env"])
    updated = (
        await stub.UpdateApp(
            apps_pb2.UpdateAppRequest(app=apps_pb2.App(name="apps/web"), update_mask=mask)
        )
    ).app
    assert dict(updated.env) == {}
    assert updated.image == IMAGE


async def test_update_that_sets_nothing_is_invalid(stub: apps_pb2_grpc.AppServiceAsyncStub) -> None:
    """No mask and no field set: INVALID_ARGUMENT on update_mask, nothing changes."""
    before = await create(stub, "web")
    error = await refused(
        stub.UpdateApp(apps_pb2.UpdateAppRequest(app=apps_pb2.App(name="apps/web")))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask" in (error.details() or "")
    after = (await stub.GetApp(apps_pb2.GetAppRequest(name="apps/web"))).app
    assert after.etag == before.etag


async def test_stop_grace_and_volumes_round_trip(stub: apps_pb2_grpc.AppServiceAsyncStub) -> None:
    """stop_grace (a Duration) and volumes come back as given; uid is set; the image's
    volume is listed as made for the app and mounted by it."""
    app = await create(stub, "db", image="postgres:15",
                       stop_grace=duration_pb2.Duration(seconds=2, nanos=500_000_000))  # fmt: skip
    assert (app.stop_grace.seconds, app.stop_grace.nanos) == (2, 500_000_000)
    assert len(app.uid) == 6
    listed = (await stub.ListVolumes(apps_pb2.ListVolumesRequest(app="apps/db"))).volumes
    assert [(v.created_for, v.image_path, list(v.mounted_by)) for v in listed] == [
        ("apps/db", "/var/lib/postgresql/data", ["apps/db"])
    ]
    none = (await stub.ListVolumes(apps_pb2.ListVolumesRequest(app="apps/other"))).volumes
    assert list(none) == []


@pytest.mark.parametrize(
    ("grace", "field"),
    [
        (duration_pb2.Duration(seconds=-1), "app.stop_grace"),
        (duration_pb2.Duration(seconds=3601), "app.stop_grace"),
        (duration_pb2.Duration(seconds=1, nanos=-5), "app.stop_grace"),
    ],
)
async def test_bad_stop_grace_is_invalid_argument(
    stub: apps_pb2_grpc.AppServiceAsyncStub, grace: duration_pb2.Duration, field: str
) -> None:
    """Negative, too long or malformed durations name app.stop_grace; nothing is created."""
    error = await refused(create(stub, "web", stop_grace=grace))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(field)
    assert list((await stub.ListApps(apps_pb2.ListAppsRequest())).apps) == []


async def test_edit_app_and_edit_ports_agree_on_ports(
    stub: apps_pb2_grpc.AppServiceAsyncStub,
) -> None:
    """EditApp is EditPorts plus volumes: the same ports, changes and refusals."""
    await create(stub, "a")
    await create(stub, "b")
    port = apps_pb2.Port(number=3500)
    by_ports = await stub.EditPorts(
        apps_pb2.EditPortsRequest(name="apps/a", add_published_ports=[port])
    )
    error = await refused(
        stub.EditApp(apps_pb2.EditAppRequest(name="apps/b", add_published_ports=[port]))
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    by_app = await stub.EditApp(
        apps_pb2.EditAppRequest(
            name="apps/b", add_published_ports=[apps_pb2.Port(number=3501)],
            add_volumes=[apps_pb2.Volume(source="bdata", target="/data")],
        )
    )  # fmt: skip
    assert [c.new_binding.published_port for c in by_ports.changes] == [3500]
    assert [c.new_binding.published_port for c in by_app.changes] == [3501]
    assert [v.source for v in by_app.app.volumes] == ["bdata"]


async def test_delete_volume_of_a_bad_name_is_invalid(
    stub: apps_pb2_grpc.AppServiceAsyncStub,
) -> None:
    """A name that is no volume name never reaches Docker."""
    error = await refused(stub.DeleteVolume(apps_pb2.DeleteVolumeRequest(name="../containers/x")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    missing = await refused(stub.DeleteVolume(apps_pb2.DeleteVolumeRequest(name="nothing-here")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_list_then_watch_from_the_lists_revision_misses_nothing(
    stub: apps_pb2_grpc.AppServiceAsyncStub,
) -> None:
    """ListApps says the revision it read at; a watch from it starts with the next change,
    and App.revision is a valid start too."""
    await create(stub, "a")
    b = await create(stub, "b")
    listed = await stub.ListApps(apps_pb2.ListAppsRequest())
    assert listed.revision >= max(app.revision for app in listed.apps)
    await stub.EditPorts(
        apps_pb2.EditPortsRequest(name="apps/a", add_published_ports=[apps_pb2.Port(number=3600)])
    )
    stream = stub.WatchPortEvents(
        apps_pb2.WatchPortEventsRequest(name="apps/-", start_revision=listed.revision)
    )
    first = await anext(aiter(stream))
    assert (first.event.app, first.event.kind) == ("apps/a", apps_pb2.PORT_EVENT_KIND_CHANGED)
    assert first.event.revision > listed.revision
    stream.cancel()
    from_app = stub.WatchPortEvents(
        apps_pb2.WatchPortEventsRequest(name="apps/b", start_revision=b.revision)
    )
    message = await anext(aiter(from_app))
    assert message.WhichOneof("payload") in ("event", "progress")
    from_app.cancel()


async def test_apps_are_listed_by_group_desired_state_and_rollout(
    stub: apps_pb2_grpc.AppServiceAsyncStub, manager: AppManager, runtime: FakeRuntime
) -> None:
    """Filters combine; an app Docker refused to start again is listed as FAILED; a group
    change alone is bookkeeping (Docker is not asked) and takes the app to its new group."""
    await create(stub, "api", group="web tier")
    await create(stub, "www", group="web tier", desired_state=apps_pb2.DESIRED_STATE_STOPPED)
    await create(stub, "db", group="data")
    await create(stub, "cron")

    async def names(**where: Any) -> list[str]:
        reply = await stub.ListApps(apps_pb2.ListAppsRequest(**where))
        return [a.name.removeprefix("apps/") for a in reply.apps]

    assert await names(group="web tier") == ["api", "www"]
    assert await names(group="web tier", desired_state=apps_pb2.DESIRED_STATE_RUNNING) == ["api"]
    assert await names(desired_state=apps_pb2.DESIRED_STATE_STOPPED) == ["www"]
    assert await names(group="nobody") == []
    assert await names(rollout=apps_pb2.ROLLOUT_STATE_FAILED) == []

    del runtime.deployed["cron"]  # gone, and Docker refuses to make it again
    runtime.arm("refuse")
    with pytest.raises(RuntimeFailure):
        await manager.converge("cron")
    assert await names(rollout=apps_pb2.ROLLOUT_STATE_FAILED) == ["cron"]
    assert await names(rollout=apps_pb2.ROLLOUT_STATE_APPLIED, group="web tier") == ["api", "www"]

    applied = runtime.applies
    moved = (await stub.UpdateApp(apps_pb2.UpdateAppRequest(
        app=apps_pb2.App(name="apps/db", group="web tier")))).app  # fmt: skip
    assert moved.group == "web tier"
    assert runtime.applies == applied, "a group change alone went to Docker"
    assert moved.observed.rollout == apps_pb2.ROLLOUT_STATE_APPLIED
    assert await names(group="web tier") == ["api", "db", "www"]
    assert await names(group="data") == []
    mask = field_mask_pb2.FieldMask(paths=["group"])
    cleared = await stub.UpdateApp(
        apps_pb2.UpdateAppRequest(app=apps_pb2.App(name="apps/db"), update_mask=mask)
    )
    assert cleared.app.group == ""


async def test_a_page_token_is_for_the_filters_it_was_made_with(
    stub: apps_pb2_grpc.AppServiceAsyncStub,
) -> None:
    """Pages of a filtered listing follow each other; the token with other filters is
    INVALID_ARGUMENT on page_token, and so are bad filters, each naming its field."""
    for name in ("a1", "a2", "a3", "b1"):
        await create(stub, name, group="a" if name.startswith("a") else "b")
    first = await stub.ListApps(apps_pb2.ListAppsRequest(group="a", page_size=2))
    second = await stub.ListApps(
        apps_pb2.ListAppsRequest(group="a", page_size=2, page_token=first.next_page_token)
    )
    assert [a.name for a in [*first.apps, *second.apps]] == ["apps/a1", "apps/a2", "apps/a3"]
    assert second.next_page_token == ""
    for request, field in (
        (apps_pb2.ListAppsRequest(group="b", page_token=first.next_page_token), "page_token"),
        (apps_pb2.ListAppsRequest(page_token=first.next_page_token), "page_token"),
        (apps_pb2.ListAppsRequest(group=" spaced "), "group"),
        (apps_pb2.ListAppsRequest(desired_state=9), "desired_state"),  # type: ignore[arg-type]
        (apps_pb2.ListAppsRequest(rollout=9), "rollout"),  # type: ignore[arg-type]
    ):
        error = await refused(stub.ListApps(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith(field), error.details()
    bad_group = await refused(stub.CreateApp(apps_pb2.CreateAppRequest(
        app_id="c", app=apps_pb2.App(image=IMAGE, group="x" * 64))))  # fmt: skip
    assert (bad_group.details() or "").startswith("app.group")
    assert [a.name for a in (await stub.ListApps(apps_pb2.ListAppsRequest())).apps] == [
        "apps/a1", "apps/a2", "apps/a3", "apps/b1"]  # fmt: skip


async def test_read_logs_sends_lines_and_refuses_bad_input_naming_the_field(
    stub: apps_pb2_grpc.AppServiceAsyncStub, runtime: FakeRuntime
) -> None:
    await create(stub, "web")
    await runtime.write("web", "hello")
    await runtime.write("web", "boom", Stream.STDERR)
    read = stub.ReadLogs(apps_pb2.ReadLogsRequest(name="apps/web", tail_lines=1))
    [reply] = [response async for response in read]
    assert (reply.line.text, reply.line.stream) == ("boom", apps_pb2.LOG_STREAM_STDERR)
    assert reply.line.source == runtime.container("web")[:12]

    bad = {
        "tail_lines": apps_pb2.ReadLogsRequest(name="apps/web", tail_lines=-1),
        "name": apps_pb2.ReadLogsRequest(name="web"),
        "since_time": apps_pb2.ReadLogsRequest(
            name="apps/web", since_time=timestamp_pb2.Timestamp(seconds=-5)
        ),
    }
    for field, request in bad.items():
        error = await refused(anext(aiter(stub.ReadLogs(request))))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith(field)
    missing = await refused(anext(aiter(stub.ReadLogs(apps_pb2.ReadLogsRequest(name="apps/x")))))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_env_is_set_and_unset_one_variable_at_a_time_atomically(
    stub: apps_pb2_grpc.AppServiceAsyncStub, runtime: FakeRuntime
) -> None:
    """EditApp set_env/unset_env and UpdateApp "env.KEY" leave the other variables; what
    the app runs changes with them."""
    await create(stub, "web", env={"GREETING": "hi", "EMPTY": "", "OLD": "x"})
    edited = await stub.EditApp(
        apps_pb2.EditAppRequest(name="apps/web", set_env={"NEW": "1"}, unset_env=["OLD", "NONE"])
    )
    assert dict(edited.app.env) == {"GREETING": "hi", "EMPTY": "", "NEW": "1"}
    assert runtime.deployed["web"].env["NEW"] == "1"
    assert "OLD" not in runtime.deployed["web"].env

    mask = field_mask_pb2.FieldMask(paths=["env.GREETING", "env.EMPTY", "env.`a.b`"])
    app = apps_pb2.App(name="apps/web", env={"GREETING": "hello", "a.b": "dotted"})
    updated = (await stub.UpdateApp(apps_pb2.UpdateAppRequest(app=app, update_mask=mask))).app
    assert dict(updated.env) == {"GREETING": "hello", "NEW": "1", "a.b": "dotted"}


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"set_env": {"BAD KEY": "1"}}, "set_env[BAD KEY]"),
        ({"set_env": {"PORT": "80"}}, "set_env[PORT]"),
        ({"set_env": {"1ST": "1"}}, "set_env[1ST]"),
        ({"set_env": {"A": "x\x00y"}}, "set_env[A]"),
        ({"unset_env": ["PORT_2"]}, "unset_env[0]"),
        ({"set_env": {"A": "1"}, "unset_env": ["B", "A"]}, "unset_env[1]"),
    ],
)
async def test_bad_env_edits_are_refused_naming_the_field_and_change_nothing(
    stub: apps_pb2_grpc.AppServiceAsyncStub, request_fields: dict[str, Any], field: str
) -> None:
    before = await create(stub, "web", env={"A": "0", "B": "0"})
    error = await refused(stub.EditApp(apps_pb2.EditAppRequest(name="apps/web", **request_fields)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(field)
    after = (await stub.GetApp(apps_pb2.GetAppRequest(name="apps/web"))).app
    assert (after.etag, dict(after.env)) == (before.etag, {"A": "0", "B": "0"})


async def test_env_edits_with_a_stale_etag_are_aborted(
    stub: apps_pb2_grpc.AppServiceAsyncStub,
) -> None:
    """Two env:edit sessions: the second to save is refused, not merged over the first."""
    before = await create(stub, "web", env={"A": "0"})
    await stub.EditApp(
        apps_pb2.EditAppRequest(name="apps/web", set_env={"A": "1"}, etag=before.etag)
    )
    error = await refused(
        stub.EditApp(apps_pb2.EditAppRequest(name="apps/web", set_env={"A": "2"}, etag=before.etag))
    )
    assert error.code() == grpc.StatusCode.ABORTED
    after = (await stub.GetApp(apps_pb2.GetAppRequest(name="apps/web"))).app
    assert dict(after.env) == {"A": "1"}


async def test_update_mask_cannot_replace_and_edit_env_at_once_and_names_are_checked(
    stub: apps_pb2_grpc.AppServiceAsyncStub,
) -> None:
    await create(stub, "web", env={"A": "0"})
    for paths, field in ((["env", "env.A"], "update_mask.paths[0]"),
                         (["image", "env.BAD KEY"], "update_mask.paths[1]")):  # fmt: skip
        mask = field_mask_pb2.FieldMask(paths=paths)
        app = apps_pb2.App(name="apps/web", image=IMAGE, env={"A": "1"})
        error = await refused(stub.UpdateApp(apps_pb2.UpdateAppRequest(app=app, update_mask=mask)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith(field)


async def test_hidden_apps_are_left_out_of_listings_unless_asked_for(
    stub: apps_pb2_grpc.AppServiceAsyncStub, runtime: FakeRuntime
) -> None:
    """Hiding or showing an app (or moving it to a group) is bookkeeping: no Docker call."""
    await create(stub, "proxy", hidden=True)
    await create(stub, "web")

    async def listed(**request: Any) -> list[str]:
        page = await stub.ListApps(apps_pb2.ListAppsRequest(**request))
        return [app.name for app in page.apps]

    assert await listed() == ["apps/web"]
    assert await listed(show_hidden=True) == ["apps/proxy", "apps/web"]
    applies = runtime.applies
    shown = await stub.EditApp(apps_pb2.EditAppRequest(name="apps/proxy", hidden=False))
    assert not shown.app.hidden
    assert await listed() == ["apps/proxy", "apps/web"]
    grouped = await stub.EditApp(apps_pb2.EditAppRequest(name="apps/web", group="front"))
    assert grouped.app.group == "front"
    assert grouped.app.observed.rollout == apps_pb2.ROLLOUT_STATE_APPLIED
    ungrouped = await stub.EditApp(apps_pb2.EditAppRequest(name="apps/web", group=""))
    assert ungrouped.app.group == ""
    assert runtime.applies == applies
    first = await stub.ListApps(apps_pb2.ListAppsRequest(page_size=1, show_hidden=True))
    error = await refused(stub.ListApps(apps_pb2.ListAppsRequest(page_token=first.next_page_token)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # a token is for its filters


async def test_placement_constraints_are_added_and_removed_one_by_one(
    stub: apps_pb2_grpc.AppServiceAsyncStub, runtime: FakeRuntime
) -> None:
    await create(stub, "web", constraints=["node.labels.zone==a"])
    edited = await stub.EditApp(
        apps_pb2.EditAppRequest(
            name="apps/web",
            add_constraints=["node.hostname != db1", "node.labels.zone==a"],
            remove_constraints=["node.labels.zone==a"],
        )
    )
    assert list(edited.app.constraints) == ["node.hostname!=db1", "node.labels.zone==a"]
    error = await refused(
        stub.EditApp(apps_pb2.EditAppRequest(name="apps/web", remove_constraints=["a==b"]))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("remove_constraints[0]")


@pytest.mark.parametrize("runtime", [FakeRuntime(mode="container")])
async def test_the_container_runtime_refuses_placement_constraints(
    stub: apps_pb2_grpc.AppServiceAsyncStub, runtime: FakeRuntime
) -> None:
    """One engine has no nodes to choose: constraints are refused, not silently ignored."""
    error = await refused(create(stub, "web", constraints=["node.labels.zone==a"]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (error.details() or "").startswith("app.constraints")
    await create(stub, "web")
    error = await refused(
        stub.EditApp(apps_pb2.EditAppRequest(name="apps/web", add_constraints=["a==b"]))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "swarm" in (error.details() or "")


async def test_upgrade_rolls_out_only_when_the_registry_has_another_image(
    stub: apps_pb2_grpc.AppServiceAsyncStub, runtime: FakeRuntime
) -> None:
    runtime.image_ids[IMAGE] = runtime.registry[IMAGE] = "sha256:one"
    await create(stub, "web")
    request = apps_pb2.UpgradeAppRequest(name="apps/web")
    same = await stub.UpgradeApp(request)
    assert not same.changed
    assert same.app.image_digest == ""
    generation = runtime.generations["web"]

    runtime.registry[IMAGE] = "sha256:two"  # pushed meanwhile
    upgraded = await stub.UpgradeApp(request)
    assert upgraded.changed
    assert upgraded.app.image_digest == "sha256:two"
    assert runtime.deployed["web"].image == "sha256:two"
    assert runtime.generations["web"] == generation + 1  # a new container
    again = await stub.UpgradeApp(request)
    assert not again.changed
    assert again.app.revision == upgraded.app.revision

    updated = await stub.UpdateApp(
        apps_pb2.UpdateAppRequest(app=apps_pb2.App(name="apps/web", image="img:2"))
    )
    assert updated.app.image_digest == ""  # a new reference: its tag again
    runtime.arm("refuse")  # the registry refuses
    error = await refused(stub.UpgradeApp(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_dry_run_shows_the_target_ports_the_change_then_picks(
    stub: apps_pb2_grpc.AppServiceAsyncStub,
) -> None:
    """validate_only of a create and of an edit draws the same random target ports as the
    real request right after it."""
    dry = await stub.CreateApp(
        apps_pb2.CreateAppRequest(app_id="web", app=apps_pb2.App(image=IMAGE), validate_only=True)
    )
    made = await create(stub, "web")
    assert [b.target_port for b in made.bindings] == [b.target_port for b in dry.app.bindings]
    edit = apps_pb2.EditPortsRequest(
        name="apps/web",
        add_published_ports=[apps_pb2.Port(number=3100), apps_pb2.Port(number=3101)],
    )
    dry_edit = apps_pb2.EditPortsRequest()
    dry_edit.CopyFrom(edit)
    dry_edit.validate_only = True
    planned = await stub.EditPorts(dry_edit)
    edited = await stub.EditPorts(edit)
    assert [(b.published_port, b.target_port) for b in edited.app.bindings] == [
        (b.published_port, b.target_port) for b in planned.app.bindings
    ]


async def test_rename_over_grpc_keeps_the_ports_and_refuses_clearly(
    stub: apps_pb2_grpc.AppServiceAsyncStub,
) -> None:
    """RenameApp answers the app under its new name with the same bindings; a bad name,
    a name taken and an unknown app are refused with the right code and the field."""
    web = await create(stub, "web")
    await create(stub, "api")
    renamed = (
        await stub.RenameApp(apps_pb2.RenameAppRequest(name="apps/web", new_app_id="site"))
    ).app
    assert renamed.name == "apps/site"
    assert list(renamed.bindings) == list(web.bindings)
    cases = [
        ("apps/site", "Bad Name", grpc.StatusCode.INVALID_ARGUMENT, "new_app_id"),
        ("apps/site", "api", grpc.StatusCode.ALREADY_EXISTS, "api"),
        ("apps/web", "other", grpc.StatusCode.NOT_FOUND, "web"),
    ]
    for name, new, code, named in cases:
        error = await refused(stub.RenameApp(apps_pb2.RenameAppRequest(name=name, new_app_id=new)))
        assert error.code() == code
        assert named in (error.details() or "")
    listed = await stub.ListApps(apps_pb2.ListAppsRequest())
    assert [app.name for app in listed.apps] == ["apps/api", "apps/site"]

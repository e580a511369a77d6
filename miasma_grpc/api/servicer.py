"""``miasma.v1.AppService``: validates requests and calls the use cases."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from typing import Any, TypeVar

import grpc
from miasma.v1 import apps_pb2, apps_pb2_grpc

from miasma_grpc import __version__
from miasma_grpc.api.convert import (
    PROTOCOL_TO_PROTO,
    audit_record_to_proto,
    binding_to_proto,
    decode_page_token,
    desired_state_from_proto,
    edit_from_proto,
    encode_page_token,
    list_filter_from_proto,
    log_item_to_proto,
    logs_query_from_proto,
    page_size,
    routes_from_proto,
    stop_grace_from_proto,
    volume_edit_from_proto,
    volume_info_to_proto,
    volumes_from_proto,
    watch_item_to_proto,
)
from miasma_grpc.api.handlers import abort
from miasma_grpc.api.replies import AppReplies
from miasma_grpc.api.scopes import check, in_scope, scoped, visible_records
from miasma_grpc.api.scopes import groups as scope_groups
from miasma_grpc.apps import AppManager, EditResult
from miasma_grpc.config import Settings
from miasma_grpc.domain.access import CALLER
from miasma_grpc.domain.env import EnvEdit, env_edit_from_mask
from miasma_grpc.domain.errors import (
    DeadlineExceeded,
    InvalidArgument,
    MiasmaError,
    PermissionDenied,
)
from miasma_grpc.domain.events import PortEvent
from miasma_grpc.domain.models import App, DesiredState
from miasma_grpc.domain.names import parse_resource_name, parse_watch_name
from miasma_grpc.domain.placement import PlacementEdit
from miasma_grpc.domain.ports import CREATE_FIELDS, EditFields, PortEdit
from miasma_grpc.domain.routes import RouteEdit
from miasma_grpc.domain.volumes import VolumeInfo
from miasma_grpc.events import EventHub
from miasma_grpc.logs import AppLogs

DEFAULT_AUDIT_PAGE = 100
MAX_AUDIT_PAGE = 1000

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[["AppServicer", Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]

UPDATABLE = (
    "image", "command", "env", "constraints", "volumes", "stop_grace", "group", "hidden"
)  # fmt: skip
Context = grpc.aio.ServicerContext[Any, Any]


def rpc(method: Handler[Req, Resp], *, bounded: bool = True) -> Handler[Req, Resp]:
    """Bound ``method`` by ``--rpc-timeout`` (unless not ``bounded``: a pull may take
    minutes); turn a :class:`MiasmaError` into a rich status."""

    @functools.wraps(method)
    async def wrapper(
        self: AppServicer, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> Resp:
        try:
            limit = asyncio.timeout(self.settings.rpc_timeout if bounded else None)
            try:
                async with limit:
                    return await method(self, request, context)
            except TimeoutError as exc:
                if not limit.expired():
                    raise
                raise DeadlineExceeded(
                    f"the call took longer than the server's limit of "
                    f"{self.settings.rpc_timeout:g} s; a rollout cut short is finished by the "
                    "reconciler"
                ) from exc
        except MiasmaError as exc:
            await abort(context, exc)

    return wrapper


class AppServicer(apps_pb2_grpc.AppServiceServicer):
    """gRPC adapter over :class:`AppManager`."""

    def __init__(
        self,
        manager: AppManager,
        hub: EventHub,
        settings: Settings,
        logs: AppLogs | None = None,
    ) -> None:
        self.manager = manager
        self.hub = hub
        self.logs = logs or AppLogs(manager)
        self.settings = settings
        self.replies = AppReplies(manager, settings.public_host)

    def _proto(self, app: App) -> apps_pb2.App:
        return self.replies.message(app)

    @rpc
    async def CreateApp(
        self, request: apps_pb2.CreateAppRequest, context: Context
    ) -> apps_pb2.CreateAppResponse:
        """Create (and by default start) an app."""
        if not request.app_id:
            raise InvalidArgument.field(
                "app_id", "the app's name is required", reason="APP_ID_REQUIRED"
            )
        check(request.app_id, request.app.group)
        app = await self.manager.create(
            request.app_id,
            image=request.app.image,
            command=list(request.app.command),
            env=dict(request.app.env),
            desired_state=desired_state_from_proto(request.app.desired_state),
            constraints=list(request.app.constraints),
            ports=edit_from_proto(request.published_ports, request.target_ports, CREATE_FIELDS),
            volumes=volumes_from_proto(request.app.volumes),
            stop_grace=stop_grace_from_proto(request.app),
            group=request.app.group,
            hidden=request.app.hidden,
            routes=routes_from_proto(request.app.routes),
            validate_only=request.validate_only,
            request_id=request.request_id,
        )
        return apps_pb2.CreateAppResponse(app=self._proto(app))

    @rpc
    async def GetApp(  # encoded: see api/registry.py
        self, request: apps_pb2.GetAppRequest, context: Context
    ) -> bytes:
        """Return one app (its reply as encoded at its last change)."""
        app = await self.manager.get(await scoped(self.manager, parse_resource_name(request.name)))
        return self.replies.get_app(app)

    @rpc
    async def ListApps(  # encoded: see api/registry.py
        self, request: apps_pb2.ListAppsRequest, context: Context
    ) -> bytes:
        """Return a page of apps in name order (each app's reply as encoded at its last
        change)."""
        limit = page_size(request.page_size)
        where = list_filter_from_proto(request)

        async def read(after: str, count: int) -> tuple[int, list[App]]:
            return await self.manager.list(
                after=after, limit=count, group=where.group, desired=where.desired,
                rollout=where.rollout, hidden=where.hidden,
            )  # fmt: skip

        after = decode_page_token(request.page_token, where.key)
        revision, apps = await in_scope(read, after, limit + 1)
        token = encode_page_token(apps[limit - 1].name, where.key) if len(apps) > limit else ""
        return self.replies.list_apps(apps[:limit], token, revision)

    @rpc
    async def UpdateApp(
        self, request: apps_pb2.UpdateAppRequest, context: Context
    ) -> apps_pb2.UpdateAppResponse:
        """Change image, command, env (whole, or ``env.KEY`` one by one), constraints,
        volumes, the stop grace period or the group, as selected by the field mask."""
        name = await scoped(self.manager, parse_resource_name(request.app.name, "app.name"))
        paths = list(request.update_mask.paths) or set_fields(request.app)
        if "group" in paths:
            check(name, request.app.group)
        env_edit = env_edit_from_mask(paths, request.app.env)
        for index, path in enumerate(paths):
            if path not in UPDATABLE and not path.startswith("env."):
                raise InvalidArgument.field(
                    f"update_mask.paths[{index}]",
                    f"{path!r} cannot be updated; updatable fields are {', '.join(UPDATABLE)} "
                    "(ports: EditPorts; state: StartApp/StopApp)",
                )
        app = await self.manager.update(
            name,
            image=request.app.image if "image" in paths else None,
            command=list(request.app.command) if "command" in paths else None,
            env=dict(request.app.env) if "env" in paths else None,
            env_edit=env_edit,
            constraints=list(request.app.constraints) if "constraints" in paths else None,
            volumes=volumes_from_proto(request.app.volumes) if "volumes" in paths else None,
            stop_grace=stop_grace_from_proto(request.app) if "stop_grace" in paths else None,
            group=request.app.group if "group" in paths else None,
            hidden=request.app.hidden if "hidden" in paths else None,
            etag=request.app.etag,
            request_id=request.request_id,
        )
        return apps_pb2.UpdateAppResponse(app=self._proto(app))

    @rpc
    async def DeleteApp(
        self, request: apps_pb2.DeleteAppRequest, context: Context
    ) -> apps_pb2.DeleteAppResponse:
        """Delete an app, its container and its ports (and its volumes, if asked)."""
        app, deleted = await self.manager.delete(
            await scoped(self.manager, parse_resource_name(request.name)),
            etag=request.etag,
            delete_volumes=request.delete_volumes,
        )
        return apps_pb2.DeleteAppResponse(app=self._proto(app), deleted_volumes=deleted)

    @rpc
    async def StartApp(
        self, request: apps_pb2.StartAppRequest, context: Context
    ) -> apps_pb2.StartAppResponse:
        """Start an app."""
        name = await scoped(self.manager, parse_resource_name(request.name))
        app = await self.manager.set_desired_state(name, DesiredState.RUNNING)
        return apps_pb2.StartAppResponse(app=self._proto(app))

    @rpc
    async def StopApp(
        self, request: apps_pb2.StopAppRequest, context: Context
    ) -> apps_pb2.StopAppResponse:
        """Stop an app; its ports stay reserved."""
        name = await scoped(self.manager, parse_resource_name(request.name))
        app = await self.manager.set_desired_state(name, DesiredState.STOPPED)
        return apps_pb2.StopAppResponse(app=self._proto(app))

    @rpc
    async def RestartApp(
        self, request: apps_pb2.RestartAppRequest, context: Context
    ) -> apps_pb2.RestartAppResponse:
        """Restart an app's container."""
        app = await self.manager.restart(
            await scoped(self.manager, parse_resource_name(request.name))
        )
        return apps_pb2.RestartAppResponse(app=self._proto(app))

    @rpc
    async def EditPorts(
        self, request: apps_pb2.EditPortsRequest, context: Context
    ) -> apps_pb2.EditPortsResponse:
        """Add/remove published and target ports atomically."""
        result = await self.manager.edit(
            await scoped(self.manager, parse_resource_name(request.name)),
            ports=_port_edit(request),
            validate_only=request.validate_only,
            etag=request.etag,
            request_id=request.request_id,
        )
        return apps_pb2.EditPortsResponse(app=self._proto(result.app), changes=_changes(result))

    @rpc
    async def EditApp(
        self, request: apps_pb2.EditAppRequest, context: Context
    ) -> apps_pb2.EditAppResponse:
        """Add/remove ports and volumes, set/unset variables, in one atomic change."""
        name = await scoped(self.manager, parse_resource_name(request.name))
        if request.HasField("group"):
            check(name, request.group)
        result = await self.manager.edit(
            name,
            ports=_port_edit(request),
            volumes=volume_edit_from_proto(request.add_volumes, request.remove_volumes),
            env=EnvEdit(dict(request.set_env), tuple(request.unset_env)),
            placement=PlacementEdit(
                tuple(request.add_constraints), tuple(request.remove_constraints)
            ),
            group=request.group if request.HasField("group") else None,
            hidden=request.hidden if request.HasField("hidden") else None,
            routes=RouteEdit(
                routes_from_proto(request.add_routes), routes_from_proto(request.remove_routes)
            ),
            validate_only=request.validate_only,
            etag=request.etag,
            request_id=request.request_id,
        )
        return apps_pb2.EditAppResponse(app=self._proto(result.app), changes=_changes(result))

    @rpc
    async def RenameApp(
        self, request: apps_pb2.RenameAppRequest, context: Context
    ) -> apps_pb2.RenameAppResponse:
        """Give an app a new name, keeping everything it has."""
        name = await scoped(self.manager, parse_resource_name(request.name))
        check(request.new_app_id, (await self.manager.get(name)).group)
        app = await self.manager.rename(
            name,
            request.new_app_id,
            etag=request.etag,
            validate_only=request.validate_only,
        )
        return apps_pb2.RenameAppResponse(app=self._proto(app))

    @rpc
    async def ListVolumes(
        self, request: apps_pb2.ListVolumesRequest, context: Context
    ) -> apps_pb2.ListVolumesResponse:
        """The volumes Miasma made, with the apps that mount them."""
        app = (
            await scoped(self.manager, parse_resource_name(request.app, "app"))
            if request.app
            else None
        )
        caller = CALLER.get()
        groups = await scope_groups(self.manager)
        volumes = [
            volume_info_to_proto(info, holders)
            for info, holders in await self.manager.list_volumes()
            if (app is None or info.app == app or app in holders)
            and (
                caller.scope is None
                or any(caller.covers(a, groups.get(a, "")) for a in (info.app, *holders) if a)
            )
        ]
        return apps_pb2.ListVolumesResponse(volumes=volumes)

    @rpc
    async def DeleteVolume(
        self, request: apps_pb2.DeleteVolumeRequest, context: Context
    ) -> apps_pb2.DeleteVolumeResponse:
        """Delete a volume Miasma made that no app mounts."""
        info = await self.manager.delete_volume(request.name, allowed=self._volume_in_scope)
        return apps_pb2.DeleteVolumeResponse(volume=volume_info_to_proto(info, ()))

    async def WatchPortEvents(
        self, request: apps_pb2.WatchPortEventsRequest, context: Context
    ) -> AsyncIterator[apps_pb2.WatchPortEventsResponse]:
        """Stream port events from ``start_revision`` (0: snapshot first), with heartbeats."""
        try:
            app = parse_watch_name(request.name)
            if app is not None:
                await scoped(self.manager, app)
            caller = CALLER.get()
            if request.start_revision < 0:
                raise InvalidArgument.field("start_revision", "must be 0 or a revision seen before")
            items = self.hub.watch(
                app, request.start_revision, heartbeat=self.settings.watch_heartbeat
            )
            async for item in items:
                if isinstance(item, PortEvent) and not caller.covers(item.app, item.group):
                    continue  # out of the caller's scope (a heartbeat tells the revision)
                yield watch_item_to_proto(item)
        except MiasmaError as exc:
            await abort(context, exc)

    @functools.partial(rpc, bounded=False)
    async def UpgradeApp(
        self, request: apps_pb2.UpgradeAppRequest, context: Context
    ) -> apps_pb2.UpgradeAppResponse:
        """Pull the app's image again; roll it out if it changed. Not bounded by
        --rpc-timeout, as a pull may take minutes: the pull has its own limit (5 minutes,
        runtime/docker.py PULL_TIMEOUT) and a rollout waits at most for the app to come up."""
        app, changed = await self.manager.upgrade(
            await scoped(self.manager, parse_resource_name(request.name))
        )
        return apps_pb2.UpgradeAppResponse(app=self._proto(app), changed=changed)

    async def ReadLogs(
        self, request: apps_pb2.ReadLogsRequest, context: Context
    ) -> AsyncIterator[apps_pb2.ReadLogsResponse]:
        """Stream an app's output (docs/logs.md); not bounded by --rpc-timeout."""
        try:
            name = await scoped(self.manager, parse_resource_name(request.name))
            query = logs_query_from_proto(request)
            items = self.logs.read(name, tail=query.tail, since=query.since, follow=query.follow)
            async for item in items:
                yield log_item_to_proto(item)
        except MiasmaError as exc:
            await abort(context, exc)

    @rpc
    async def GetCaller(
        self, request: apps_pb2.GetCallerRequest, context: Context
    ) -> apps_pb2.GetCallerResponse:
        """Who the server takes the caller for (set by the access check), and its rights."""
        caller = CALLER.get()
        scope = caller.scope
        return apps_pb2.GetCallerResponse(
            name=caller.name, role=str(caller.role), source=caller.source,
            permissions=caller.permissions, app_patterns=scope.apps if scope else (),
            groups=scope.groups if scope else (),
        )  # fmt: skip

    @rpc
    async def ListAuditRecords(
        self, request: apps_pb2.ListAuditRecordsRequest, context: Context
    ) -> apps_pb2.ListAuditRecordsResponse:
        """The audit log, newest first, a page at a time (docs/security.md)."""
        limit = request.page_size or DEFAULT_AUDIT_PAGE
        if not 0 < limit <= MAX_AUDIT_PAGE:
            raise InvalidArgument.field("page_size", f"must be between 1 and {MAX_AUDIT_PAGE}")
        before = 0
        if request.page_token:
            if not request.page_token.isdigit():
                raise InvalidArgument.field("page_token", "is not one this method gave")
            before = int(request.page_token)
        app = (
            f"apps/{await scoped(self.manager, parse_resource_name(request.app, 'app'))}"
            if request.app
            else ""
        )
        since = request.since_time.ToDatetime(UTC) if request.HasField("since_time") else None
        records = await self.manager.store.read_audit(
            app=app, identity=request.identity, since=since, before_id=before, limit=limit
        )
        visible = visible_records(records, await scope_groups(self.manager))
        return apps_pb2.ListAuditRecordsResponse(
            records=[audit_record_to_proto(r) for r in visible],
            next_page_token=str(records[-1].id) if len(records) == limit else "",
        )

    async def _volume_in_scope(self, info: VolumeInfo) -> None:
        """A volume may be deleted by a caller whose scope covers the app it was made for
        (a volume made for no app: by a caller limited to no apps)."""
        caller = CALLER.get()
        if caller.scope is not None and not info.app:
            raise PermissionDenied(
                f"{caller.name} may not delete volume {info.name!r}: it was made for no app, "
                f"and its role is limited to {caller.scope}",
                reason="APP_OUT_OF_SCOPE",
            )
        if caller.scope is not None:
            await scoped(self.manager, info.app)

    @rpc
    async def GetServerInfo(
        self, request: apps_pb2.GetServerInfoRequest, context: Context
    ) -> apps_pb2.GetServerInfoResponse:
        """Describe the server and its Docker engine."""
        info = await self.manager.runtime.info()
        return apps_pb2.GetServerInfoResponse(
            version=__version__,
            docker_version=info.docker_version,
            runtime_mode=info.mode,
            swarm_id=info.swarm_id,
            join_command=info.join_command,
            docker_reachable=info.reachable,
            published_port_range=str(self.settings.published_range),
            target_port_range=str(self.settings.target_range),
            reserved_ports=[
                apps_pb2.Port(number=p.number, protocol=PROTOCOL_TO_PROTO[p.protocol])
                for p in sorted(self.settings.all_reserved)
            ],
            public_host=self.settings.public_host,
            bind_mounts_allowed=self.settings.allow_bind_mounts,
            router=self.settings.router,
            router_http_port=self.settings.router_port("http"),
            router_https_port=self.settings.router_port("https"),
        )


def set_fields(app: apps_pb2.App) -> list[str]:
    """Without an update mask, the fields the request sets (AIP-134): a field left empty
    is left as it is, never cleared."""
    paths = [
        path
        for path in ("image", "command", "env", "constraints", "volumes", "group", "hidden")
        if getattr(app, path)
    ]
    if app.HasField("stop_grace"):
        paths.append("stop_grace")
    if not paths:
        raise InvalidArgument.field(
            "update_mask", f"nothing to update: set one of {', '.join(UPDATABLE)} (or name it here)"
        )
    return paths


def _port_edit(request: apps_pb2.EditPortsRequest | apps_pb2.EditAppRequest) -> PortEdit:
    return edit_from_proto(
        request.add_published_ports,
        request.add_target_ports,
        EditFields(),
        request.remove_published_ports,
        request.remove_target_ports,
    )


def _changes(result: EditResult) -> list[apps_pb2.PortChange]:
    return [
        apps_pb2.PortChange(
            slot=c.slot,
            old_binding=binding_to_proto(c.old, c.slot) if c.old else None,
            new_binding=binding_to_proto(c.new, c.slot) if c.new else None,
        )
        for c in result.changes
    ]

"""Every RPC as one function: plain Python arguments in, an :class:`Operation` out.

An operation names the stub method, carries the request and knows which
part of the response the caller wants. The blocking and the async client
are both assembled from these functions (``_client.py``), so each RPC's
arguments, defaults and docs are written once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from google.protobuf import duration_pb2, field_mask_pb2
from miasma.v1 import apps_pb2

from miasma_client._errors import InvalidInput
from miasma_client._ports import PortLike, parse_ports
from miasma_client._volumes import VolumeLike, parse_volumes

COLLECTION = "apps/"

Result = TypeVar("Result")


@dataclass(frozen=True)
class Operation(Generic[Result]):
    """One unary call: ``stub.<rpc>(request)``, then ``result(response)``."""

    rpc: str
    request: Any
    result: Callable[[Any], Result]
    min_timeout: float = 0.0  # seconds this call may take whatever the client's timeout


PULL_TIMEOUT = 360.0  # the server's pull limit (5 minutes), and a rollout after it


def _app(response: Any) -> apps_pb2.App:
    app: apps_pb2.App = response.app
    return app


def _whole(response: Any) -> Any:
    return response


def resource_name(app: str) -> str:
    """``web`` -> ``apps/web`` (names already in that form pass through)."""
    return app if app.startswith(COLLECTION) else COLLECTION + app


def create_app(
    name: str,
    image: str,
    *,
    command: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    published_ports: Iterable[PortLike] = (),
    target_ports: Iterable[PortLike] = (),
    constraints: Sequence[str] = (),
    volumes: Iterable[VolumeLike] = (),
    stop_grace: float | None = None,
    group: str = "",
    hidden: bool = False,
    stopped: bool = False,
    validate_only: bool = False,
    request_id: str | None = None,
) -> Operation[apps_pb2.App]:
    """Create app ``name`` from ``image``, started unless ``stopped``.

    Ports are ints, ``"5353/udp"`` strings, comma lists or ``Port`` messages;
    published and target ports pair up by order. ``constraints`` place the
    app on swarm nodes (``"node.labels.zone==a"``). ``volumes`` are
    ``"pgdata:/var/lib/postgresql/data"`` strings or ``Volume`` messages;
    ``stop_grace`` is the seconds a stop waits before SIGKILL (10 by default);
    ``group`` lists the app with others (``list_apps(group=...)``); a ``hidden``
    one is listed only when asked (``list_apps(show_hidden=True)``).
    """
    state = apps_pb2.DESIRED_STATE_STOPPED if stopped else apps_pb2.DESIRED_STATE_RUNNING
    request = apps_pb2.CreateAppRequest(
        app_id=name,
        app=apps_pb2.App(
            image=image,
            command=command,
            env=env,
            desired_state=state,
            constraints=constraints,
            volumes=parse_volumes(volumes),
            stop_grace=_duration(stop_grace),
            group=group,
            hidden=hidden,
        ),
        published_ports=parse_ports(published_ports),
        target_ports=parse_ports(target_ports),
        validate_only=validate_only,
        request_id=_request_id(request_id),
    )
    return Operation("CreateApp", request, _app)


def get_app(name: str) -> Operation[apps_pb2.App]:
    """One app, with what Docker reports about it now."""
    return Operation("GetApp", apps_pb2.GetAppRequest(name=resource_name(name)), _app)


def list_apps_page(
    page_size: int = 0,
    page_token: str = "",
    *,
    group: str = "",
    desired_state: apps_pb2.DesiredState.ValueType = apps_pb2.DESIRED_STATE_UNSPECIFIED,
    rollout: apps_pb2.RolloutState.ValueType = apps_pb2.ROLLOUT_STATE_UNSPECIFIED,
    show_hidden: bool = False,
) -> Operation[apps_pb2.ListAppsResponse]:
    """One page of apps in name order, and the token of the next page; only those of
    ``group``, with ``desired_state``, whose latest change stands at ``rollout`` (for
    example ``ROLLOUT_STATE_FAILED``), where given; hidden apps only with
    ``show_hidden``."""
    request = apps_pb2.ListAppsRequest(
        page_size=page_size, page_token=page_token, group=group,
        desired_state=desired_state, rollout=rollout, show_hidden=show_hidden,
    )  # fmt: skip
    return Operation("ListApps", request, _whole)


def update_app(
    name: str,
    *,
    image: str | None = None,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    set_env: Mapping[str, str] | None = None,
    unset_env: Iterable[str] = (),
    constraints: Sequence[str] | None = None,
    volumes: Iterable[VolumeLike] | None = None,
    stop_grace: float | None = None,
    group: str | None = None,
    request_id: str | None = None,
) -> Operation[apps_pb2.App]:
    """Change only the fields given; a running app is rolled out again (not for a change
    of ``group`` alone; ``group=""`` takes the app out of its group).

    ``env`` replaces the whole env; ``set_env`` and ``unset_env`` change only the
    variables they name (in the same change as the rest). ``command=[]`` goes back
    to the image's default command. ``volumes`` replaces the app's volumes
    (``edit_app`` adds and removes).
    """
    changes = {
        "image": image, "command": command, "env": env, "constraints": constraints,
        "volumes": volumes, "stop_grace": stop_grace, "group": group,
    }  # fmt: skip
    paths = [path for path, value in changes.items() if value is not None]
    paths += [_env_path(key) for key in [*(set_env or {}), *unset_env]]
    if not paths:
        # An empty mask means "the default fields" to the server: never send one by accident.
        raise InvalidInput(f"update_app needs at least one of {', '.join(changes)}, set_env")
    app = apps_pb2.App(
        name=resource_name(name), image=image or "", command=command,
        env={**(env or {}), **(set_env or {})}, constraints=constraints,
        volumes=parse_volumes(volumes or ()), stop_grace=_duration(stop_grace),
        group=group or "",
    )  # fmt: skip
    mask = field_mask_pb2.FieldMask(paths=paths)
    request = apps_pb2.UpdateAppRequest(
        app=app, update_mask=mask, request_id=_request_id(request_id)
    )
    return Operation("UpdateApp", request, _app)


def _env_path(key: str) -> str:
    """The update mask path of one variable (AIP-161: back-quoted unless a plain name)."""
    return f"env.{key}" if key.replace("_", "a").isalnum() else f"env.`{key}`"


def delete_app(
    name: str, *, etag: str = "", delete_volumes: bool = False
) -> Operation[apps_pb2.DeleteAppResponse]:
    """Delete the app, its container and its ports; the response has its last state.

    Its volumes stay (``list_volumes`` shows them) unless ``delete_volumes``;
    the response then names the volumes deleted.
    """
    request = apps_pb2.DeleteAppRequest(
        name=resource_name(name), etag=etag, delete_volumes=delete_volumes
    )
    return Operation("DeleteApp", request, _whole)


def upgrade_app(name: str) -> Operation[apps_pb2.UpgradeAppResponse]:
    """Pull the app's image again; the app is rolled out only if the registry has another
    image for it (``response.changed``). Waits for the pull (up to 6 minutes) whatever the
    client's timeout."""
    request = apps_pb2.UpgradeAppRequest(name=resource_name(name))
    return Operation("UpgradeApp", request, _whole, min_timeout=PULL_TIMEOUT)


def start_app(name: str) -> Operation[apps_pb2.App]:
    """Start a stopped app on its ports."""
    return Operation("StartApp", apps_pb2.StartAppRequest(name=resource_name(name)), _app)


def stop_app(name: str) -> Operation[apps_pb2.App]:
    """Stop the app; its ports stay reserved."""
    return Operation("StopApp", apps_pb2.StopAppRequest(name=resource_name(name)), _app)


def restart_app(name: str) -> Operation[apps_pb2.App]:
    """Restart the app's container on the same ports."""
    return Operation("RestartApp", apps_pb2.RestartAppRequest(name=resource_name(name)), _app)


def rename_app(
    name: str, new_name: str, *, etag: str = "", validate_only: bool = False
) -> Operation[apps_pb2.App]:
    """Give the app ``new_name``, keeping its ports, volumes (and data) and the rest; its
    container is made again under the new name."""
    request = apps_pb2.RenameAppRequest(
        name=resource_name(name), new_app_id=new_name, etag=etag, validate_only=validate_only
    )
    return Operation("RenameApp", request, _app)


def edit_ports(
    name: str,
    *,
    add_published: Iterable[PortLike] = (),
    remove_published: Iterable[PortLike] = (),
    add_target: Iterable[PortLike] = (),
    remove_target: Iterable[PortLike] = (),
    validate_only: bool = False,
    etag: str = "",
    request_id: str | None = None,
) -> Operation[apps_pb2.EditPortsResponse]:
    """Add or remove ports atomically; the response has the app and the changed slots.

    ``validate_only`` returns the plan without changing anything; ``etag``
    makes the edit fail with ABORTED if the app changed since it was read.
    """
    request = apps_pb2.EditPortsRequest(
        name=resource_name(name),
        add_published_ports=parse_ports(add_published),
        remove_published_ports=parse_ports(remove_published),
        add_target_ports=parse_ports(add_target),
        remove_target_ports=parse_ports(remove_target),
        validate_only=validate_only,
        etag=etag,
        request_id=_request_id(request_id),
    )
    return Operation("EditPorts", request, _whole)


def edit_app(
    name: str,
    *,
    add_published: Iterable[PortLike] = (),
    remove_published: Iterable[PortLike] = (),
    add_target: Iterable[PortLike] = (),
    remove_target: Iterable[PortLike] = (),
    add_volumes: Iterable[VolumeLike] = (),
    remove_volumes: Iterable[VolumeLike] = (),
    set_env: Mapping[str, str] | None = None,
    unset_env: Iterable[str] = (),
    add_constraints: Iterable[str] = (),
    remove_constraints: Iterable[str] = (),
    group: str | None = None,
    hidden: bool | None = None,
    add_routes: Iterable[apps_pb2.Route] = (),
    remove_routes: Iterable[apps_pb2.Route] = (),
    validate_only: bool = False,
    etag: str = "",
    request_id: str | None = None,
) -> Operation[apps_pb2.EditAppResponse]:
    """Add or remove ports and volumes, set or unset variables, in one atomic change
    (removals first).

    Volumes are ``"SOURCE:TARGET[:ro]"`` strings or ``Volume`` messages; a
    removal may name the target alone (``"/data"``). ``set_env`` leaves the
    variables it does not name as they are. ``group`` and ``hidden`` change only
    when given (``group=""`` takes the app out of its group). Routes are
    ``Route`` messages (:func:`route` makes one); a route to a host and path the
    app has replaces it; a removal matches by host and path.
    """
    request = apps_pb2.EditAppRequest(
        name=resource_name(name),
        add_published_ports=parse_ports(add_published),
        remove_published_ports=parse_ports(remove_published),
        add_target_ports=parse_ports(add_target),
        remove_target_ports=parse_ports(remove_target),
        add_volumes=parse_volumes(add_volumes),
        remove_volumes=parse_volumes(remove_volumes, target_only=True),
        set_env=set_env or {},
        unset_env=list(unset_env),
        add_constraints=list(add_constraints),
        remove_constraints=list(remove_constraints),
        group=group,
        hidden=hidden,
        add_routes=list(add_routes),
        remove_routes=list(remove_routes),
        validate_only=validate_only,
        etag=etag,
        request_id=_request_id(request_id),
    )
    return Operation("EditApp", request, _whole)


def route(host: str, path: str = "", *, slot: int = 0, tls: bool = False) -> apps_pb2.Route:
    """A route: ``host`` (and ``path``, a prefix like "/api") to the app's port ``slot``
    (0: ``PORT``); ``tls`` also on the router's HTTPS port."""
    return apps_pb2.Route(host=host, path_prefix=path, slot=slot, tls=tls)


def list_volumes(app: str = "") -> Operation[list[apps_pb2.VolumeInfo]]:
    """The volumes Miasma made (of one app, if given), with the apps that mount them."""
    request = apps_pb2.ListVolumesRequest(app=resource_name(app) if app else "")
    return Operation("ListVolumes", request, lambda response: list(response.volumes))


def list_audit_records(
    app: str = "", *, identity: str = "", since: datetime | timedelta | None = None,
    limit: int = 100, page_token: str = "",
) -> Operation[apps_pb2.ListAuditRecordsResponse]:  # fmt: skip
    """The audit log, newest first: the changes and refused calls (of ``app``, by
    ``identity``, since a time or that long ago), ``limit`` at a time (admin only)."""
    request = apps_pb2.ListAuditRecordsRequest(
        app=resource_name(app) if app else "", identity=identity, page_size=limit,
        page_token=page_token,
    )  # fmt: skip
    if since is not None:
        request.since_time.FromDatetime(
            datetime.now(UTC) - since if isinstance(since, timedelta) else since
        )
    return Operation("ListAuditRecords", request, _whole)


def delete_volume(name: str) -> Operation[apps_pb2.VolumeInfo]:
    """Delete a volume Miasma made that no app mounts; its data is gone."""
    return Operation(
        "DeleteVolume", apps_pb2.DeleteVolumeRequest(name=name), lambda response: response.volume
    )


def _request_id(given: str | None) -> str:
    """The request's ID: given, or a new UUID, so that the client's own retry of a call
    whose answer was lost is not applied twice (AIP-155)."""
    return given if given is not None else str(uuid.uuid4())


def _duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def whoami() -> Operation[apps_pb2.GetCallerResponse]:
    """Who the server takes this client for (token name or certificate subject), its role
    and permissions."""
    return Operation("GetCaller", apps_pb2.GetCallerRequest(), _whole)


def server_info() -> Operation[apps_pb2.GetServerInfoResponse]:
    """Version, Docker, runtime mode and port ranges of the server."""
    return Operation("GetServerInfo", apps_pb2.GetServerInfoRequest(), _whole)

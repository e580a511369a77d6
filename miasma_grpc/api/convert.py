"""Protobuf messages <-> domain values. Protobuf types stop here."""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2
from miasma.v1 import apps_pb2

from miasma_grpc.domain.audit import AuditRecord
from miasma_grpc.domain.errors import InvalidArgument
from miasma_grpc.domain.events import EventKind, PortEvent, Progress, SnapshotComplete, WatchItem
from miasma_grpc.domain.logs import MAX_TAIL, LogLine, LogNotice, Stream
from miasma_grpc.domain.models import (
    DEFAULT_STOP_GRACE,
    App,
    Binding,
    DesiredState,
    Observed,
    Port,
    Protocol,
    PublishMode,
    RolloutState,
    Route,
    Volume,
    env_names,
)
from miasma_grpc.domain.names import resource_name, validate_group
from miasma_grpc.domain.ports import EditFields, PortEdit
from miasma_grpc.domain.volumes import VolumeEdit, VolumeInfo

PROTOCOL_FROM_PROTO = {
    apps_pb2.PROTOCOL_UNSPECIFIED: Protocol.TCP,
    apps_pb2.PROTOCOL_TCP: Protocol.TCP,
    apps_pb2.PROTOCOL_UDP: Protocol.UDP,
}
PROTOCOL_TO_PROTO = {Protocol.TCP: apps_pb2.PROTOCOL_TCP, Protocol.UDP: apps_pb2.PROTOCOL_UDP}
STATE_TO_PROTO = {
    DesiredState.RUNNING: apps_pb2.DESIRED_STATE_RUNNING,
    DesiredState.STOPPED: apps_pb2.DESIRED_STATE_STOPPED,
}
EVENT_KIND_TO_PROTO = {
    EventKind.SNAPSHOT: apps_pb2.PORT_EVENT_KIND_SNAPSHOT,
    EventKind.ASSIGNED: apps_pb2.PORT_EVENT_KIND_ASSIGNED,
    EventKind.CHANGED: apps_pb2.PORT_EVENT_KIND_CHANGED,
    EventKind.RELEASED: apps_pb2.PORT_EVENT_KIND_RELEASED,
    EventKind.ROLLOUT_APPLIED: apps_pb2.PORT_EVENT_KIND_ROLLOUT_APPLIED,
    EventKind.ROLLOUT_FAILED: apps_pb2.PORT_EVENT_KIND_ROLLOUT_FAILED,
    EventKind.ROLLOUT_PENDING: apps_pb2.PORT_EVENT_KIND_ROLLOUT_PENDING,
    EventKind.NOT_LISTENING: apps_pb2.PORT_EVENT_KIND_NOT_LISTENING,
    EventKind.ROUTES_CHANGED: apps_pb2.PORT_EVENT_KIND_ROUTES_CHANGED,
}
ROLLOUT_TO_PROTO = {
    None: apps_pb2.ROLLOUT_STATE_UNSPECIFIED,
    RolloutState.APPLIED: apps_pb2.ROLLOUT_STATE_APPLIED,
    RolloutState.PENDING: apps_pb2.ROLLOUT_STATE_PENDING,
    RolloutState.IN_PROGRESS: apps_pb2.ROLLOUT_STATE_IN_PROGRESS,
    RolloutState.FAILED: apps_pb2.ROLLOUT_STATE_FAILED,
}
PROTO_TO_STATE = {v: k for k, v in STATE_TO_PROTO.items()}
PROTO_TO_ROLLOUT = {v: k for k, v in ROLLOUT_TO_PROTO.items() if k is not None}
MODE_FROM_PROTO = {
    apps_pb2.PUBLISH_MODE_INGRESS: PublishMode.INGRESS,
    apps_pb2.PUBLISH_MODE_HOST: PublishMode.HOST,
}
MODE_TO_PROTO = {mode: value for value, mode in MODE_FROM_PROTO.items()}
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


def ports_from_proto(
    ports: Iterable[apps_pb2.Port], field: str, modes: dict[Port, PublishMode] | None = None
) -> tuple[Port, ...]:
    """Repeated ``Port`` messages -> domain ports (range checks happen in the planner).

    Publish modes go into ``modes``; where none is expected a mode is refused.
    """
    result = []
    for index, port in enumerate(ports):
        protocol = PROTOCOL_FROM_PROTO.get(port.protocol)
        if protocol is None:
            raise InvalidArgument.field(
                f"{field}[{index}].protocol", f"unknown protocol value {port.protocol}"
            )
        result.append(Port(port.number, protocol))
        if port.mode == apps_pb2.PUBLISH_MODE_UNSPECIFIED:
            continue
        mode = MODE_FROM_PROTO.get(port.mode)
        if mode is None:
            raise InvalidArgument.field(
                f"{field}[{index}].mode", f"unknown publish mode value {port.mode}"
            )
        if modes is None:
            raise InvalidArgument.field(
                f"{field}[{index}].mode", "a publish mode applies only to published ports added"
            )
        modes[result[-1]] = mode
    return tuple(result)


def edit_from_proto(
    add_published: Iterable[apps_pb2.Port],
    add_target: Iterable[apps_pb2.Port],
    fields: EditFields,
    remove_published: Iterable[apps_pb2.Port] = (),
    remove_target: Iterable[apps_pb2.Port] = (),
) -> PortEdit:
    """The four port lists of a request -> a :class:`PortEdit` (with publish modes)."""
    modes: dict[Port, PublishMode] = {}
    return PortEdit(
        add_published=ports_from_proto(add_published, fields.add_published, modes),
        remove_published=ports_from_proto(remove_published, fields.remove_published),
        add_target=ports_from_proto(add_target, fields.add_target),
        remove_target=ports_from_proto(remove_target, fields.remove_target),
        modes=modes,
    )


def volumes_from_proto(volumes: Iterable[apps_pb2.Volume]) -> tuple[Volume, ...]:
    """Repeated ``Volume`` messages -> domain volumes (validated by the domain)."""
    return tuple(Volume(v.source, v.target, v.read_only) for v in volumes)


def routes_from_proto(routes: Iterable[apps_pb2.Route]) -> tuple[Route, ...]:
    """Repeated ``Route`` messages -> domain routes (validated by the domain)."""
    return tuple(Route(r.host, r.path_prefix, r.slot, r.tls) for r in routes)


def routes_to_proto(routes: Iterable[Route]) -> list[apps_pb2.Route]:
    """Domain routes -> ``Route`` messages."""
    return [apps_pb2.Route(host=r.host, path_prefix=r.path, slot=r.slot, tls=r.tls) for r in routes]


def volume_edit_from_proto(
    add: Iterable[apps_pb2.Volume], remove: Iterable[apps_pb2.Volume]
) -> VolumeEdit:
    """``add_volumes`` / ``remove_volumes`` -> a :class:`VolumeEdit`."""
    return VolumeEdit(add=volumes_from_proto(add), remove=volumes_from_proto(remove))


def stop_grace_from_proto(app: apps_pb2.App) -> float:
    """``app.stop_grace`` in seconds; the default when unset."""
    if not app.HasField("stop_grace"):
        return DEFAULT_STOP_GRACE
    grace = app.stop_grace
    if grace.seconds < 0 or grace.nanos < 0 or grace.nanos >= 1_000_000_000:
        raise InvalidArgument.field("app.stop_grace", "must be a non-negative duration")
    return grace.seconds + grace.nanos / 1e9


def desired_state_from_proto(value: int) -> DesiredState:
    """Proto enum -> domain; unspecified means running."""
    if value == apps_pb2.DESIRED_STATE_STOPPED:
        return DesiredState.STOPPED
    if value in (apps_pb2.DESIRED_STATE_UNSPECIFIED, apps_pb2.DESIRED_STATE_RUNNING):
        return DesiredState.RUNNING
    raise InvalidArgument.field("app.desired_state", f"unknown desired state value {value}")


def binding_to_proto(binding: Binding, slot: int) -> apps_pb2.PortBinding:
    """Domain binding (at 0-based ``slot``) -> proto."""
    return apps_pb2.PortBinding(
        published_port=binding.published,
        target_port=binding.target,
        protocol=PROTOCOL_TO_PROTO[binding.protocol],
        published_explicit=binding.published_explicit,
        target_explicit=binding.target_explicit,
        env_names=env_names(slot),
        publish_mode=MODE_TO_PROTO[binding.mode],
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    # Whole seconds since the epoch plus the microseconds: what FromDatetime computes,
    # without its slow path through a time tuple (it shows in the EditPorts profile).
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # stored times are UTC
    seconds = (value - _EPOCH) // _SECOND
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=value.microsecond * 1000)


def audit_record_to_proto(record: AuditRecord) -> apps_pb2.AuditRecord:
    """Domain audit record -> proto."""
    return apps_pb2.AuditRecord(
        id=record.id, time=_timestamp(record.time), identity=record.identity,
        source=record.source, method=record.method, app=record.app,
        revision=record.revision, result=record.result, summary=record.summary,
    )  # fmt: skip


def app_to_proto(app: App, observed: Observed, public_host: str) -> apps_pb2.App:
    """Domain app plus observed state -> proto."""
    return apps_pb2.App(
        name=resource_name(app.name),
        image=app.image,
        command=list(app.command),
        env=app.env,
        desired_state=STATE_TO_PROTO[app.desired_state],
        bindings=[binding_to_proto(b, i) for i, b in enumerate(app.bindings)],
        observed=apps_pb2.ObservedState(
            running=observed.running,
            total=observed.total,
            last_error=observed.last_error,
            rollout=ROLLOUT_TO_PROTO[observed.rollout],
            unknown_since=_timestamp(observed.unknown_since),
            phase=observed.phase,
            not_listening=observed.not_listening,
        ),
        urls=[
            f"http://{public_host}:{b.published}"
            for b in app.bindings
            if b.protocol is Protocol.TCP
        ],
        etag=app.etag,
        revision=app.revision,
        create_time=_timestamp(app.create_time),
        update_time=_timestamp(app.update_time),
        constraints=list(app.constraints),
        volumes=[
            apps_pb2.Volume(source=v.source, target=v.target, read_only=v.read_only)
            for v in app.volumes
        ],
        stop_grace=_duration(app.stop_grace),
        uid=app.uid,
        node=app.node,
        group=app.group,
        hidden=app.hidden,
        image_digest=app.image_digest,
        routes=routes_to_proto(app.routes),
    )


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def volume_info_to_proto(info: VolumeInfo, mounted_by: Iterable[str]) -> apps_pb2.VolumeInfo:
    """A volume Miasma made, with the apps that mount it -> proto."""
    return apps_pb2.VolumeInfo(
        name=info.name,
        created_for=resource_name(info.app) if info.app else "",
        image_path=info.image_path,
        mounted_by=[resource_name(name) for name in mounted_by],
        create_time=_timestamp(info.create_time),
    )


def page_size(value: int) -> int:
    """Validate ``page_size``: 0 means the default, the maximum is a cap."""
    if value < 0:
        raise InvalidArgument.field("page_size", f"must not be negative, got {value}")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


@dataclass(frozen=True)
class ListFilter:
    """The filters of a ``ListApps`` (``None``: not filtered on)."""

    group: str | None = None
    desired: DesiredState | None = None
    rollout: RolloutState | None = None
    show_hidden: bool = False

    @property
    def hidden(self) -> bool | None:
        """Hidden apps are left out (False) unless asked for (None: both)."""
        return None if self.show_hidden else False

    @property
    def key(self) -> str:
        """What a page token is bound to: the next page must be asked with the same."""
        if self == ListFilter():
            return ""
        key = f"{self.group or ''}|{self.desired or ''}|{self.rollout or ''}"
        return key + ("|hidden" if self.show_hidden else "")


def list_filter_from_proto(request: apps_pb2.ListAppsRequest) -> ListFilter:
    """The request's filters, validated."""
    desired = None
    if request.desired_state != apps_pb2.DESIRED_STATE_UNSPECIFIED:
        desired = PROTO_TO_STATE.get(request.desired_state)
        if desired is None:
            raise InvalidArgument.field(
                "desired_state", f"unknown desired state value {request.desired_state}"
            )
    rollout = None
    if request.rollout != apps_pb2.ROLLOUT_STATE_UNSPECIFIED:
        rollout = PROTO_TO_ROLLOUT.get(request.rollout)
        if rollout is None:
            raise InvalidArgument.field("rollout", f"unknown rollout state value {request.rollout}")
    group = validate_group(request.group, "group") or None
    return ListFilter(group, desired, rollout, request.show_hidden)


def encode_page_token(last_name: str, query: str = "") -> str:
    """Opaque token for the page after ``last_name``, of the listing with filters ``query``
    (:attr:`ListFilter.key`)."""
    text = f"after:{last_name}" + (f"\n{query}" if query else "")
    return base64.urlsafe_b64encode(text.encode()).decode()


def decode_page_token(token: str, query: str = "") -> str:
    """Token -> the name to list after (``""`` for the first page); the token must be of a
    listing with the same filters ``query``."""
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument.field("page_token", "not a token returned by ListApps") from exc
    after, _, made_for = text.partition("\n")
    prefix, _, name = after.partition(":")
    if prefix != "after":
        raise InvalidArgument.field("page_token", "not a token returned by ListApps")
    if made_for != query:
        raise InvalidArgument.field(
            "page_token",
            "this token is of a listing with other filters (group, desired_state, rollout): "
            "ask for the next page with the same filters, or start again without a token",
            reason="PAGE_TOKEN_FILTERS_CHANGED",
        )
    return name


def watch_item_to_proto(item: WatchItem) -> apps_pb2.WatchPortEventsResponse:
    """An event, snapshot marker or heartbeat -> one stream message."""
    if isinstance(item, SnapshotComplete):
        return apps_pb2.WatchPortEventsResponse(
            snapshot_complete=apps_pb2.SnapshotComplete(revision=item.revision)
        )
    if isinstance(item, Progress):
        return apps_pb2.WatchPortEventsResponse(progress=apps_pb2.Progress(revision=item.revision))
    return _event_message(item)


@functools.lru_cache(maxsize=4096)
def _event_message(event: PortEvent) -> apps_pb2.WatchPortEventsResponse:
    # Built once per event, not once per watcher: with 1,000 watchers the
    # conversion was a fifth of the fan-out's cost. The message is never mutated.
    return apps_pb2.WatchPortEventsResponse(event=event_to_proto(event))


def event_to_proto(event: PortEvent) -> apps_pb2.PortEvent:
    """Domain port event -> proto."""
    return apps_pb2.PortEvent(
        revision=event.revision,
        app=resource_name(event.app),
        kind=EVENT_KIND_TO_PROTO[event.kind],
        old_bindings=[binding_to_proto(b, i) for i, b in enumerate(event.old)],
        new_bindings=[binding_to_proto(b, i) for i, b in enumerate(event.new)],
        message=event.message,
        time=_timestamp(event.time),
        group=event.group,
        routes=routes_to_proto(event.routes),
    )


LOG_STREAM_TO_PROTO = {
    Stream.STDOUT: apps_pb2.LOG_STREAM_STDOUT,
    Stream.STDERR: apps_pb2.LOG_STREAM_STDERR,
}


def _nanos(value: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=value // 1_000_000_000, nanos=value % 1_000_000_000)


def log_item_to_proto(item: LogLine | LogNotice) -> apps_pb2.ReadLogsResponse:
    """A line or a notice of a log stream."""
    if isinstance(item, LogNotice):
        notice = apps_pb2.LogNotice(
            message=item.message, source=item.source, time=_nanos(item.time)
        )
        return apps_pb2.ReadLogsResponse(notice=notice)
    line = apps_pb2.LogLine(
        time=_nanos(item.time),
        stream=LOG_STREAM_TO_PROTO[item.stream],
        text=item.text,
        truncated=item.truncated,
        source=item.source,
    )
    return apps_pb2.ReadLogsResponse(line=line)


@dataclass(frozen=True)
class LogsQuery:
    """What a ReadLogs request asks for, checked."""

    tail: int
    since: int | None
    follow: bool


def logs_query_from_proto(request: apps_pb2.ReadLogsRequest) -> LogsQuery:
    """The checked query of a ReadLogs request (:class:`InvalidArgument` naming the field)."""
    if not 0 <= request.tail_lines <= MAX_TAIL:
        raise InvalidArgument.field("tail_lines", f"must be 0 (all) to {MAX_TAIL:,}")
    since = None
    if request.HasField("since_time"):
        stamp = request.since_time
        if stamp.seconds < 0 or not 0 <= stamp.nanos < 1_000_000_000:
            raise InvalidArgument.field("since_time", "must be a time after 1970")
        since = stamp.seconds * 1_000_000_000 + stamp.nanos
    return LogsQuery(tail=request.tail_lines, since=since, follow=request.follow)

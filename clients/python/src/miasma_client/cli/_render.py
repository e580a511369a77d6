"""How apps, slots and edits look on a terminal (rich) and as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Literal

from google.protobuf import json_format
from google.protobuf.message import Message
from miasma.v1 import apps_pb2
from rich.console import Console
from rich.table import Table
from rich.text import Text

from miasma_client._ports import format_port
from miasma_client._status import AppStatus, app_status

STATUS_STYLES = {
    AppStatus.RUNNING: "green",
    AppStatus.STARTING: "yellow",
    AppStatus.PENDING: "yellow",
    AppStatus.STOPPING: "yellow",
    AppStatus.FAILED: "red",
    AppStatus.NOT_LISTENING: "red",
    AppStatus.STOPPED: "bright_black",
}

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def to_dict(message: Message) -> dict[str, object]:
    """A message as JSON-ready data, field names as in the .proto, zeros included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def print_json(data: object) -> None:
    """Print ``data`` (a message, or a list of messages) as indented JSON on stdout."""
    if isinstance(data, Message):
        data = to_dict(data)
    elif isinstance(data, list):
        data = [to_dict(item) if isinstance(item, Message) else item for item in data]
    print(json.dumps(data, indent=2, ensure_ascii=False))


def short_name(app: apps_pb2.App) -> str:
    """``apps/web`` -> ``web``."""
    return app.name.removeprefix("apps/")


def status_text(app: apps_pb2.App) -> Text:
    """``● running`` in the status colour; ``(unknown since 12:03:04)`` while Miasma cannot
    see Docker (the figures are as last seen)."""
    status = app_status(app)
    text = Text(f"● {status}", style=STATUS_STYLES[status])
    if app.observed.HasField("unknown_since"):
        since = app.observed.unknown_since.ToDatetime().strftime("%H:%M:%S")
        text.append(f" (unknown since {since} UTC: Docker is not seen)", style="yellow")
    return text


def apps_table(apps: Iterable[apps_pb2.App]) -> Table:
    """``miasma apps``: status (a dot and a word: readable without colour), name, URLs,
    running/total."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("STATUS", "NAME", "URLS", "RUNNING"):
        table.add_column(column)
    for app in apps:
        status = app_status(app)
        unknown = app.observed.HasField("unknown_since")
        table.add_row(
            Text(
                "? unknown" if unknown else f"● {status}",
                style="yellow" if unknown else STATUS_STYLES[status],
            ),
            short_name(app),
            "\n".join(app.urls) or "-",
            f"{app.observed.running}/{app.observed.total}",
        )
    return table


def _side(port: int, explicit: bool, host_mode: bool = False) -> str:
    how = "explicit" if explicit else "auto"
    return f"{port} ({how}, host mode)" if host_mode else f"{port} ({how})"


def slots_table(bindings: Iterable[apps_pb2.PortBinding]) -> Table:
    """One row per slot: published <-> target, protocol, explicit/auto, env names."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("SLOT", "PUBLISHED", "", "TARGET", "PROTOCOL", "ENV"):
        table.add_column(column)
    for slot, binding in enumerate(bindings, start=1):
        table.add_row(
            str(slot),
            _side(
                binding.published_port,
                binding.published_explicit,
                binding.publish_mode == apps_pb2.PUBLISH_MODE_HOST,
            ),
            "↔",
            _side(binding.target_port, binding.target_explicit),
            "udp" if binding.protocol == apps_pb2.PROTOCOL_UDP else "tcp",
            ", ".join(binding.env_names),
        )
    return table


def _table_keeping_whole(first: str, values: list[str], *others: str) -> Table:
    """A table whose first column is never cut or folded (volume names are typed back);
    the other columns give way."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    width = max([len(first), *map(len, values)])
    table.add_column(first, no_wrap=True, min_width=width)
    for column in others:
        table.add_column(column, overflow="fold")
    return table


def volumes_table(volumes: Iterable[apps_pb2.Volume], made: Iterable[apps_pb2.VolumeInfo]) -> Table:
    """The app's volumes, then the volumes Miasma made for its image's VOLUME paths."""
    volumes, made = list(volumes), list(made)
    names = [v.source for v in volumes] + [m.name for m in made if m.image_path]
    table = _table_keeping_whole("VOLUME", names, "TARGET", "MODE", "FROM")
    for volume in volumes:
        kind = "host path" if volume.source.startswith("/") else "app"
        mode = "ro" if volume.read_only else "rw"
        table.add_row(volume.source, volume.target, mode, kind)
    for info in made:
        if info.image_path:
            table.add_row(info.name, info.image_path, "rw", "image VOLUME")
    return table


def volume_list_table(volumes: Iterable[apps_pb2.VolumeInfo]) -> Table:
    """``miasma volumes``: name, the app it was made for, who mounts it now."""
    volumes = list(volumes)
    table = _table_keeping_whole(
        "NAME", [v.name for v in volumes], "MADE FOR", "IMAGE PATH", "MOUNTED BY"
    )
    for info in volumes:
        mounted = ", ".join(name.removeprefix("apps/") for name in info.mounted_by)
        table.add_row(
            info.name,
            info.created_for.removeprefix("apps/") or "-",
            info.image_path or "-",
            mounted or Text("nobody (left over)", style="yellow"),
        )
    return table


def show_app(app: apps_pb2.App, made: Iterable[apps_pb2.VolumeInfo] = ()) -> None:
    """``miasma apps:show``: the app's summary, then its slot and volume tables."""
    summary = Table.grid(padding=(0, 2))
    summary.add_row("Name", short_name(app))
    if app.group:
        summary.add_row("Group", app.group)
    if app.hidden:
        summary.add_row("Hidden", "yes (listed by `miasma apps --all`)")
    summary.add_row("Image", app.image)
    if app.image_digest:
        summary.add_row("Runs", f"{app.image_digest} (pulled by apps:upgrade)")
    summary.add_row("Command", " ".join(app.command) or "(image default)")
    summary.add_row(
        "State", Text.assemble(status_text(app), f"  {app.observed.running}/{app.observed.total}")
    )
    if app.observed.last_error:
        summary.add_row("Last error", Text(app.observed.last_error, style="red"))
    summary.add_row("URLs", "\n".join(app.urls) or "-")
    if app.env:
        summary.add_row("Env", "\n".join(f"{k}={v}" for k, v in sorted(app.env.items())))
    if app.constraints:
        summary.add_row("Placement", "\n".join(app.constraints))
    if app.node:
        summary.add_row("Node", f"{app.node} (its data lives there)")
    grace = app.stop_grace.seconds + app.stop_grace.nanos / 1e9
    summary.add_row("Stop grace", f"{grace:g} s" if app.HasField("stop_grace") else "10 s")
    out.print(summary)
    out.print()
    out.print(slots_table(app.bindings))
    made = [info for info in made if info.image_path and info.mounted_by]
    if app.volumes or made:
        out.print()
        out.print(volumes_table(app.volumes, made))


def _binding(change: apps_pb2.PortChange, side: Literal["old_binding", "new_binding"]) -> str:
    if not change.HasField(side):
        return "(none)"
    binding: apps_pb2.PortBinding = getattr(change, side)
    return f"{format_port(binding.published_port, binding.protocol)} → {binding.target_port}"


def print_changes(changes: Iterable[apps_pb2.PortChange]) -> None:
    """One line per changed slot: ``slot 1: 3001 → 3881  ⇒  5432 → 3881`` (published → target)."""
    lines = [
        f"slot {change.slot + 1}: {_binding(change, 'old_binding')}"
        f"  ⇒  {_binding(change, 'new_binding')}"
        for change in changes
    ]
    out.print("\n".join(lines) if lines else "No port changes: the app already has these ports.")


EVENT_WORDS = {
    apps_pb2.PORT_EVENT_KIND_SNAPSHOT: "current",
    apps_pb2.PORT_EVENT_KIND_ASSIGNED: "assigned",
    apps_pb2.PORT_EVENT_KIND_CHANGED: "changed",
    apps_pb2.PORT_EVENT_KIND_RELEASED: "released",
    apps_pb2.PORT_EVENT_KIND_ROLLOUT_APPLIED: "applied",
    apps_pb2.PORT_EVENT_KIND_ROLLOUT_FAILED: "failed",
    apps_pb2.PORT_EVENT_KIND_ROLLOUT_PENDING: "pending",
    apps_pb2.PORT_EVENT_KIND_NOT_LISTENING: "not listening",
}


def _bindings(bindings: Iterable[apps_pb2.PortBinding]) -> str:
    return ", ".join(
        f"{format_port(b.published_port, b.protocol)} → {b.target_port}" for b in bindings
    )


def event_line(response: apps_pb2.WatchPortEventsResponse) -> str:
    """``#14  web  changed  3001 → 3332  ⇒  8081 → 3332``; empty for heartbeats."""
    payload = response.WhichOneof("payload")
    if payload == "snapshot_complete":
        return f"#{response.snapshot_complete.revision}  watching (the ports above are current)"
    if payload != "event":
        return ""
    event = response.event
    word = EVENT_WORDS.get(event.kind, "event")
    name = event.app.removeprefix("apps/")
    if event.kind == apps_pb2.PORT_EVENT_KIND_CHANGED:
        detail = f"{_bindings(event.old_bindings)}  ⇒  {_bindings(event.new_bindings)}"
    elif event.kind == apps_pb2.PORT_EVENT_KIND_RELEASED:
        detail = _bindings(event.old_bindings)
    else:
        detail = _bindings(event.new_bindings)
    if event.message:
        detail = f"{detail}  ({event.message})"
    return f"#{event.revision}  {name}  {word}  {detail}"

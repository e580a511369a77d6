"""Rows to apps and back: the SQL shape of an app, shared by reads and writes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from miasma_grpc.domain.models import (
    App,
    Binding,
    DesiredState,
    Protocol,
    PublishMode,
    Route,
    Volume,
)

APP_COLUMNS = (
    "name, image, command, env, desired_state, revision, create_time, update_time, constraints, "
    "applied_revision, volumes, stop_grace, uid, node, group_name, hidden, image_digest, "
    "volume_stem, routes"
)
_APP_COLUMNS_OF_A = ", ".join(f"a.{c}" for c in APP_COLUMNS.split(", "))
_BINDING_COLUMNS_OF_B = (
    "b.protocol, b.published, b.target, b.published_explicit, b.target_explicit, b.publish_mode"
)


def now() -> datetime:
    """The current time in UTC (what timestamps are stored in)."""
    return datetime.now(UTC)


def select_apps(where: str) -> str:
    """Apps joined with their bindings, one row per slot, in name and slot order.

    One statement for apps and their bindings: SQLite runs it on one snapshot,
    so a concurrent commit can never pair new app fields with old bindings.
    """
    return (
        f"SELECT 0 AS snapshot_revision, {_APP_COLUMNS_OF_A}, {_BINDING_COLUMNS_OF_B} "
        f"FROM apps AS a LEFT JOIN bindings AS b ON b.app = a.name {where} ORDER BY a.name, b.slot"
    )


PAGE = "AND a.name IN (SELECT name FROM apps WHERE name > ? ORDER BY name LIMIT ?)"


def select_snapshot(one_app: bool, *, page: bool = False) -> str:
    """Like :func:`select_apps`, with the current revision read in the same statement.

    The meta row on the left keeps one row even when no app matches. ``page`` selects
    the apps after a name, at most a number of them (parameters: name, limit).
    """
    where = "AND a.name = ?" if one_app else PAGE if page else ""
    return (
        f"SELECT m.value AS snapshot_revision, {_APP_COLUMNS_OF_A}, {_BINDING_COLUMNS_OF_B} "
        f"FROM meta AS m LEFT JOIN apps AS a ON 1 {where} "
        f"LEFT JOIN bindings AS b ON b.app = a.name "
        f"WHERE m.key = 'revision' ORDER BY a.name, b.slot"
    )


def group_apps(rows: Iterable[sqlite3.Row]) -> tuple[int, list[App]]:
    """Group the rows of an apps-join-bindings statement into apps (plus its revision column)."""
    revision = 0
    heads: list[sqlite3.Row] = []
    bindings: dict[str, list[Binding]] = {}
    for r in rows:
        revision = r["snapshot_revision"]
        if r["name"] is None:
            continue
        if not heads or heads[-1]["name"] != r["name"]:
            heads.append(r)
        if r["protocol"] is not None:
            bindings.setdefault(r["name"], []).append(_binding_from_row(r))
    return revision, [_app_from_row(r, bindings.get(r["name"], ())) for r in heads]


def app_row(app: App) -> tuple[Any, ...]:
    """The ``apps`` row of ``app``, in :data:`APP_COLUMNS` order."""
    return (
        app.name,
        app.image,
        json.dumps(list(app.command)),
        json.dumps(app.env, sort_keys=True),
        str(app.desired_state),
        app.revision,
        iso(app.create_time),
        iso(app.update_time),
        json.dumps(list(app.constraints)),
        app.applied_revision,
        json.dumps([[v.source, v.target, v.read_only] for v in app.volumes]),
        app.stop_grace,
        app.uid,
        app.node,
        app.group,
        int(app.hidden),
        app.image_digest,
        app.volume_stem,
        dump_routes(app.routes),
    )


def dump_routes(routes: Sequence[Route]) -> str:
    """Routes as stored: a JSON list of [host, path, slot, tls]."""
    return json.dumps([[r.host, r.path, r.slot, r.tls] for r in routes], separators=(",", ":"))


def load_routes(text: str) -> tuple[Route, ...]:
    """Routes as :func:`dump_routes` stored them."""
    return tuple(Route(h, p, s, bool(t)) for h, p, s, t in json.loads(text))


def binding_rows(app: str, bindings: Sequence[Binding]) -> list[tuple[Any, ...]]:
    """The ``bindings`` rows of an app, slot by slot."""
    return [
        (
            app,
            slot,
            str(b.protocol),
            b.published,
            b.target,
            int(b.published_explicit),
            int(b.target_explicit),
            str(b.mode),
        )
        for slot, b in enumerate(bindings)
    ]


def iso(value: datetime | None) -> str:
    """A stored timestamp (ISO 8601; now when missing)."""
    return (value or now()).isoformat()


def _app_from_row(row: sqlite3.Row, bindings: Sequence[Binding]) -> App:
    return App(
        name=row["name"],
        image=row["image"],
        command=tuple(json.loads(row["command"])),
        env=dict(json.loads(row["env"])),
        desired_state=DesiredState(row["desired_state"]),
        revision=row["revision"],
        create_time=datetime.fromisoformat(row["create_time"]),
        update_time=datetime.fromisoformat(row["update_time"]),
        bindings=tuple(bindings),
        constraints=tuple(json.loads(row["constraints"])),
        applied_revision=row["applied_revision"],
        volumes=tuple(Volume(s, t, bool(ro)) for s, t, ro in json.loads(row["volumes"])),
        stop_grace=row["stop_grace"],
        uid=row["uid"],
        node=row["node"],
        group=row["group_name"],
        hidden=bool(row["hidden"]),
        image_digest=row["image_digest"],
        volume_stem=row["volume_stem"],
        routes=load_routes(row["routes"]),
    )


def _binding_from_row(r: sqlite3.Row) -> Binding:
    return Binding(
        published=r["published"],
        target=r["target"],
        protocol=Protocol(r["protocol"]),
        published_explicit=bool(r["published_explicit"]),
        target_explicit=bool(r["target_explicit"]),
        mode=PublishMode(r["publish_mode"]),
    )

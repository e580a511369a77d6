"""The port-event log's SQL: a row to append, read a page, compact.

Kept apart from ``sqlite.py`` (apps and the ledger) because it changes for
different reasons: retention, paging and watch catch-up.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from datetime import datetime

import aiosqlite

from miasma_grpc.domain.events import EventKind, PortEvent, Retention
from miasma_grpc.domain.models import Binding, Protocol, PublishMode, Route
from miasma_grpc.store.rows import dump_routes, load_routes

_COLUMNS = "revision, app, kind, old_bindings, new_bindings, message, time, app_group, app_routes"


@functools.lru_cache(maxsize=4096)
def _dump(bindings: tuple[Binding, ...]) -> str:
    # Cached: an edit logs the same bindings more than once, and apps keep theirs.
    slots = [
        [b.published, b.target, str(b.protocol), b.published_explicit, b.target_explicit, b.mode]
        for b in bindings
    ]
    return json.dumps(slots, separators=(",", ":"))


@functools.lru_cache(maxsize=1024)
def _routes_text(routes: tuple[Route, ...]) -> str:
    return dump_routes(routes) if routes else "[]"


def _routes(text: str) -> tuple[Route, ...]:
    return load_routes(text) if text != "[]" else ()


def _load(text: str) -> tuple[Binding, ...]:
    return tuple(
        Binding(published, target, Protocol(protocol), bool(pub_explicit), bool(tgt_explicit),
                PublishMode(mode))
        for published, target, protocol, pub_explicit, tgt_explicit, mode in json.loads(text)
    )  # fmt: skip


def _event(row: sqlite3.Row) -> PortEvent:
    return PortEvent(
        revision=row["revision"],
        app=row["app"],
        kind=EventKind(row["kind"]),
        old=_load(row["old_bindings"]),
        new=_load(row["new_bindings"]),
        message=row["message"],
        time=datetime.fromisoformat(row["time"]),
        group=row["app_group"],
        routes=_routes(row["app_routes"]),
    )


INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def row(event: PortEvent) -> tuple[object, ...]:
    """The ``events`` row of ``event``, for :data:`INSERT`."""
    assert event.time is not None
    return (
        event.revision,
        event.app,
        str(event.kind),
        _dump(event.old),
        _dump(event.new),
        event.message,
        event.time.isoformat(),
        event.group,
        _routes_text(event.routes),
    )


async def read(
    db: aiosqlite.Connection, *, after: int, app: str | None, limit: int
) -> list[PortEvent]:
    """Up to ``limit`` events with a revision above ``after``, oldest first."""
    if app is None:
        sql, params = "WHERE revision > ?", (after, limit)
    else:
        sql, params = "WHERE app = ? AND revision > ?", (app, after, limit)  # type: ignore[assignment]
    async with db.execute(
        f"SELECT {_COLUMNS} FROM events {sql} ORDER BY revision LIMIT ?", params
    ) as cursor:
        return [_event(row) for row in await cursor.fetchall()]


async def read_with_floor(
    db: aiosqlite.Connection, *, after: int, app: str | None, limit: int
) -> tuple[int, list[PortEvent]]:
    """The log's floor and up to ``limit`` events after ``after``, from one statement.

    One statement reads one snapshot: a compaction can never fall between the check
    that ``after`` is still in the log and the read of what follows it.
    """
    where = "revision > ?" if app is None else "app = ? AND revision > ?"
    params = (after, limit) if app is None else (app, after, limit)
    sql = (
        f"SELECT m.value AS floor, e.* FROM meta AS m LEFT JOIN "
        f"(SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY revision LIMIT ?) AS e ON 1 "
        f"WHERE m.key = 'events_floor' ORDER BY e.revision"
    )
    async with db.execute(sql, params) as cursor:
        rows = list(await cursor.fetchall())
    found = int(rows[0]["floor"]) if rows else 0
    return found, [_event(r) for r in rows if r["revision"] is not None]


async def floor(db: aiosqlite.Connection) -> int:
    """The revision the log was compacted up to: resuming below it is impossible."""
    async with db.execute("SELECT value FROM meta WHERE key = 'events_floor'") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def compact(db: sqlite3.Connection, retention: Retention, now: datetime) -> int:
    """Drop events beyond ``retention`` (inside the caller's transaction); the new floor."""
    cut = 0
    found = db.execute(
        "SELECT revision FROM events ORDER BY revision DESC LIMIT 1 OFFSET ?",
        (retention.max_events,),
    ).fetchone()
    if found is not None:
        cut = int(found[0])
    if retention.max_age is not None:
        found = db.execute(
            "SELECT max(revision) FROM events WHERE time < ?",
            ((now - retention.max_age).isoformat(),),
        ).fetchone()
        if found is not None and found[0] is not None:
            cut = max(cut, int(found[0]))
    if cut:
        db.execute("DELETE FROM events WHERE revision <= ?", (cut,))
        db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'events_floor'", (cut,))
    found = db.execute("SELECT value FROM meta WHERE key = 'events_floor'").fetchone()
    return int(found[0]) if found else 0

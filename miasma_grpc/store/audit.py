"""The ``audit`` table: written with the change it records, read newest first, kept by
the event log's retention (docs/security.md)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import aiosqlite

from miasma_grpc.domain.audit import AuditRecord
from miasma_grpc.domain.events import Retention
from miasma_grpc.store.rows import iso

INSERT = (
    "INSERT INTO audit (time, identity, source, method, app, revision, result, summary) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def row(record: AuditRecord) -> tuple[object, ...]:
    """The INSERT parameters of ``record`` (its time: now, when it has none)."""
    return (
        iso(record.time), record.identity, record.source, record.method, record.app,
        record.revision, record.result, record.summary,
    )  # fmt: skip


async def read(
    db: aiosqlite.Connection,
    *,
    app: str,
    identity: str,
    since: datetime | None,
    before_id: int,
    limit: int,
) -> list[AuditRecord]:
    """Records newest first, of ``app`` and ``identity`` (when given), at or after
    ``since``, with an id below ``before_id`` (0: any)."""
    where: list[str] = ["1"]
    params: list[object] = []
    for column, value in (("app", app), ("identity", identity)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("time >= ?")
        params.append(iso(since))
    if before_id:
        where.append("id < ?")
        params.append(before_id)
    sql = f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
    async with db.execute(sql, (*params, limit)) as cursor:
        rows = await cursor.fetchall()
    return [_record(r) for r in rows]


def _record(r: sqlite3.Row) -> AuditRecord:
    return AuditRecord(
        r["identity"], r["source"], r["method"], r["app"], r["result"], r["summary"],
        r["revision"], datetime.fromisoformat(r["time"]), r["id"],
    )  # fmt: skip


def compact(db: sqlite3.Connection, retention: Retention, now: datetime) -> None:
    """Drop records beyond ``retention`` (inside the caller's transaction)."""
    found = db.execute(
        "SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?", (retention.max_events,)
    ).fetchone()
    if found is not None:
        db.execute("DELETE FROM audit WHERE id <= ?", (int(found[0]),))
    if retention.max_age is not None:
        db.execute("DELETE FROM audit WHERE time < ?", (iso(now - retention.max_age),))

"""A real PostgreSQL client (psycopg) for the tests of a database run by Miasma."""

from __future__ import annotations

import time

import psycopg

CONNECT_TIMEOUT = 30.0


def connect(port: int, timeout: float = CONNECT_TIMEOUT) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to postgres on 127.0.0.1:``port``, retried until it answers.

    docker-proxy accepts on the published port before postgres listens, and a
    database that is starting refuses connections for a moment: both are retried.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                connect_timeout=2, autocommit=True,
            )  # fmt: skip
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def count(port: int, table: str = "rows") -> int:
    """``SELECT count(*)`` of ``table`` through a new connection."""
    with connect(port) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(str(row[0]))

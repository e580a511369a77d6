"""``miasma audit``: the audit log, newest first (admin only; docs/security.md)."""

from __future__ import annotations

from datetime import datetime, timedelta

import click
from rich.table import Table

from miasma_client.cli._context import State, pass_state
from miasma_client.cli._params import SINCE, json_option
from miasma_client.cli._render import out, print_json


@click.command("audit")
@click.option("-a", "--app", default="", help="Only the records of this app.")
@click.option("--by", "identity", default="", metavar="NAME", help="Only those of this caller.")
@click.option("--since", type=SINCE, help="Only those since then: 10m, 2h, 1d or a time.")
@click.option(
    "-n", "--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
    help="At most this many records.",
)  # fmt: skip
@json_option()
@pass_state
def audit(
    state: State,
    app: str,
    identity: str,
    since: datetime | timedelta | None,
    limit: int,
    as_json: bool,
) -> None:
    """Who changed what, and which calls were refused: newest first."""
    with state.client() as client:
        reply = client.list_audit_records(app, identity=identity, since=since, limit=limit)
    if as_json:
        print_json(list(reply.records))
        return
    if not reply.records:
        out.print("No records.")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("TIME", "WHO", "METHOD", "APP", "RESULT"):
        table.add_column(column)
    for record in reply.records:
        table.add_row(
            record.time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
            record.identity,
            record.method,
            record.app.removeprefix("apps/"),
            record.result if len(record.result) <= 60 else record.result[:59] + "…",
        )
    out.print(table)

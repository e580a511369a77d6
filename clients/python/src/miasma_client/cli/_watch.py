"""``miasma ports:watch``: port events as they happen, for people or (``--json``) scripts."""

from __future__ import annotations

import json

import click
from miasma.v1 import apps_pb2

from miasma_client.cli._context import State, pass_state
from miasma_client.cli._render import event_line, out, to_dict


@click.command("ports:watch")
@click.option("-a", "--app", metavar="NAME", help="Watch one app (default: every app).")
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="REVISION",
    help="Print the events after this revision; 0 prints the current ports first.",
)
@click.option(
    "--max-events",
    type=click.IntRange(min=1),
    metavar="N",
    help="Exit after N events (snapshot lines not counted).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message (NDJSON).")
@pass_state
def watch(state: State, app: str | None, since: int, max_events: int | None, as_json: bool) -> None:
    """Print port changes and rollout results live, resuming after disconnects.

    Each line starts with the event's revision: `--since REVISION` picks up
    exactly after it. Stop with Ctrl-C.
    """
    counted = 0
    with state.client() as client:
        if app is not None:
            client.get_app(app)  # NOT_FOUND now, rather than waiting for an app never made
        try:
            for response in client.watch_port_events(app, since=since):
                if as_json:
                    print(json.dumps(to_dict(response), ensure_ascii=False), flush=True)
                elif line := event_line(response):
                    out.print(line)
                event = response.event if response.HasField("event") else None
                if event and event.kind != apps_pb2.PORT_EVENT_KIND_SNAPSHOT:
                    counted += 1
                    if max_events is not None and counted >= max_events:
                        return
        except KeyboardInterrupt:
            return

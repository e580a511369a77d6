"""``miasma apps:logs``: an app's output, for people or (``--json``) scripts."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta

import click
from miasma.v1 import apps_pb2

from miasma_client.cli._context import State, pass_state
from miasma_client.cli._params import SINCE, app_option
from miasma_client.cli._render import err, to_dict


@click.command("apps:logs")
@app_option()
@click.option(
    "-n", "--num", "tail", type=click.IntRange(0, 100_000), default=100, show_default=True,
    help="Print the last N lines (0: all of them).",
)  # fmt: skip
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option("--since", type=SINCE, help="Only lines since then: 10m, 2h, 1d or a time.")
@click.option("-t", "--timestamps", is_flag=True, help="Start each line with its time.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (NDJSON).")
@pass_state
def logs(
    state: State,
    app: str,
    tail: int,
    follow: bool,
    since: datetime | timedelta | None,
    timestamps: bool,
    as_json: bool,
) -> None:
    """Print an app's output: stdout lines on stdout, stderr lines on stderr.

    With --follow the output goes on across the containers a rollout or a
    repair gives the app (a note on stderr says so), and after a server
    restart.
    """
    with state.client() as client:
        try:
            for response in client.read_logs(app, tail=tail, since=since, follow=follow):
                if as_json:
                    print(json.dumps(to_dict(response), ensure_ascii=False), flush=True)
                elif response.HasField("line"):
                    print_line(response.line, timestamps)
                else:
                    err.print(f"-- {response.notice.message}", style="dim", markup=False)
        except KeyboardInterrupt:
            return


def print_line(line: apps_pb2.LogLine, timestamps: bool) -> None:
    """One line, on the stream the app wrote it to."""
    stream = sys.stderr if line.stream == apps_pb2.LOG_STREAM_STDERR else sys.stdout
    text = line.text + (" [cut at 16 KiB]" if line.truncated else "")
    if timestamps:
        text = f"{line.time.ToDatetime().isoformat(timespec='microseconds')}Z {text}"
    print(text, file=stream, flush=True)

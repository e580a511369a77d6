"""The plot of (a): EditPorts against the bare echo, throughput and p99 per client count.

Drawn from a results document (``bench/results/latest.json``, as written by
``python -m bench``) into ``bench/results/throughput.png``: throughput
(calls/s) and p99 latency (ms, log scale) against concurrent clients (log
scale), Miasma and echo, each with the target as a dashed line (0.5x echo's
throughput, 3x echo's p99).

    python -m bench.plot [--input bench/results/latest.json] [--output PNG]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import NullLocator

RESULTS = Path(__file__).resolve().parent / "results"
LATEST = RESULTS / "latest.json"
PNG = RESULTS / "throughput.png"
THROUGHPUT_TARGET = 0.5  # Miasma >= 0.5x echo's calls/s
P99_TARGET = 3.0  # Miasma's p99 <= 3x echo's
TARGET_CLIENTS = 64  # where the targets apply
MIASMA, ECHO, TARGET = "tab:blue", "tab:orange", "tab:gray"


def throughput_figures(results: dict[str, Any]) -> dict[str, Any]:
    """(a)'s figures in a results document; LookupError when the run has none."""
    figures = results.get("benchmarks", {}).get("throughput", {}).get("figures")
    if not figures or not figures.get("levels"):
        raise LookupError("no throughput figures (a) in these results")
    return dict(figures)


def title(results: dict[str, Any], figures: dict[str, Any]) -> str:
    """Two lines: what is compared; machine, date, commit and how long each window ran."""
    machine = results.get("machine", {})
    date = str(results.get("date", "?"))[:16].replace("T", " ")
    quick = ", quick run" if results.get("quick") else ""
    return (
        f"(a) Miasma EditPorts (stopped apps) vs bare grpc.aio echo "
        f"({figures.get('payload_bytes', '?')} B)\n"
        f"{machine.get('nproc', '?')} cores ({machine.get('cpu_model', '?')}), "
        f"{date} UTC, commit {results.get('commit', '?')}, "
        f"{figures.get('rounds', '?')} x {figures.get('seconds', '?')} s per point{quick}"
    )


def panel(
    ax: Axes, levels: list[dict[str, Any]], key: str, ratio: str, factor: float, target: str
) -> None:
    """Miasma and echo's ``key`` per client count, ``factor`` x echo dashed, ratios noted."""
    clients = [level["clients"] for level in levels]
    ours = [level["miasma"][key] for level in levels]
    echo = [level["echo"][key] for level in levels]
    ax.plot(clients, ours, "o-", color=MIASMA, label="Miasma EditPorts")
    ax.plot(clients, echo, "s-", color=ECHO, label="bare grpc.aio echo")
    ax.plot(clients, [factor * e for e in echo], "--", color=TARGET, label=target)
    ax.axvline(TARGET_CLIENTS, color=TARGET, linewidth=0.8, alpha=0.4)
    for level, value, other in zip(levels, ours, echo, strict=True):
        ax.annotate(  # on the side away from echo's point
            f"{level[ratio]:.2f}x",
            (level["clients"], value),
            textcoords="offset points",
            xytext=(0, 8 if value >= other else -14),
            ha="center",
            fontsize=8,
            color=MIASMA,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"},
        )
    ax.set_xscale("log")
    ax.set_xticks(clients, [str(c) for c in clients])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(f"concurrent clients (log; target at {TARGET_CLIENTS})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)


def draw(results: dict[str, Any], path: Path = PNG) -> Path:
    """Draw (a)'s figures in ``results`` into ``path``; the path."""
    figures = throughput_figures(results)
    levels = sorted(figures["levels"], key=lambda level: level["clients"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    fig.suptitle(title(results, figures), fontsize=10)
    panel(
        left, levels, "calls_per_s", "throughput_ratio", THROUGHPUT_TARGET,
        f"{THROUGHPUT_TARGET:g}x echo (target: Miasma above)",
    )  # fmt: skip
    left.set_ylim(bottom=0)
    left.set_ylabel("throughput (calls/s)")
    left.set_title("throughput, Miasma/echo noted (higher is better)", fontsize=10)
    panel(
        right, levels, "p99_ms", "p99_ratio", P99_TARGET,
        f"{P99_TARGET:g}x echo (target: Miasma below)",
    )  # fmt: skip
    right.set_yscale("log")
    right.set_ylabel("p99 latency (ms, log)")
    right.set_title("p99 latency, Miasma/echo noted (lower is better)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    """Redraw the plot from a results document."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", type=Path, default=LATEST)
    parser.add_argument("--output", type=Path, default=PNG)
    ns = parser.parse_args()
    try:
        path = draw(json.loads(ns.input.read_text()), ns.output)
    except LookupError as exc:
        sys.exit(f"{ns.input}: {exc}")
    print(path)


if __name__ == "__main__":
    main()

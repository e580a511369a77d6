"""Run every benchmark, print their tables and a summary, write the results and the plot.

In order: (a) ``bench.throughput``, (b) ``bench.scale``, (c) ``bench.serving``,
(d) ``bench.watch_fanout``, (e) ``bench.cold_start``, (f) ``bench.db_downtime``,
(i) ``bench.reads``, (g) ``bench.routing``;
each is one module's ``measure()``, and its ``table()`` is printed as soon as
it completes. Then a summary: one line per target with the figure measured and
PASS or MISS. Every ratio compares two things measured in the same run,
alternating.

Written: ``bench/results/latest.json`` (date, machine, commit, every
benchmark's arguments and figures, the summary) and, when (a) ran,
``bench/results/throughput.png`` (``bench.plot``). (b) keeps its database of
10,000 apps for (e), so they are populated once when both run.

A benchmark that fails is reported (ERROR) and the others still run; the
exit status is then 1. A MISS does not change the exit status.

    python -m bench [--only a,c] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LATEST = RESULTS / "latest.json"
LEVELS = [1, 8, 64, 256]
TARGET_CLIENTS = 64


@dataclass(frozen=True)
class Target:
    """One line of the summary."""

    bench: str  # "a" .. "f"
    what: str
    figure: str
    target: str
    passed: bool
    value: float | None = None

    def as_json(self) -> dict[str, Any]:
        """As written in latest.json."""
        return {
            "bench": self.bench,
            "what": self.what,
            "figure": self.figure,
            "value": self.value,
            "target": self.target,
            "pass": self.passed,
        }


def throughput_targets(f: dict[str, Any]) -> list[Target]:
    """(a): at 64 clients, throughput >= 0.5x echo and p99 <= 3x echo."""
    level = next(lv for lv in f["levels"] if lv["clients"] == TARGET_CLIENTS)
    m, e, n = level["miasma"], level["echo"], TARGET_CLIENTS
    errors = f" ({m['errors']} errors)" if m["errors"] else ""
    t, p = level["throughput_ratio"], level["p99_ratio"]
    return [
        Target(
            "a", f"EditPorts throughput, {n} clients",
            f"{t:.2f}x echo ({m['calls_per_s']:.0f} vs {e['calls_per_s']:.0f}/s){errors}",
            ">= 0.5x echo", t >= 0.5, t,
        ),
        Target(
            "a", f"EditPorts p99, {n} clients",
            f"{p:.2f}x echo ({m['p99_ms']:.1f} vs {e['p99_ms']:.1f} ms)",
            "<= 3x echo", p <= 3.0, p,
        ),
    ]  # fmt: skip


def scale_targets(f: dict[str, Any]) -> list[Target]:
    """(b): median EditPorts and CreateApp with 10,000 apps <= 1.3x with 10."""
    limit = f["target_ratio"]
    return [
        Target(
            "b", f"{label} median, {f['apps']} apps",
            f"{f[call]['ratio']:.2f}x ({f[call]['large']['p50_ms']:.2f} vs "
            f"{f[call]['small']['p50_ms']:.2f} ms)",
            f"<= {limit:g}x {f['baseline_apps']} apps", f[call]["ratio"] <= limit,
            f[call]["ratio"],
        )
        for call, label in (("edit", "EditPorts"), ("create", "CreateApp"))
    ]  # fmt: skip


def serving_targets(f: dict[str, Any]) -> list[Target]:
    """(c): edit to serving <= 1.3x raw aiodocker, no failed request on the old port."""
    failed = f["failed_old_port_requests"]
    return [
        Target(
            "c", "edit to serving, median",
            f"{f['ratio']:.2f}x ({f['miasma']['p50_ms']:.0f} vs "
            f"{f['baseline']['p50_ms']:.0f} ms)",
            f"<= {f['target_ratio']:g}x aiodocker", f["ratio"] <= f["target_ratio"], f["ratio"],
        ),
        Target(
            "c", "failed GETs on the old port", f"{failed} in {f['rounds']} rounds",
            "0", failed == 0, failed,
        ),
    ]  # fmt: skip


def watch_targets(f: dict[str, Any]) -> list[Target]:
    """(d): delivery p99 <= 100 ms with 1,000 streams; memory per watcher reported."""
    m, b, limit = f["miasma"], f["baseline"], f["target_p99_ms"]
    kib = m["kib_per_watcher"]
    return [
        Target(
            "d", f"watch delivery p99, {f['watchers']} streams",
            f"{m['p99_ms']:.1f} ms ({m['p99_ms'] / b['p99_ms']:.2f}x bare grpc.aio)",
            f"<= {limit:g} ms", m["p99_ms"] <= limit, m["p99_ms"],
        ),
        Target(
            "d", "server memory per watcher",
            f"{kib:.1f} KiB ({b['kib_per_watcher']:.1f} KiB bare grpc.aio)",
            "reported", isinstance(kib, int | float), kib,
        ),
    ]  # fmt: skip


def cold_start_targets(f: dict[str, Any]) -> list[Target]:
    """(e): health SERVING within 2 s with 10,000 apps."""
    s = f["large"]["serving_s"]
    return [
        Target(
            "e", f"cold start to SERVING, {f['apps']} apps",
            f"{s:.2f} s ({f['small']['serving_s']:.2f} s with {f['baseline_apps']})",
            f"<= {f['target_s']:g} s", s <= f["target_s"], s,
        )
    ]  # fmt: skip


def db_downtime_targets(f: dict[str, Any]) -> list[Target]:
    """(f): Postgres downtime of a port edit <= 1.1x raw Docker's same work, no row lost."""
    m, lost = f["miasma"], f["rows_lost"]
    return [
        Target(
            "f", "Postgres port edit downtime, median",
            f"{f['ratio']:.2f}x ({m['p50_ms']:.0f} vs "
            f"{f['baseline']['p50_ms']:.0f} ms)",
            f"<= {f['target_ratio']:g}x raw Docker", f["ratio"] <= f["target_ratio"], f["ratio"],
        ),
        Target(
            "f", f"rows lost over {m['moves']} port edits",
            f"{lost} of {m['rows_acked']} acknowledged",
            "0", lost == 0, lost,
        ),
    ]  # fmt: skip


def reads_targets(f: dict[str, Any]) -> list[Target]:
    """(i): GetApp >= 0.8x and ListApps (page of 100) >= 0.5x a bare reply of the same size
    under h2load; 10,000 apps <= 1.1x the time per call of 10 (300); a change made by hand
    in GetApp within 1 s; memory per app."""
    t = f["targets"]
    found = []
    for key, label, limit in (("get", "GetApp", t["get"]),
                              ("list", "ListApps page of 100", t["list"])):  # fmt: skip
        c = f[key]
        m, b = c["miasma"], c["bare"]
        found.append(Target(
            "i", f"{label} under h2load",
            f"{c['ratio']:.2f}x bare ({m['per_s']:.0f} vs {b['per_s']:.0f}/s; p99 "
            f"{m['p99_ms']:.1f} vs {b['p99_ms']:.1f} ms)",
            f">= {limit:g}x bare reply", c["ratio"] >= limit, c["ratio"],
        ))  # fmt: skip
    for key, label in (("get_scale", "GetApp"), ("list_scale", "ListApps")):
        c = f[key]
        found.append(Target(
            "i", f"{label} time per call, {f['apps']} apps",
            f"{c['ratio']:.2f}x ({c['large']['per_s']:.0f} vs {c['small']['per_s']:.0f}/s)",
            f"<= {t['scale']:g}x fewer apps", c["ratio"] <= t["scale"], c["ratio"],
        ))  # fmt: skip
    fresh, limit = f["freshness"], t["fresh_s"] * 1000
    for key, label in (("kill_to_repaired", "container killed by hand: repaired"),
                       ("rm_to_shown", "container removed, port taken: in GetApp")):  # fmt: skip
        c = fresh[key]
        found.append(Target(
            "i", label, f"{c['max_ms']:.0f} ms max ({c['p50_ms']:.0f} median, {c['calls']}x)",
            f"<= {limit:.0f} ms", c["max_ms"] <= limit, c["max_ms"],
        ))  # fmt: skip
    per_app = f["memory"]["bytes_per_app"]
    found.append(Target(
        "i", "server memory per app", f"{per_app} bytes", "reported",
        isinstance(per_app, int), per_app,
    ))  # fmt: skip
    return found


def routing_targets(f: dict[str, Any]) -> list[Target]:
    """(g): no failed request through the moves; switch delay and proxy cost reported."""
    s, failed = f["switch"], f["failed_requests"]
    return [
        Target(
            "g", f"requests failed through {f['rounds']} port moves", str(failed),
            "0", failed == 0, failed,
        ),
        Target(
            "g", "route switch, applied -> new upstream",
            f"{s['p50_ms']:.0f} ms median, {s['p99_ms']:.0f} ms p99",
            "reported", True, s["p50_ms"],
        ),
        Target(
            "g", "router throughput vs Caddy by hand",
            f"{f['throughput_ratio']:.2f}x ({f['routed']['per_s']:.0f} vs "
            f"{f['static']['per_s']:.0f}/s; p99 {f['p99_ratio']:.2f}x)",
            "reported", True, f["throughput_ratio"],
        ),
    ]  # fmt: skip


@dataclass(frozen=True)
class Bench:
    """One benchmark: its module, ``measure()``'s arguments, and its targets."""

    key: str
    name: str  # module bench.<name>
    full: dict[str, Any]
    quick: dict[str, Any]
    targets: Callable[[dict[str, Any]], list[Target]]


BENCHES = (
    Bench(
        "a", "throughput",
        {"levels": LEVELS, "rounds": 3, "seconds": 2.0},
        {"levels": LEVELS, "rounds": 1, "seconds": 1.0},
        throughput_targets,
    ),
    Bench("b", "scale", {}, {"rounds": 2, "edits": 20, "creates": 4}, scale_targets),
    Bench("c", "serving", {}, {"rounds": 3}, serving_targets),
    Bench("d", "watch_fanout", {}, {"rounds": 5}, watch_targets),
    Bench("e", "cold_start", {}, {"runs": 1}, cold_start_targets),
    Bench("f", "db_downtime", {}, {"rounds": 3}, db_downtime_targets),
    Bench("i", "reads", {}, {"window": 1, "rounds": 1, "apps": 2000}, reads_targets),
    Bench("g", "routing", {}, {"rounds": 5, "seconds": 2, "windows": 1}, routing_targets),
)  # fmt: skip


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or platform.machine()
    meminfo: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            meminfo[key] = value.split()[0]
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(int(meminfo["MemTotal"]) / 2**20, 1) if meminfo else None,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "kernel": platform.release(),
        "arch": platform.machine(),
    }


def commit() -> str:
    """``git rev-parse --short HEAD``, with "-dirty" when the tree (results aside) differs."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", ".", ":(exclude)bench/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def effective_args(measure: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``measure``'s defaults filled in (as recorded in the results)."""
    try:
        bound = inspect.signature(measure).bind(**kwargs)
    except (TypeError, ValueError):
        return dict(kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def run_one(bench: Bench, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Import ``bench.<name>``, run its ``measure(**kwargs)``, print its table; the record."""
    module = importlib.import_module(f"bench.{bench.name}")
    record: dict[str, Any] = {"module": module.__name__}
    record["args"] = effective_args(module.measure, kwargs)
    started = time.perf_counter()
    figures = module.measure(**kwargs)
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["figures"] = figures
    print(module.table(figures), flush=True)
    return record


def error_target(bench: Bench, message: str) -> Target:
    """The summary line of a benchmark that gave no figures."""
    return Target(bench.key, f"bench.{bench.name}", f"ERROR: {message}"[:120], "-", False)


def summary_table(targets: list[Target], results: dict[str, Any]) -> str:
    """The final table: one line per target."""
    m = results["machine"]
    quick = ", quick run" if results["quick"] else ""
    what = max([len(f"({t.bench}) {t.what}") for t in targets] + [4]) + 2
    figure = max([len(t.figure) for t in targets] + [6]) + 2
    target = max([len(t.target) for t in targets] + [6]) + 2
    lines = [
        f"summary: {m['nproc']} cores ({m['cpu_model']}), {results['date']}, "
        f"commit {results['commit']}{quick}",
        f"{'what':<{what}}{'figure':<{figure}}{'target':<{target}}result",
    ]
    for t in targets:
        result = "PASS" if t.passed else "ERROR" if t.figure.startswith("ERROR") else "MISS"
        lines.append(
            f"{f'({t.bench}) {t.what}':<{what}}{t.figure:<{figure}}{t.target:<{target}}{result}"
        )
    return "\n".join(lines)


def selected(only: str | None) -> list[Bench]:
    """The benchmarks ``--only`` names (letters or module names), in the fixed order."""
    if not only:
        return list(BENCHES)
    names = {n.strip() for n in only.split(",") if n.strip()}
    known = {b.key for b in BENCHES} | {b.name for b in BENCHES}
    if unknown := names - known:
        choices = ", ".join(f"{b.key}={b.name}" for b in BENCHES)
        sys.exit(f"--only: unknown {', '.join(sorted(unknown))} (choose from {choices})")
    return [b for b in BENCHES if b.key in names or b.name in names]


def plot(results: dict[str, Any]) -> str | None:
    """Draw (a)'s plot; where it went (None, with the reason printed, when not drawn)."""
    if "figures" not in results["benchmarks"].get("throughput", {}):
        print("plot: not redrawn, (a) gave no figures in this run", flush=True)
        return None
    try:
        from bench import plot as plotting
    except ImportError as exc:
        print(f"plot: not drawn ({exc}); install with pip install -e '.[bench]'", flush=True)
        return None
    path = plotting.draw(results)
    print(f"plot: {path.relative_to(ROOT)}", flush=True)
    return str(path.relative_to(ROOT))


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", help="comma-separated benchmarks to run: letters (a,c) or module names"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and shorter windows (smoke check)"
    )
    ns = parser.parse_args()
    benches = selected(ns.only)
    keys = [b.key for b in benches]
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": commit(),
        "quick": ns.quick,
        "only": keys,
        "benchmarks": {},
        "summary": [],
    }
    targets: list[Target] = []
    handed: dict[str, Any] = {}  # (b)'s databases for (e)
    failed = False
    try:
        for bench in benches:
            kwargs = dict(bench.quick if ns.quick else bench.full)
            if bench.name == "scale" and "e" in keys:
                kwargs["keep"] = True
            if bench.name == "cold_start" and "large_db" in handed:
                kwargs["db"] = Path(handed["large_db"])
                if "small_db" in handed:
                    kwargs["small_db"] = Path(handed["small_db"])
            print(f"\n== ({bench.key}) bench.{bench.name} ==", flush=True)
            try:
                record = run_one(bench, kwargs)
            except Exception as exc:
                traceback.print_exc()
                failed = True
                message = f"{type(exc).__name__}: {exc}"
                results["benchmarks"][bench.name] = {"error": message}
                targets.append(error_target(bench, message))
                continue
            results["benchmarks"][bench.name] = record
            if bench.name == "scale":  # temporary paths: handed on, not recorded
                figures = record["figures"]
                handed = {k: figures.pop(k) for k in list(figures) if k.endswith("_db")}
            try:
                targets += bench.targets(record["figures"])
            except (KeyError, TypeError, StopIteration) as exc:
                failed = True
                targets.append(error_target(bench, f"figures lack {exc!r}"))
    finally:
        for kept in {Path(p).parent for p in handed.values()}:
            if kept.name.startswith("miasma-bench-"):
                shutil.rmtree(kept, ignore_errors=True)
    results["summary"] = [t.as_json() for t in targets]
    print("\n" + summary_table(targets, results), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    LATEST.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nresults: {LATEST.relative_to(ROOT)}", flush=True)
    plot(results)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

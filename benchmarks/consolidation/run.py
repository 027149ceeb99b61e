"""One command for the consolidation benchmark.

    .venv/bin/python -m benchmarks.consolidation [--quick] [--seed N] [--out PATH]

Decisions:

- Every algorithm runs on the same generated workloads in the same process,
  and every plan (the planner's and each baseline's) goes through the
  independent checker, which replays it step by step.
- The planner runs in scale-down mode with the workload's constraints:
  anti-affinity groups, no headroom, high watermark 100 percent, so every
  algorithm may fill hosts completely and host counts compare directly.
- Planning time: the planner is run several times per workload (more on small
  workloads) and p50 and p99 are nearest-rank percentiles of those runs; with
  fewer than 100 runs p99 is the slowest run. Peak memory is the peak of
  Python allocations (tracemalloc) during one extra planning run, which
  excludes the input lists the caller already holds. Baselines are timed once.
- No churn is measured, not assumed: the planner's plan is applied and the
  planner run again on the result; the table shows the migrations of that
  second plan.
- Slow baselines are capped by host count (``CAPS``); a capped cell says so.
  The exact optimum only runs on the smallest size.
- --quick: 12 and 100 hosts, a few repetitions, 3 s solver limit: under a
  minute. Full: 20, 100, 1,000 and 5,000 hosts.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
import tracemalloc
from dataclasses import dataclass, field

from stratus.core.consolidation import Action, Mode, apply_plan, check_plan, lower_bound, plan
from stratus.core.consolidation.world import World

from . import optimum
from .baselines import BASELINES, plan_from_target, run_baseline
from .workload import GIB, Workload, generate

SHAPES = ("homogeneous", "mixed")
UTILISATIONS = (30, 50, 70)
CAPS = {"sercon-nostop": 1000, "descheduler": 5000, "watcher-vwc": 5000}


@dataclass
class Row:
    workload: Workload
    algorithm: str
    hosts_on: int = 0
    lower: int = 0
    shape_lower: int | None = None
    released: int = 0
    migrations: int = 0
    migrated_mib: int = 0
    violations: int = 0
    seconds: list[float] = field(default_factory=list)
    peak_mib: float | None = None
    replan_migrations: int | None = None
    note: str = ""
    skipped: bool = False

    @property
    def gap(self) -> float:
        return 100.0 * (self.hosts_on - self.lower) / self.lower if self.lower else 0.0

    def pct(self, q: float) -> float:
        s = sorted(self.seconds)
        k = max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))
        return s[k]


def _hosts_on(steps, w: Workload) -> tuple[int, int]:
    off = sum(1 for s in steps if s.action is Action.POWER_OFF)
    on = sum(1 for s in steps if s.action is Action.POWER_ON)
    return sum(1 for h in w.hosts if h.powered_on) + on - off, off


def _record(row: Row, steps, w: Workload) -> None:
    row.hosts_on, row.released = _hosts_on(steps, w)
    moves = [s for s in steps if s.action is Action.MIGRATE]
    row.migrations = len(moves)
    size = {v.name: v.memory_mib for v in w.vms}
    row.migrated_mib = sum(size[s.vm] for s in moves)
    row.violations = len(check_plan(w.hosts, w.vms, w.constraints, steps))


def run_stratus(w: Workload, reps: int) -> Row:
    row = Row(w, "stratus")
    result = None
    for _ in range(reps):
        gc.collect()
        t = time.perf_counter()
        result = plan(w.hosts, w.vms, w.constraints, Mode.SCALE_DOWN)
        row.seconds.append(time.perf_counter() - t)
    gc.collect()
    tracemalloc.start()
    plan(w.hosts, w.vms, w.constraints, Mode.SCALE_DOWN)
    row.peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    _record(row, result.steps, w)
    hosts2, vms2 = apply_plan(w.hosts, w.vms, result)
    again = plan(hosts2, vms2, w.constraints, Mode.SCALE_DOWN)
    row.replan_migrations = again.figures.migrations
    return row


def run_named(name: str, w: Workload) -> Row:
    row = Row(w, name)
    if len(w.hosts) > CAPS.get(name, 10**9):
        row.skipped = True
        row.note = f"capped at {CAPS[name]} hosts"
        return row
    t = time.perf_counter()
    steps, detours = run_baseline(name, w.hosts, w.vms, w.constraints)
    row.seconds.append(time.perf_counter() - t)
    _record(row, steps, w)
    if detours:
        row.note = f"{detours} detours"
    return row


def run_optimum(w: Workload, lower: int, limit: float) -> Row:
    row = Row(w, "optimum (CP-SAT)")
    t = time.perf_counter()
    target, off, status = optimum.solve(w.hosts, w.vms, w.constraints, lower, limit)
    world = World(w.hosts, w.vms, w.constraints)
    steps, detours = plan_from_target(world, target, off)
    row.seconds.append(time.perf_counter() - t)
    _record(row, steps, w)
    row.note = status + (f", {detours} detours" if detours else "")
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.consolidation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (under a minute)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="results file (default: results.md next to this module, "
                                                "or results-quick.md with --quick)")
    ap.add_argument("--sizes", default=None, help="comma-separated host counts, overriding the mode's sizes")
    args = ap.parse_args(argv)
    if args.quick:
        exact_size, sizes, solver_limit = 12, [100], 3.0
    else:
        exact_size, sizes, solver_limit = 20, [100, 1000, 5000], 20.0
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    out = args.out or os.path.join(os.path.dirname(__file__), "results-quick.md" if args.quick else "results.md")

    rows: list[Row] = []
    started = time.perf_counter()
    all_sizes = ([exact_size] if optimum.available() else []) + sizes
    for hosts in all_sizes:
        for shape in SHAPES:
            for util in UTILISATIONS:
                w = generate(hosts, shape, util, args.seed)
                lower = lower_bound(w.hosts, w.vms, w.constraints)
                shape_lower = optimum.shape_lower_bound(w.hosts, w.vms, w.constraints)
                reps = 20 if hosts <= 100 else (10 if hosts <= 1000 else 5)
                if args.quick:
                    reps = min(reps, 5)
                batch = [run_stratus(w, reps)]
                for name in BASELINES:
                    batch.append(run_named(name, w))
                if hosts == exact_size and optimum.available():
                    batch.append(run_optimum(w, lower, solver_limit))
                for r in batch:
                    r.lower = lower
                    r.shape_lower = shape_lower
                rows.extend(batch)
                s = batch[0]
                print(f"[{time.perf_counter() - started:7.1f}s] {w.name}: {len(w.vms)} VMs, stratus {s.hosts_on} hosts "
                      f"(LB {lower}), {s.migrations} migrations, p50 {s.pct(0.5) * 1000:.0f} ms", file=sys.stderr,
                      flush=True)
    text = render(rows, args, time.perf_counter() - started, exact_size)
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _fmt_gib(mib: int) -> str:
    return f"{mib / GIB:,.0f}"


def render(rows: list[Row], args, elapsed: float, exact_size: int) -> str:
    try:
        import ortools
        solver = f"ortools {ortools.__version__}"
    except ImportError:
        solver = "ortools not installed: no exact optimum"
    lines = [
        "# Consolidation benchmark results",
        "",
        f"Command: `python -m benchmarks.consolidation{' --quick' if args.quick else ''} --seed {args.seed}`  ",
        f"Python {platform.python_version()}, {solver}, {os.cpu_count()} cores (shared), "
        f"total run {elapsed:.0f} s.",
        "",
        "Columns: *hosts on* after the plan; *LB* the spec lower bound (per-dimension capacity ceilings, "
        "VMs too big to share, largest anti-affinity group); *shape LB* a tighter bound for mixed host shapes "
        "(fewest hosts whose capacities cover demand in both dimensions at once); *gap* hosts on over LB; "
        "*released* hosts powered off; *mig* migrations (detours included); *GiB* migrated memory; "
        "*rel/mig* hosts released per migration; *viol* violations found by the independent checker; "
        "*time* planning time (stratus: p50 / p99 over the repetitions); *peak* peak traced memory of one "
        "planning run; *re-plan* migrations of a second plan on the result.",
        "",
    ]
    lines += _summary(rows)
    by_workload: dict[str, list[Row]] = {}
    for r in rows:
        by_workload.setdefault(r.workload.name, []).append(r)
    lines += ["", "## All results", ""]
    for name, group in by_workload.items():
        w = group[0].workload
        shape_lb = group[0].shape_lower
        lines.append(f"### {name}: {len(w.hosts)} hosts, {len(w.vms):,} VMs, "
                     f"utilisation {w.actual_utilisation_permille / 10:.1f} %, "
                     f"{len(w.constraints.anti_affinity_groups)} anti-affinity groups")
        lines.append("")
        lines.append(f"LB {group[0].lower}" + (f", shape LB {shape_lb}" if shape_lb is not None else ""))
        lines.append("")
        lines.append("| algorithm | hosts on | gap | released | mig | GiB | rel/mig | viol | time | peak | re-plan | note |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in group:
            if r.skipped:
                lines.append(f"| {r.algorithm} | – | – | – | – | – | – | – | – | – | – | {r.note} |")
                continue
            if r.algorithm == "stratus":
                t = f"{r.pct(0.5) * 1000:,.0f} / {r.pct(0.99) * 1000:,.0f} ms"
            else:
                t = f"{r.seconds[0] * 1000:,.0f} ms"
            rel = f"{r.released / r.migrations:.3f}" if r.migrations else ("∞" if r.released else "–")
            peak = f"{r.peak_mib:,.0f} MiB" if r.peak_mib is not None else ""
            replan = "" if r.replan_migrations is None else str(r.replan_migrations)
            lines.append(f"| {r.algorithm} | {r.hosts_on} | {r.gap:.1f} % | {r.released} | {r.migrations:,} | "
                         f"{_fmt_gib(r.migrated_mib)} | {rel} | {r.violations} | {t} | {peak} | {replan} | {r.note} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _summary(rows: list[Row]) -> list[str]:
    out = [
        "## Summary (stratus)",
        "",
        "*best baseline at ≤ hosts*: among baselines that reach as few hosts as stratus or fewer, the one with "
        "the fewest migrations (\"none\" when no baseline gets there).",
        "",
        "| workload | VMs | hosts on | LB | gap | shape LB gap | mig | best baseline at ≤ hosts | viol | p50 | p99 | peak | re-plan |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    by_workload: dict[str, list[Row]] = {}
    for r in rows:
        by_workload.setdefault(r.workload.name, []).append(r)
    for name, group in by_workload.items():
        s = next(r for r in group if r.algorithm == "stratus")
        rivals = [r for r in group if r.algorithm != "stratus" and not r.skipped and r.hosts_on <= s.hosts_on]
        if rivals:
            b = min(rivals, key=lambda r: (r.migrations, r.hosts_on))
            best = f"{b.algorithm}: {b.hosts_on} hosts, {b.migrations:,} mig"
        else:
            best = "none"
        sg = (f"{100.0 * (s.hosts_on - s.shape_lower) / s.shape_lower:.1f} %"
              if s.shape_lower and s.workload.shape == "mixed" else "")
        out.append(f"| {name} | {len(s.workload.vms):,} | {s.hosts_on} | {s.lower} | {s.gap:.1f} % | {sg} | "
                   f"{s.migrations:,} | {best} | {s.violations} | {s.pct(0.5) * 1000:,.0f} ms | "
                   f"{s.pct(0.99) * 1000:,.0f} ms | {s.peak_mib:,.0f} MiB | {s.replan_migrations} |")
    return out


if __name__ == "__main__":
    sys.exit(main())

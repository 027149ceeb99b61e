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
- Second-round workloads (issue 19, ``workload.VARIANTS``): memory-heavy VM
  mixes, 5 percent non-migratable VMs, standby hosts of a larger shape,
  pending VMs at scale-up. Scale-down ones also run the planner with the
  power objective (``stratus-power``); the pending ones run it in scale-up
  mode against ``place-ff``. ``--new-only`` runs only these; ``--base-only``
  only the first-round ones; ``--baselines`` restricts the baselines (for
  the 5,000-host run on a shared machine).
- Watts: every algorithm's final state is priced by the same linear model
  (``Host.watts``). The watts lower bound is the total CPU requested times
  the smallest watts-per-millicore slope of any host, plus the idle watts of
  the cheapest-idling hosts, as many as the host lower bound, less a watt
  per host for the model's rounding: no placement can draw less.
- Lower bounds: *LB* is the planner's (``lower_bound``), which counts the
  hosts pinned by non-migratable VMs and the hosts the demand their room
  cannot take needs; *cap LB* is the same bound with every VM migratable (the
  first round's, pure capacity).
- Only baseline plans the checker accepts count as "best baseline".
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
import tracemalloc
from dataclasses import dataclass, field, replace

from stratus.core.consolidation import Action, Mode, Objective, apply_plan, check_plan, lower_bound, plan
from stratus.core.consolidation.world import World

from . import optimum
from .baselines import BASELINES, place_ff, plan_from_target, run_baseline
from .workload import GIB, VARIANTS, Workload, generate

SHAPES = ("homogeneous", "mixed")
UTILISATIONS = (30, 50, 70)
CAPS = {"sercon-nostop": 1000, "descheduler": 5000, "watcher-vwc": 5000}
# Second-round workloads: (variant, shapes, utilisations).
NEW = (
    ("memheavy", SHAPES, (50, 70)),
    ("pinned", SHAPES, (50, 70)),
    ("standby-large", SHAPES, (50, 70)),
    ("pending", SHAPES, (85,)),
)


@dataclass
class Row:
    workload: Workload
    algorithm: str
    hosts_on: int = 0
    lower: int = 0
    cap_lower: int = 0
    shape_lower: int | None = None
    watts_lower: int = 0
    released: int = 0
    powered_on: int = 0
    migrations: int = 0
    migrated_mib: int = 0
    violations: int = 0
    watts: int = 0
    pending_left: int = 0
    too_large: int = 0
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_mib: float | None = None
    replan_migrations: int | None = None
    note: str = ""
    skipped: bool = False

    @property
    def gap(self) -> float:
        return 100.0 * (self.hosts_on - self.lower) / self.lower if self.lower else 0.0

    def cpu_p50(self) -> float:
        s = sorted(self.cpu_seconds) or [0.0]
        return s[(len(s) - 1) // 2]

    def pct(self, q: float) -> float:
        s = sorted(self.seconds)
        k = max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))
        return s[k]


def _final(w: Workload, steps) -> tuple[set[str], dict[str, str | None]]:
    on = {h.name for h in w.hosts if h.powered_on}
    where = {v.name: v.host for v in w.vms}
    for s in steps:
        if s.action is Action.POWER_ON:
            on.add(s.host)
        elif s.action is Action.POWER_OFF:
            on.discard(s.host)
        else:
            where[s.vm] = s.host
    return on, where


def _watts(w: Workload, steps) -> int:
    on, where = _final(w, steps)
    load: dict[str, int] = {}
    for v in w.vms:
        h = where[v.name]
        if h is not None:
            load[h] = load.get(h, 0) + v.cpu_millicores
    return sum(h.watts(load.get(h.name, 0)) for h in w.hosts if h.name in on)


def _record(row: Row, steps, w: Workload) -> None:
    row.released = sum(1 for s in steps if s.action is Action.POWER_OFF)
    row.powered_on = sum(1 for s in steps if s.action is Action.POWER_ON)
    row.hosts_on = sum(1 for h in w.hosts if h.powered_on) + row.powered_on - row.released
    moves = [s for s in steps if s.action is Action.MIGRATE]
    row.migrations = len(moves)
    size = {v.name: v.memory_mib for v in w.vms}
    row.migrated_mib = sum(size[s.vm] for s in moves)
    row.violations = len(check_plan(w.hosts, w.vms, w.constraints, steps))
    row.watts = _watts(w, steps)
    _, where = _final(w, steps)
    row.pending_left = sum(1 for v in w.vms if where[v.name] is None)


def run_stratus(w: Workload, reps: int, mode: Mode, name: str = "stratus", constraints=None) -> Row:
    c = constraints or w.constraints
    row = Row(w, name)
    result = None
    for _ in range(reps):
        gc.collect()
        t = time.perf_counter()
        cpu = time.process_time()
        result = plan(w.hosts, w.vms, c, mode)
        row.seconds.append(time.perf_counter() - t)
        row.cpu_seconds.append(time.process_time() - cpu)
    gc.collect()
    tracemalloc.start()
    plan(w.hosts, w.vms, c, mode)
    row.peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    _record(row, result.steps, w)
    row.violations = len(check_plan(w.hosts, w.vms, c, result.steps))
    row.too_large = sum(1 for _, why in result.unplaced_reasons if why.startswith("TooLarge"))
    if result.truncated:
        row.note = "truncated"
    hosts2, vms2 = apply_plan(w.hosts, w.vms, result)
    again = plan(hosts2, vms2, c, mode)
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


def run_place_ff(w: Workload) -> Row:
    row = Row(w, "place-ff")
    t = time.perf_counter()
    steps = place_ff(w.hosts, w.vms, w.constraints)
    row.seconds.append(time.perf_counter() - t)
    _record(row, steps, w)
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


def generate_name(hosts: int, shape: str, util: int, variant: str) -> str:
    """The name ``generate`` gives a workload, without generating it."""
    if VARIANTS[variant].pending_fraction:
        util = max(util, 85)
    return f"{shape}-{hosts}-u{util}" + (f"-{variant}" if variant else "")


def watts_lower_bound(w: Workload, hosts_lower: int) -> int:
    """No placement draws less (module docstring)."""
    pool = [h for h in w.hosts if not h.cordoned and (h.in_service or h.wakeable)]
    if not pool:
        return 0
    slope = min((h.peak_watts - h.idle_watts) / h.cpu_millicores for h in pool if h.cpu_millicores)
    demand = sum(v.cpu_millicores for v in w.vms if v.host is not None)
    idle = sum(sorted(h.idle_watts for h in pool)[:hosts_lower])
    # Host.watts rounds down per host: allow a watt per host for that.
    return max(0, int(idle + slope * demand) - hosts_lower)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.consolidation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (under a minute)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="results file (default: results.md next to this module, "
                                                "or results-quick.md with --quick)")
    ap.add_argument("--sizes", default=None, help="comma-separated host counts, overriding the mode's sizes")
    ap.add_argument("--new-only", action="store_true", help="only the second-round workloads")
    ap.add_argument("--base-only", action="store_true", help="only the first-round workloads")
    ap.add_argument("--baselines", default=None, help="comma-separated baselines to run (default: all)")
    ap.add_argument("--reps", type=int, default=None, help="planner repetitions per workload")
    ap.add_argument("--no-exact", action="store_true", help="skip the smallest size with the exact optimum")
    ap.add_argument("--only", default=None, help="comma-separated workload names to run (e.g. mixed-5000-u70)")
    args = ap.parse_args(argv)
    if args.quick:
        exact_size, sizes, solver_limit = 12, [100], 3.0
    else:
        exact_size, sizes, solver_limit = 20, [100, 1000, 5000], 20.0
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    baselines = list(BASELINES) if not args.baselines else args.baselines.split(",")
    out = args.out or os.path.join(os.path.dirname(__file__), "results-quick.md" if args.quick else "results.md")

    rows: list[Row] = []
    started = time.perf_counter()
    exact = optimum.available() and not args.no_exact
    all_sizes = ([exact_size] if exact else []) + sizes
    jobs: list[tuple[int, str, int, str]] = []
    for hosts in all_sizes:
        if not args.new_only:
            jobs += [(hosts, shape, util, "") for shape in SHAPES for util in UTILISATIONS]
        if not args.base_only and hosts != exact_size:
            jobs += [(hosts, shape, util, variant) for variant, shapes, utils in NEW for shape in shapes
                     for util in utils]
    if args.only:
        wanted = set(args.only.split(","))
        jobs = [j for j in jobs if generate_name(*j) in wanted]
    for hosts, shape, util, variant in jobs:
        w = generate(hosts, shape, util, args.seed, variant=variant)
        lower = lower_bound(w.hosts, w.vms, w.constraints)
        free_vms = tuple(replace(v, migratable=True) for v in w.vms)
        cap_lower = lower_bound(w.hosts, free_vms, w.constraints)
        shape_lower = optimum.shape_lower_bound(w.hosts, w.vms, w.constraints)
        reps = args.reps or (20 if hosts <= 100 else (10 if hosts <= 1000 else 5))
        if args.quick:
            reps = min(reps, 5)
        if variant == "pending":
            batch = [run_stratus(w, reps, Mode.SCALE_UP), run_place_ff(w)]
        else:
            batch = [run_stratus(w, reps, Mode.SCALE_DOWN)]
            if variant:
                power = replace(w.constraints, objective=Objective.POWER)
                batch.append(run_stratus(w, max(1, reps // 2), Mode.SCALE_DOWN, "stratus-power", power))
            for name in baselines:
                batch.append(run_named(name, w))
            if hosts == exact_size and exact:
                batch.append(run_optimum(w, lower, solver_limit))
        for r in batch:
            r.lower = lower
            r.cap_lower = cap_lower
            r.shape_lower = shape_lower
            r.watts_lower = watts_lower_bound(w, lower)
        rows.extend(batch)
        s = batch[0]
        print(f"[{time.perf_counter() - started:7.1f}s] {w.name}: {len(w.vms)} VMs, stratus {s.hosts_on} hosts "
              f"(LB {lower}), {s.migrations} migrations, {s.pending_left} pending left, "
              f"p50 {s.pct(0.5) * 1000:.0f} ms, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        # Written after every workload, so a long run leaves its results so far.
        with open(out, "w") as f:
            f.write(render(rows, args, time.perf_counter() - started))
    text = render(rows, args, time.perf_counter() - started)
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _fmt_gib(mib: int) -> str:
    return f"{mib / GIB:,.0f}"


def _command(args) -> str:
    parts = ["python -m benchmarks.consolidation"]
    for flag in ("quick", "new_only", "base_only", "no_exact"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    for opt in ("sizes", "baselines", "reps", "only"):
        if getattr(args, opt):
            parts.append(f"--{opt} {getattr(args, opt)}")
    parts.append(f"--seed {args.seed}")
    return " ".join(parts)


def render(rows: list[Row], args, elapsed: float) -> str:
    try:
        import ortools
        solver = f"ortools {ortools.__version__}"
    except ImportError:
        solver = "ortools not installed: no exact optimum"
    lines = [
        "# Consolidation benchmark results",
        "",
        f"Command: `{_command(args)}`  ",
        f"Python {platform.python_version()}, {solver}, {os.cpu_count()} cores (shared), "
        f"total run {elapsed:.0f} s, load average at the end {os.getloadavg()[0]:.1f}.",
        "",
        "Columns: *hosts on* after the plan; *LB* the planner's lower bound (per-dimension capacity ceilings, "
        "VMs too big to share, largest anti-affinity group, hosts pinned by non-migratable VMs plus the hosts "
        "the rest of the demand needs); *cap LB* the same with every VM migratable; *shape LB* a tighter bound "
        "for mixed host shapes (fewest hosts whose capacities cover demand in both dimensions at once); *gap* "
        "hosts on over LB; *released* hosts powered off; *on* standby hosts powered on; *mig* migrations "
        "(detours included); *GiB* migrated memory; *W* estimated watts after the plan (same linear model for "
        "every algorithm); *W LB* a watts lower bound; *pend* pending VMs left; *viol* violations found by the "
        "independent checker; *time* planning time (stratus: p50 / p99 over the repetitions); *peak* peak "
        "traced memory of one planning run; *CPU* the planner process's CPU time (less sensitive to other work "
        "on the machine than wall-clock); *re-plan* migrations of a second plan on the result.",
        "",
    ]
    lines += _summary(rows)
    lines += _summary_new(rows)
    lines += _summary_pending(rows)
    by_workload: dict[str, list[Row]] = {}
    for r in rows:
        by_workload.setdefault(r.workload.name, []).append(r)
    lines += ["", "## All results", ""]
    for name, group in by_workload.items():
        w = group[0].workload
        shape_lb = group[0].shape_lower
        pinned = sum(1 for v in w.vms if not v.migratable)
        pending = sum(1 for v in w.vms if v.host is None)
        standby = sum(1 for h in w.hosts if h.standby)
        lines.append(f"### {name}: {len(w.hosts)} hosts ({standby} standby), {len(w.vms):,} VMs "
                     f"({pinned} not migratable, {pending} pending), "
                     f"utilisation {w.actual_utilisation_permille / 10:.1f} %, "
                     f"{len(w.constraints.anti_affinity_groups)} anti-affinity groups")
        lines.append("")
        lines.append(f"LB {group[0].lower}, cap LB {group[0].cap_lower}"
                     + (f", shape LB {shape_lb}" if shape_lb is not None else "")
                     + f", W LB {group[0].watts_lower:,}")
        lines.append("")
        lines.append("| algorithm | hosts on | gap | released | on | mig | GiB | W | pend | viol | time | peak | re-plan | note |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in group:
            if r.skipped:
                lines.append(f"| {r.algorithm} | – | – | – | – | – | – | – | – | – | – | – | – | {r.note} |")
                continue
            if r.algorithm.startswith("stratus"):
                t = f"{r.pct(0.5) * 1000:,.0f} / {r.pct(0.99) * 1000:,.0f} ms"
            else:
                t = f"{r.seconds[0] * 1000:,.0f} ms"
            peak = f"{r.peak_mib:,.0f} MiB" if r.peak_mib is not None else ""
            replan = "" if r.replan_migrations is None else str(r.replan_migrations)
            lines.append(f"| {r.algorithm} | {r.hosts_on} | {r.gap:.1f} % | {r.released} | {r.powered_on} | "
                         f"{r.migrations:,} | {_fmt_gib(r.migrated_mib)} | {r.watts:,} | {r.pending_left} | "
                         f"{r.violations} | {t} | {peak} | {replan} | {r.note} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _groups(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.workload.name, []).append(r)
    return out


def _best_baseline(group: list[Row]) -> Row | None:
    """The clean baseline (0 violations) with the fewest hosts on, then migrations."""
    rivals = [r for r in group if r.algorithm in BASELINES and not r.skipped and not r.violations]
    return min(rivals, key=lambda r: (r.hosts_on, r.migrations), default=None)


def _summary(rows: list[Row]) -> list[str]:
    out = [
        "## Summary: first-round workloads (stratus)",
        "",
        "*best baseline*: the baseline (plans with 0 violations only) with the fewest hosts on, then "
        "migrations; *≤ best*: stratus keeps no more hosts on than it.",
        "",
        "| workload | VMs | hosts on | LB | gap | shape LB gap | mig | best baseline | ≤ best | W | viol | p50 | p99 | CPU p50 | peak | re-plan |",
        "|---|---:|---:|---:|---:|---:|---:|---|:-:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, group in _groups(rows).items():
        if group[0].workload.variant:
            continue
        s = group[0]
        b = _best_baseline(group)
        best = f"{b.algorithm}: {b.hosts_on} hosts, {b.migrations:,} mig" if b else "none"
        ok = "yes" if b is None or s.hosts_on <= b.hosts_on else "**no**"
        sg = (f"{100.0 * (s.hosts_on - s.shape_lower) / s.shape_lower:.1f} %"
              if s.shape_lower and s.workload.shape == "mixed" else "")
        out.append(f"| {name} | {len(s.workload.vms):,} | {s.hosts_on} | {s.lower} | {s.gap:.1f} % | {sg} | "
                   f"{s.migrations:,} | {best} | {ok} | {s.watts:,} | {s.violations} | {s.pct(0.5) * 1000:,.0f} ms | "
                   f"{s.pct(0.99) * 1000:,.0f} ms | {s.cpu_p50() * 1000:,.0f} ms | {s.peak_mib:,.0f} MiB | "
                   f"{s.replan_migrations} |")
    return out


def _summary_new(rows: list[Row]) -> list[str]:
    out = [
        "",
        "## Summary: second-round scale-down workloads",
        "",
        "*stratus* minimises hosts, *stratus-power* watts. *gap* is hosts on over the planner's LB (which "
        "counts hosts pinned by non-migratable VMs); *W gap* watts over the watts lower bound.",
        "",
        "| workload | VMs | LB | cap LB | stratus hosts (gap) | mig | best baseline | ≤ best | stratus W (W gap) | stratus-power hosts / W / mig | best baseline W | viol | p50 | CPU p50 | peak | re-plan |",
        "|---|---:|---:|---:|---:|---:|---|:-:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, group in _groups(rows).items():
        w = group[0].workload
        if not w.variant or w.variant == "pending":
            continue
        s = group[0]
        sp = next((r for r in group if r.algorithm == "stratus-power"), None)
        b = _best_baseline(group)
        best = f"{b.algorithm}: {b.hosts_on} hosts, {b.migrations:,} mig" if b else "none"
        ok = "yes" if b is None or s.hosts_on <= b.hosts_on else "**no**"
        wgap = 100.0 * (s.watts - s.watts_lower) / s.watts_lower if s.watts_lower else 0.0
        spc = f"{sp.hosts_on} / {sp.watts:,} / {sp.migrations:,}" if sp else ""
        viol = s.violations + (sp.violations if sp else 0)
        out.append(f"| {name} | {len(w.vms):,} | {s.lower} | {s.cap_lower} | {s.hosts_on} ({s.gap:.1f} %) | "
                   f"{s.migrations:,} | {best} | {ok} | {s.watts:,} ({wgap:.1f} %) | {spc} | "
                   f"{(b.watts if b else 0):,} | {viol} | {s.pct(0.5) * 1000:,.0f} ms | {s.cpu_p50() * 1000:,.0f} ms | "
                   f"{s.peak_mib:,.0f} MiB | {s.replan_migrations} |")
    return out


def _summary_pending(rows: list[Row]) -> list[str]:
    out = [
        "",
        "## Summary: pending VMs at scale-up",
        "",
        "*left* pending VMs after the plan; *too large* those the planner proves fit nowhere (larger than "
        "any host's usable room); the rest it reports as NoRoom (no hole found within the budget).",
        "",
        "| workload | pending | stratus left (too large) | powered on | mig | GiB | place-ff left | place-ff powered on | viol | p50 | CPU p50 | re-plan |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, group in _groups(rows).items():
        w = group[0].workload
        if w.variant != "pending":
            continue
        s = group[0]
        b = next((r for r in group if r.algorithm == "place-ff"), None)
        pending = sum(1 for v in w.vms if v.host is None)
        out.append(f"| {name} | {pending} | {s.pending_left} ({s.too_large}) | {s.powered_on} | {s.migrations:,} | "
                   f"{_fmt_gib(s.migrated_mib)} | {b.pending_left if b else ''} | {b.powered_on if b else ''} | "
                   f"{s.violations + (b.violations if b else 0)} | {s.pct(0.5) * 1000:,.0f} ms | "
                   f"{s.cpu_p50() * 1000:,.0f} ms | {s.replan_migrations} |")
    return out


if __name__ == "__main__":
    sys.exit(main())

"""The exact optimum for small instances, from CP-SAT (OR-Tools).

Decisions:

- Lexicographic, in two solves: first the fewest hosts on, then, with that
  count fixed, the fewest MiB migrated. Any VM may go to any serving host
  (no restriction to the planner's move model), so this is the true optimum
  of the final placement; the steps to reach it are ordered afterwards by the
  same orderer as the baselines, with detours counted.
- The current placement is given as a hint and the spec lower bound as a
  constraint, which is what lets CP-SAT prove optimality quickly when the
  bound is tight. Each solve has a time limit; when it runs out the table
  says "best found" instead of "optimal".
- Only used on small instances (tens of hosts): the model has one Boolean
  per (VM, host) pair.
- Also here: ``shape_lower_bound``, a tighter lower bound for mixed host
  shapes (fewest hosts, by shape counts, whose summed capacity covers demand
  in both dimensions at once), solved as a tiny integer program.
"""

from __future__ import annotations

from stratus.core.consolidation import Constraints, Host, VM
from stratus.core.consolidation.world import World

try:
    from ortools.sat.python import cp_model
except ImportError:  # pragma: no cover - the "bench" extra is optional
    cp_model = None


def available() -> bool:
    return cp_model is not None


def shape_lower_bound(hosts, vms, constraints: Constraints) -> int | None:
    if cp_model is None:
        return None
    w = World(hosts, vms, constraints)
    eligible = [i for i in range(len(hosts)) if not w.cordoned[i] and (w.serving[i] or w.wakeable[i])]
    shapes: dict[tuple[int, int], int] = {}
    for i in eligible:
        shapes[(w.cap_c[i], w.cap_m[i])] = shapes.get((w.cap_c[i], w.cap_m[i]), 0) + 1
    dem_c = sum(w.vm_c[j] for j, h in enumerate(w.vm_host) if h >= 0)
    dem_m = sum(w.vm_m[j] for j, h in enumerate(w.vm_host) if h >= 0)
    model = cp_model.CpModel()
    x = {s: model.NewIntVar(0, n, f"x{k}") for k, (s, n) in enumerate(shapes.items())}
    model.Add(sum(v * s[0] for s, v in x.items()) >= dem_c)
    model.Add(sum(v * s[1] for s, v in x.items()) >= dem_m)
    model.Minimize(sum(x.values()))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = 10
    solver.parameters.num_workers = 1
    if solver.Solve(model) != cp_model.OPTIMAL:
        return None
    return int(solver.ObjectiveValue())


def solve(hosts: tuple[Host, ...], vms: tuple[VM, ...], constraints: Constraints, lower: int,
          time_limit: float) -> tuple[list[int], list[int], str]:
    """(target placement, hosts to power off, status)."""
    w = World(hosts, vms, constraints)
    serving = w.serving_hosts()
    movable = [j for j, h in enumerate(w.vm_host) if h >= 0 and w.vm_migratable[j] and not w.pinned[h]]
    movable_set = set(movable)
    fixed_c = {i: sum(w.vm_c[j] for j in w.host_vms[i] if j not in movable_set) for i in serving}
    fixed_m = {i: sum(w.vm_m[j] for j in w.host_vms[i] if j not in movable_set) for i in serving}
    model = cp_model.CpModel()
    x = {}
    for j in movable:
        for i in serving:
            if w.vm_c[j] + fixed_c[i] <= w.cap_c[i] and w.vm_m[j] + fixed_m[i] <= w.cap_m[i]:
                x[j, i] = model.NewBoolVar(f"x{j}_{i}")
    y = {i: model.NewBoolVar(f"y{i}") for i in serving}
    for j in movable:
        model.AddExactlyOne(x[j, i] for i in serving if (j, i) in x)
    for i in serving:
        if w.pinned[i] or fixed_c[i] or fixed_m[i]:
            model.Add(y[i] == 1)
        terms = [(j, x[j, i]) for j in movable if (j, i) in x]
        model.Add(sum(w.vm_c[j] * v for j, v in terms) + fixed_c[i] <= w.cap_c[i] * y[i])
        model.Add(sum(w.vm_m[j] * v for j, v in terms) + fixed_m[i] <= w.cap_m[i] * y[i])
    groups: dict[int, list[int]] = {}
    for j in movable:
        for g in w.vm_groups[j]:
            groups.setdefault(g, []).append(j)
    for g, members in groups.items():
        if len(members) < 2:
            continue
        for i in serving:
            held = sum(1 for jj in w.host_vms[i] if jj not in movable_set and g in w.vm_groups[jj])
            terms = [x[j, i] for j in members if (j, i) in x]
            if terms:
                model.Add(sum(terms) <= 1 - held)
    for j in movable:
        if (j, w.vm_host[j]) in x:
            model.AddHint(x[j, w.vm_host[j]], 1)
    model.Add(sum(y.values()) >= lower)
    model.Minimize(sum(y.values()))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = 2
    solver.parameters.random_seed = 1
    first = solver.Solve(model)
    if first not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return list(w.vm_host), [], "no solution in time"
    count = int(round(solver.ObjectiveValue()))
    status = "optimal" if first == cp_model.OPTIMAL else "best found"
    assignment = {j: next(i for i in serving if (j, i) in x and solver.Value(x[j, i])) for j in movable}
    model.ClearHints()
    for (j, i), v in x.items():
        model.AddHint(v, 1 if assignment[j] == i else 0)
    model.Add(sum(y.values()) <= count)
    model.Minimize(sum(w.vm_m[j] * (1 - x[j, w.vm_host[j]]) if (j, w.vm_host[j]) in x else w.vm_m[j]
                       for j in movable))
    second = solver.Solve(model)
    if second in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        assignment = {j: next(i for i in serving if (j, i) in x and solver.Value(x[j, i])) for j in movable}
        if second != cp_model.OPTIMAL:
            status = f"{status} hosts, best found MiB"
    else:
        status = f"{status} hosts, MiB not improved"
    target = list(w.vm_host)
    for j, i in assignment.items():
        target[j] = i
    used = {target[j] for j in range(len(target)) if target[j] >= 0}
    off = [i for i in serving if i not in used and not w.pinned[i]]
    return target, off, status

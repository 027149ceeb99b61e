"""Exact scale-down for very small clusters.

Decisions:

- When the search space is tiny (at most ``MAX_VMS`` movable VMs and
  ``MAX_HOSTS`` serving hosts, and hosts**VMs under ``MAX_ASSIGNMENTS``) the
  planner also solves the problem exactly: the heuristic only moves VMs off
  hosts being released, while here any VM may move anywhere. Edge sites with a
  handful of hosts get the true optimum, and the unit tests can compare the
  planner against a brute force.
- The search enumerates the set of hosts that stay on, smallest first, and for
  each runs a depth-first assignment with branch and bound on migration cost
  (each VM tries its current host first, so good bounds come early). The first
  size with any feasible assignment is optimal in host count; among the sets
  of that size the cheapest assignment wins. Ties go to the lowest host
  indices, which keeps the result deterministic.
- The result still has to be orderable without detours (a swap between two
  full hosts is not); if it is not, the caller keeps the heuristic plan.
"""

from __future__ import annotations

from itertools import combinations

from .world import World

MAX_VMS = 10
MAX_HOSTS = 6
MAX_ASSIGNMENTS = 200_000


def small_enough(world: World) -> bool:
    serving = world.serving_hosts()
    movable = [j for i in serving if not world.cordoned[i] for j in world.host_vms[i] if world.vm_migratable[j]]
    return (
        0 < len(movable) <= MAX_VMS
        and 0 < len(serving) <= MAX_HOSTS
        and len(serving) ** len(movable) <= MAX_ASSIGNMENTS
    )


def exact_scale_down(world: World, budget: int | None) -> tuple[dict[int, int], list[int]] | None:
    """(VM -> new host for VMs that move, hosts to power off), or None if no
    host can be powered off."""
    c = world.constraints
    serving = world.serving_hosts()
    movable = sorted(
        (j for i in serving for j in world.host_vms[i] if world.vm_migratable[j]),
        key=lambda j: (-(world.vm_c[j] + world.vm_m[j]), j),
    )
    fixed_c = {i: sum(world.vm_c[j] for j in world.host_vms[i] if not world.vm_migratable[j]) for i in serving}
    fixed_m = {i: sum(world.vm_m[j] for j in world.host_vms[i] if not world.vm_migratable[j]) for i in serving}
    fixed_groups: dict[int, set[int]] = {i: set() for i in serving}
    for i in serving:
        for j in world.host_vms[i]:
            if not world.vm_migratable[j]:
                fixed_groups[i].update(world.vm_groups[j])
    must = {i for i in serving if world.must_stay_on[i] or any(not world.vm_migratable[j] for j in world.host_vms[i])}
    releasable = [i for i in serving if i not in must]
    dem_c, dem_m = world.demand()
    high = c.high_watermark_percent
    for released in range(len(releasable), 0, -1):
        best: tuple[int, tuple[int, ...], dict[int, int]] | None = None
        for gone in combinations(releasable, released):
            keep = [i for i in serving if i not in gone]
            if (sum(world.cap_c[i] for i in keep) * high < dem_c * 100
                    or sum(world.cap_m[i] for i in keep) * high < dem_m * 100):
                continue
            found = _assign(world, keep, movable, fixed_c, fixed_m, fixed_groups, budget, c.min_free_hosts,
                            best[0] if best else None)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], gone, found[2])
        if best is not None:
            _, gone, target = best
            moves = {j: h for j, h in target.items() if h != world.vm_host[j]}
            return moves, list(gone)
    return None


def _assign(world, keep, movable, fixed_c, fixed_m, fixed_groups, budget, min_free, bound):
    """Cheapest assignment of ``movable`` onto ``keep`` leaving ``min_free``
    hosts of ``keep`` empty (only hosts that end empty can be released, so the
    reserve is counted among the hosts that stay on)."""
    room_c = {i: world.cap_c[i] - fixed_c[i] for i in keep}
    room_m = {i: world.cap_m[i] - fixed_m[i] for i in keep}
    groups = {i: set(fixed_groups[i]) for i in keep}
    count = {i: (1 if fixed_c[i] or fixed_m[i] or any(not world.vm_migratable[j] for j in world.host_vms[i]) else 0)
             for i in keep}
    best_cost = [bound]
    best: list[tuple[int, int, dict[int, int]] | None] = [None]
    current: dict[int, int] = {}
    order = list(keep)

    def dfs(k: int, cost: int, moved: int) -> None:
        if best_cost[0] is not None and cost >= best_cost[0]:
            return
        if k == len(movable):
            empty = sum(1 for i in keep if count[i] == 0)
            if empty < min_free:
                return
            best_cost[0] = cost
            best[0] = (cost, moved, dict(current))
            return
        j = movable[k]
        home = world.vm_host[j]
        cands = ([home] if home in room_c else []) + [i for i in order if i != home]
        for i in cands:
            vc = world.vm_c[j]
            vm = world.vm_m[j]
            if vc > room_c[i] or vm > room_m[i]:
                continue
            gs = world.vm_groups[j]
            if gs and any(g in groups[i] for g in gs):
                continue
            step = 0 if i == home else 1
            if budget is not None and moved + step > budget:
                continue
            room_c[i] -= vc
            room_m[i] -= vm
            groups[i].update(gs)
            count[i] += 1
            current[j] = i
            dfs(k + 1, cost + (world.vm_m[j] if step else 0), moved + step)
            del current[j]
            count[i] -= 1
            groups[i].difference_update(gs)
            room_c[i] += vc
            room_m[i] += vm

    dfs(0, 0, 0)
    return best[0]

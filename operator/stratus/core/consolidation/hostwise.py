"""Host by host: empty one host at a time into the room the others have left.

Decisions:

- This is the search Karpenter's single-node consolidation and the cluster
  autoscaler's scale-down make: take the hosts in order of fewest VMs (least
  loaded first on ties), and release a host whenever all its VMs fit on hosts
  that stay on. It is weaker than the prefix search on ordinary inputs (it
  cannot see that the VMs of many hosts together pack better), but it never
  gives up because of one host: when the hosts at the end of every ranking
  each hold a VM larger than any other host's free room, the prefix search
  fails at every prefix, while this one skips those hosts and releases the
  others. The planner runs it from the start state as a candidate of its own,
  and after the best prefix plan to release what that plan left behind
  (``planner``), and keeps the best plan.
- Placement is first fit over the hosts that stay on, fullest first (by free
  room relative to size), which approximates best fit; VMs of a host go
  largest first. ``RoomIndex`` keeps, per VM size, where its first fit is,
  so a pass costs about O(hosts x sizes) in scans, and a host that cannot
  be emptied fails at its first VM that fits nowhere, cheaply.
- Releasing a host only removes room, so a host that failed once cannot
  succeed later in the same pass: one pass is enough.
- Every move goes from a host that is released to one that stays on, so the
  plan is safe in any order (one wave), like the prefix search's. A VM moved
  twice (onto a host that is itself released later) counts as one migration
  from its first host to its last.
- The high watermark, the free-host reserve and the migration budget are
  respected: a host is skipped when releasing it would push utilisation of
  the hosts left above the high watermark, would leave fewer than
  ``min_free_hosts`` empty hosts on, or would take the plan's migrations
  over the budget.
"""

from __future__ import annotations

from .world import Loads, World


class RoomIndex:
    """Leftmost host (in a fixed order) with room for a request.

    One pointer per request size: the position before which no host has room
    for it. Room only shrinks while a pass goes on, so a pointer only moves
    forward, and the scans of one size cost O(hosts) in all; when room comes
    back (a failed host is put back), the pointers of the sizes that fit
    again move back to it. Fleets have few VM sizes (flavours), so this beats
    a two-dimensional segment tree, whose pruning by the larger free CPU and
    the larger free memory of a subtree fails on hosts rich in one and poor
    in the other."""

    __slots__ = ("order", "pos", "fc", "fm", "ptr")

    def __init__(self, order: list[int], free_c: list[int], free_m: list[int]) -> None:
        self.order = order
        self.pos = {h: k for k, h in enumerate(order)}
        self.fc = [free_c[h] for h in order]
        self.fm = [free_m[h] for h in order]
        self.ptr: dict[tuple[int, int], int] = {}

    def set(self, h: int, fc: int, fm: int) -> None:
        p = self.pos[h]
        grew = fc > self.fc[p] or fm > self.fm[p]
        self.fc[p] = fc
        self.fm[p] = fm
        if grew:
            for (c, m), q in self.ptr.items():
                if p < q and fc >= c and fm >= m:
                    self.ptr[(c, m)] = p

    def find(self, c: int, m: int, lo: int = 0) -> int:
        """Position of the leftmost host at or after ``lo`` with room, or -1."""
        fc, fm = self.fc, self.fm
        n = len(fc)
        if lo == 0:
            key = (c, m)
            p = self.ptr.get(key, 0)
            while p < n and (fc[p] < c or fm[p] < m):
                p += 1
            self.ptr[key] = p
        else:
            p = max(lo, self.ptr.get((c, m), 0))
            while p < n and (fc[p] < c or fm[p] < m):
                p += 1
        return p if p < n else -1


def release_each(world: World, kept: list[int], fixed: set[int], moves: dict[int, int] | None = None,
                 off: list[int] | None = None, budget: int | None = None, worth=None):
    """Release hosts of ``kept`` (not in ``fixed``) one at a time, on top of
    ``moves`` and ``off`` (an earlier plan, or nothing).

    Returns (powered off, migrations, MiB moved, moves, hosts to power off, kept),
    the planner's outcome tuple; ``None`` if nothing is released at all.
    ``worth(host, vms on it)``, if given, says whether a host is worth its
    migrations (the savings floor); hosts that are not are skipped.
    """
    c = world.constraints
    moves = dict(moves or {})
    off = list(off or [])
    vm_host, vm_c, vm_m = world.vm_host, world.vm_c, world.vm_m
    cap_c, cap_m = world.cap_c, world.cap_m
    state = Loads(world)
    load_c, load_m = state.c, state.m
    on: dict[int, list[int]] = {i: list(world.host_vms[i]) for i in kept}
    for j, t in moves.items():
        src = vm_host[j]
        state.shift(j, src, t)
        if src in on:
            on[src].remove(j)
        on[t].append(j)
    alive = set(kept)
    high = c.high_watermark_percent
    dem_c, dem_m = world.demand()
    have_c = sum(cap_c[i] for i in kept)
    have_m = sum(cap_m[i] for i in kept)
    free_hosts = sum(1 for i in kept if not on[i])
    ref_c = max((cap_c[i] for i in kept), default=1) or 1
    ref_m = max((cap_m[i] for i in kept), default=1) or 1

    def room_frac(i: int) -> float:
        return (cap_c[i] - load_c[i]) / (cap_c[i] or 1) + (cap_m[i] - load_m[i]) / (cap_m[i] or 1)

    targets = sorted(kept, key=lambda i: (room_frac(i), i))
    index = RoomIndex(targets, [cap_c[i] - load_c[i] for i in range(len(cap_c))],
                      [cap_m[i] - load_m[i] for i in range(len(cap_m))])
    cands = sorted((i for i in kept if i not in fixed and not world.pinned[i]),
                   key=lambda i: (len(on[i]), max(load_c[i] / (cap_c[i] or 1), load_m[i] / (cap_m[i] or 1)), i))
    released = 0
    for h in cands:
        if ((have_c - cap_c[h]) * high < dem_c * 100 or (have_m - cap_m[h]) * high < dem_m * 100):
            continue
        mine = on[h]
        if worth is not None and not worth(h, sum(1 for j in mine if vm_host[j] == h or j not in moves)):
            continue
        if not mine:
            if free_hosts - 1 < c.min_free_hosts:
                continue
        elif budget is not None:
            extra = sum(1 for j in mine if vm_host[j] == h or j not in moves)
            if len(moves) + extra > budget:
                continue
        index.set(h, -1, -1)
        placed: list[tuple[int, int]] = []
        ok = True
        for j in sorted(mine, key=lambda j: (-(vm_c[j] / ref_c + vm_m[j] / ref_m), j)):
            cj, mj = vm_c[j], vm_m[j]
            p = index.find(cj, mj)
            while p >= 0 and state.clashes(j, targets[p]):
                p = index.find(cj, mj, p + 1)
            if p < 0:
                ok = False
                break
            t = targets[p]
            state.shift(j, h, t)
            index.set(t, cap_c[t] - load_c[t], cap_m[t] - load_m[t])
            placed.append((j, t))
        if ok and c.min_free_hosts:
            newly_busy = len({t for _, t in placed if not on[t]})
            if free_hosts - newly_busy < c.min_free_hosts:
                ok = False
        if not ok:
            for j, t in reversed(placed):
                state.shift(j, t, h)
                index.set(t, cap_c[t] - load_c[t], cap_m[t] - load_m[t])
            index.set(h, cap_c[h] - load_c[h], cap_m[h] - load_m[h])
            continue
        if not mine:
            free_hosts -= 1
        else:
            free_hosts -= len({t for _, t in placed if not on[t]})
        for j, t in placed:
            on[t].append(j)
            if vm_host[j] == t:
                moves.pop(j, None)
            else:
                moves[j] = t
        on[h] = []
        alive.discard(h)
        have_c -= cap_c[h]
        have_m -= cap_m[h]
        off.append(h)
        released += 1
    if not off:
        return None
    kept_after = [i for i in kept if i in alive]
    return len(off), len(moves), sum(vm_m[j] for j in moves), moves, off, kept_after

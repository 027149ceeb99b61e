"""Packing a pool of VMs into the free room of hosts that stay on.

Decisions:

- Bin-centric, by alignment: hosts are filled one at a time; for the host
  being filled, the next VM is the one whose request vector (normalised by
  the host's capacity) points most nearly the way the host's remaining room
  does: the largest cosine between the two. Among VMs aligned within 0.001,
  the larger goes first, so big VMs are placed while there is room for them
  and small ones fill the corners.
  The benchmark first used a weighted dot product (Panigrahy et al.,
  "Heuristics for Vector Bin Packing", 2011). A dot product with positive
  weights always prefers the larger VM in both dimensions, whatever its
  shape, so with mixed host shapes it spent the CPU-heavy VMs on hosts that
  had memory to spare and stranded CPU elsewhere: 9 to 13 percent above the
  lower bound at 1,000 mixed hosts. Alignment keeps every host's room the
  shape of what can still fill it; a full repack by alignment reaches the
  lower bound on those workloads (measured in ``benchmarks/consolidation``).
  The dot product stays available (``align=False``): with one host shape it
  sometimes releases the same hosts with fewer migrations, and the planner
  tries both.
- VMs are grouped by exact request shape (flavours make that a short list:
  the Azure distribution used by the benchmark has 12 shapes), so choosing the
  next VM costs O(shapes), not O(pool). With thousands of distinct shapes the
  cost grows accordingly; the planner still finishes, only more slowly.
- Members of anti-affinity groups are taken before ungrouped VMs of the same
  shape, and a member is only put on a host holding no other member of its
  groups. Grouped VMs are the hard ones; placing them first spreads them.
- A fill fails as soon as the pool's remaining demand exceeds the room left in
  the hosts not yet filled, so infeasible candidates cost little.
- Reshaping (``movable``): a host that stays on may also give up some of its
  own VMs when they are the wrong shape for it (a CPU-rich host whose room is
  mostly memory because memory-heavy VMs sit on it). Such a host is filled
  from empty: its own VMs compete with the pool, and an own VM is kept
  whenever its alignment is within ``keep_slack`` of the best pool VM that
  fits (staying costs no migration, so it gets the benefit of the doubt;
  0.1 by measurement: at 1,000 mixed hosts and 70 percent, 0.2 keeps 9 more
  hosts on to save 630 migrations, 0.05 saves 2 more hosts for 2,200 more);
  those not kept join the pool for the hosts filled after it. Evicted VMs
  therefore only ever move to hosts later in the fill order, so the moves
  form no cycle and can always be ordered without detours (``ordering``):
  the last host any remaining move targets has no VM left to send away, so
  its arrivals fit.
  A movable host is only reshaped where that pays: a dry run (by shape
  counts) packs it around its VMs first; if that leaves no more room unused
  than the host's share of the slack (total room minus demand, per
  dimension, over the hosts still to fill), or reshaping would not leave
  less, its VMs stay where they are. Evictions, and so migrations, go only
  where the host count needs them.
- Once a shape is chosen, a quarter of the further copies that still fit go
  in at once (``_BATCH``). Placing one copy turns the room's direction only
  a little, so this changes few choices and saves most of the scoring: it
  made the 5,000-host plans about three times faster.
"""

from __future__ import annotations

import math

from .world import World

# Alignments within this band count as equal and the larger VM wins.
_BAND = 1000.0
# Once a shape is chosen, this fraction of the further copies that still fit
# go in at once (module docstring).
_BATCH = 0.25
# The dot product's scores are small fractions; scaled so int() keeps them apart.
_DOT_SCALE = 1e9
_MANY = 1 << 30


def fill(
    world: World,
    bins: list[int],
    pool: list[int],
    load_c: list[int] | None = None,
    load_m: list[int] | None = None,
    host_groups: list[dict[int, int] | None] | None = None,
    movable: set[int] | None = None,
    keep_slack: float = 0.1,
    align: bool = True,
) -> dict[int, int] | None:
    """Place every VM of ``pool`` on a host of ``bins`` (in that order), or None.

    Loads and anti-affinity membership come from ``world`` unless overridden
    (the planner's post-pass packs into a state that already has moves in it).
    With ``movable``, the VMs currently on those bins may move to a later bin
    (see the module docstring); the result then includes those moves.
    """
    if not pool and not movable:
        return {}
    vm_c, vm_m, vm_groups = world.vm_c, world.vm_m, world.vm_groups
    cap_c, cap_m = world.cap_c, world.cap_m
    load_c = world.load_c if load_c is None else load_c
    load_m = world.load_m if load_m is None else load_m
    host_groups = world.host_groups if host_groups is None else host_groups
    movable = movable or set()

    # Per request shape (``World.vm_shape``): the grouped and the ungrouped
    # members of the pool.
    vm_shape = world.vm_shape
    sc, sm = world.shape_c, world.shape_m
    if not sc:
        return {}
    grouped: list[list[int]] = [[] for _ in sc]
    plain: list[list[int]] = [[] for _ in sc]
    pool_c = pool_m = 0
    for j in pool:
        (grouped if vm_groups[j] else plain)[vm_shape[j]].append(j)
        pool_c += vm_c[j]
        pool_m += vm_m[j]
    room_c: list[int] = []
    room_m: list[int] = []
    for b in bins:
        if b in movable:
            room_c.append(cap_c[b])
            room_m.append(cap_m[b])
            pool_c += load_c[b]
            pool_m += load_m[b]
        else:
            room_c.append(max(0, cap_c[b] - load_c[b]))
            room_m.append(max(0, cap_m[b] - load_m[b]))
    total_c = sum(room_c)
    total_m = sum(room_m)
    if pool_c > total_c or pool_m > total_m:
        return None
    # Reverse so that list.pop() takes VMs in pool order.
    for lst in grouped:
        lst.reverse()
    for lst in plain:
        lst.reverse()
    count = [len(grouped[s]) + len(plain[s]) for s in range(len(sc))]
    active = sorted(s for s in range(len(sc)) if count[s])
    smallest_c = min(sc)
    smallest_m = min(sm)
    # The dot product's weights: per dimension, demand over room.
    w_c = pool_c / total_c if total_c else 1.0
    w_m = pool_m / total_m if total_m else 1.0
    # Per host capacity: each shape's unit vector and size, normalised by it
    # (for the dot product: the weighted normalised request).
    norms: dict[tuple[int, int], tuple[list[float], list[float], list[float]]] = {}

    def normalised(cb: int, mb: int):
        got = norms.get((cb, mb))
        if got is None:
            un, vn, size = [], [], []
            for s in range(len(sc)):
                u = sc[s] / cb
                v = sm[s] / mb
                if align:
                    n = math.hypot(u, v) or 1.0
                    un.append(u / n)
                    vn.append(v / n)
                    size.append((u + v) * 0.25)
                else:
                    un.append(u * w_c)
                    vn.append(v * w_m)
                    size.append(0.0)
            got = norms[(cb, mb)] = (un, vn, size)
        return got

    def waste(cb: int, mb: int, rc: int, rm: int, own: dict[int, list[int]] | None) -> tuple[int, int]:
        """Room a host would be left with (dry run by shape counts, anti-affinity
        ignored): packed around its VMs (``own`` None) or reshaped."""
        un, vn, size = normalised(cb, mb)
        avail = {s: count[s] for s in active}
        mine = {t: len(v) for t, v in own.items()} if own else None
        while True:
            x = rc / cb
            y = rm / mb
            inv = _BAND / (math.hypot(x, y) or 1.0)
            best = -1
            best_score = -1.0
            for s, n in avail.items():
                if n and sc[s] <= rc and sm[s] <= rm:
                    score = int((un[s] * x + vn[s] * y) * inv) + size[s]
                    if score > best_score:
                        best_score, best = score, s
            if mine:
                pick = -1
                pick_score = -1.0
                for t, n in mine.items():
                    if n and sc[t] <= rc and sm[t] <= rm:
                        score = int((un[t] * x + vn[t] * y) * inv) + size[t]
                        if score > pick_score:
                            pick_score, pick = score, t
                if pick >= 0 and (best < 0 or pick_score >= best_score - keep_slack * _BAND):
                    c, m = sc[pick], sm[pick]
                    taken = 1 + min(mine[pick] - 1, int(min((rc - c) // c if c else _MANY,
                                                            (rm - m) // m if m else _MANY) * _BATCH))
                    mine[pick] -= taken
                    rc -= c * taken
                    rm -= m * taken
                    continue
            if best < 0:
                return rc, rm
            c, m = sc[best], sm[best]
            taken = 1 + min(avail[best] - 1, int(min((rc - c) // c if c else _MANY,
                                                     (rm - m) // m if m else _MANY) * _BATCH))
            avail[best] -= taken
            rc -= c * taken
            rm -= m * taken

    def reshape_pays(b: int, rc: int, rm: int, own: dict[int, list[int]], hosts_left: int,
                      slack_c: int, slack_m: int) -> bool:
        """Reshape this host only if packing around its VMs would waste more
        than its share of the slack, and reshaping wastes less."""
        cb = cap_c[b] or 1
        mb = cap_m[b] or 1
        if not align:
            return True
        kc, km = waste(cb, mb, rc - load_c[b], rm - load_m[b], None)
        share_c = slack_c / hosts_left
        share_m = slack_m / hosts_left
        if kc <= share_c and km <= share_m:
            return False
        rc2, rm2 = waste(cb, mb, rc, rm, own)
        sc_ = slack_c or 1
        sm_ = slack_m or 1
        return max(rc2 / sc_, rm2 / sm_) < max(kc / sc_, km / sm_)

    out: dict[int, int] = {}
    left_c = total_c
    left_m = total_m
    for k, b in enumerate(bins):
        rc = room_c[k]
        rm = room_m[k]
        left_c -= rc
        left_m -= rm
        own: dict[int, list[int]] | None = None
        if b in movable and world.host_vms[b]:
            own = {}
            for j in world.host_vms[b]:
                own.setdefault(vm_shape[j], []).append(j)
            if not reshape_pays(b, rc, rm, own, len(bins) - k, left_c + rc - pool_c, left_m + rm - pool_m):
                # Packed around its VMs after all: they stay, untouched.
                own = None
                rc -= load_c[b]
                rm -= load_m[b]
                pool_c -= load_c[b]
                pool_m -= load_m[b]
        if not own and (rc < smallest_c or rm < smallest_m):
            if pool_c > left_c or pool_m > left_m:
                return None
            continue
        cb = cap_c[b] or 1
        mb = cap_m[b] or 1
        un, vn, size = normalised(cb, mb)
        if own is None:
            held = host_groups[b]
            held = dict(held) if held else None
        else:
            held = None
        blocked: set[int] | None = None
        while True:
            x = rc / cb
            y = rm / mb
            inv = _BAND / (math.hypot(x, y) or 1.0) if align else _DOT_SCALE
            best = -1
            best_score = -1.0
            for s in active:
                if sc[s] <= rc and sm[s] <= rm:
                    score = int((un[s] * x + vn[s] * y) * inv) + size[s]
                    if score > best_score and (blocked is None or s not in blocked):
                        best_score = score
                        best = s
            if own:
                # The best-aligned own VM that fits stays if it is nearly as good.
                pick = -1
                pick_at = -1
                pick_score = -1.0
                for t, mine in own.items():
                    if sc[t] <= rc and sm[t] <= rm:
                        score = int((un[t] * x + vn[t] * y) * inv) + size[t]
                        if score > pick_score:
                            at = len(mine) - 1
                            if held:
                                while at >= 0 and vm_groups[mine[at]] and any(g in held for g in vm_groups[mine[at]]):
                                    at -= 1
                            if at >= 0:
                                pick, pick_at, pick_score = t, at, score
                if pick >= 0 and (best < 0 or pick_score >= best_score - keep_slack * _BAND):
                    mine = own[pick]
                    c = sc[pick]
                    m = sm[pick]
                    j = mine[pick_at]
                    mine[pick_at] = mine[-1]
                    mine.pop()
                    taken = 1
                    gs = vm_groups[j]
                    if gs:
                        if held is None:
                            held = {}
                        for g in gs:
                            held[g] = held.get(g, 0) + 1
                    else:
                        # More of the same shape at once (see _BATCH); members
                        # of anti-affinity groups one at a time.
                        more = int(min((rc - c) // c if c else _MANY, (rm - m) // m if m else _MANY) * _BATCH)
                        while more > 0 and mine and not vm_groups[mine[-1]]:
                            mine.pop()
                            taken += 1
                            more -= 1
                    if not mine:
                        del own[pick]
                    rc -= c * taken
                    rm -= m * taken
                    pool_c -= c * taken
                    pool_m -= m * taken
                    continue
            if best < 0:
                break
            s = best
            j = -1
            lst = grouped[s]
            if lst:
                if held is None:
                    j = lst.pop()
                else:
                    for idx in range(len(lst) - 1, -1, -1):
                        cand = lst[idx]
                        if not any(g in held for g in vm_groups[cand]):
                            j = cand
                            lst[idx] = lst[-1]
                            lst.pop()
                            break
            c = sc[s]
            m = sm[s]
            taken = 1
            if j >= 0:
                for g in vm_groups[j]:
                    if held is None:
                        held = {}
                    held[g] = held.get(g, 0) + 1
                out[j] = b
            elif plain[s]:
                lst = plain[s]
                out[lst.pop()] = b
                more = min(len(lst), int(min((rc - c) // c if c else _MANY, (rm - m) // m if m else _MANY) * _BATCH))
                for _ in range(more):
                    out[lst.pop()] = b
                taken += more
            else:
                if blocked is None:
                    blocked = set()
                blocked.add(s)
                continue
            rc -= c * taken
            rm -= m * taken
            pool_c -= c * taken
            pool_m -= m * taken
            count[s] -= taken
            if count[s] == 0:
                active.remove(s)
        if own:
            # Not kept: into the pool, for the hosts after this one.
            for s, mine in own.items():
                for j in mine:
                    (grouped[s] if vm_groups[j] else plain[s]).append(j)
                if count[s] == 0:
                    active.append(s)
                count[s] += len(mine)
        if not active:
            return out
        if pool_c > left_c or pool_m > left_m:
            return None
    return None

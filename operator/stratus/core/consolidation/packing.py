"""Packing a pool of VMs into the free room of hosts that stay on.

Decisions:

- Bin-centric, weighted dot product (after Panigrahy et al., "Heuristics for
  Vector Bin Packing", 2011): hosts are filled one at a time; for the host
  being filled, the next VM is the one whose request vector, normalised by
  the host's capacity, has the largest weighted dot product with the host's
  remaining room. Large VMs that match the shape of the room go first and
  small VMs fill the corners. The weights are the pool's demand over the
  total room, per dimension, so the scarcer dimension counts more.
- VMs are grouped by exact request shape (flavours make that a short list:
  the Azure distribution used by the benchmark has 12 shapes), so choosing the
  next VM costs O(shapes), not O(pool). With thousands of distinct shapes the
  cost grows accordingly; the planner still finishes, only more slowly.
- Members of anti-affinity groups are taken before ungrouped VMs of the same
  shape, and a member is only put on a host holding no other member of its
  groups. Grouped VMs are the hard ones; placing them first spreads them.
- A fill fails as soon as the pool's remaining demand exceeds the room left in
  the hosts not yet filled, so infeasible candidates cost little.
"""

from __future__ import annotations

from .world import World


def fill(
    world: World,
    bins: list[int],
    pool: list[int],
    load_c: list[int] | None = None,
    load_m: list[int] | None = None,
    host_groups: list[dict[int, int] | None] | None = None,
) -> dict[int, int] | None:
    """Place every VM of ``pool`` on a host of ``bins`` (in that order), or None.

    Loads and anti-affinity membership come from ``world`` unless overridden
    (the planner's post-pass packs into a state that already has moves in it).
    """
    if not pool:
        return {}
    vm_c, vm_m, vm_groups = world.vm_c, world.vm_m, world.vm_groups
    cap_c, cap_m = world.cap_c, world.cap_m
    load_c = world.load_c if load_c is None else load_c
    load_m = world.load_m if load_m is None else load_m
    host_groups = world.host_groups if host_groups is None else host_groups

    # Shapes, largest first; per shape the grouped and the ungrouped members.
    shape_of: dict[tuple[int, int], int] = {}
    sc: list[int] = []
    sm: list[int] = []
    grouped: list[list[int]] = []
    plain: list[list[int]] = []
    pool_c = pool_m = 0
    for j in pool:
        key = (vm_c[j], vm_m[j])
        s = shape_of.get(key)
        if s is None:
            s = shape_of[key] = len(sc)
            sc.append(key[0])
            sm.append(key[1])
            grouped.append([])
            plain.append([])
        (grouped[s] if vm_groups[j] else plain[s]).append(j)
        pool_c += key[0]
        pool_m += key[1]
    room_c = [max(0, cap_c[b] - load_c[b]) for b in bins]
    room_m = [max(0, cap_m[b] - load_m[b]) for b in bins]
    total_c = sum(room_c)
    total_m = sum(room_m)
    if pool_c > total_c or pool_m > total_m:
        return None
    # Reverse so that list.pop() takes VMs in pool order.
    for lst in grouped:
        lst.reverse()
    for lst in plain:
        lst.reverse()
    ref_c = max(cap_c[b] for b in bins) or 1
    ref_m = max(cap_m[b] for b in bins) or 1
    size = [sc[s] / ref_c + sm[s] / ref_m for s in range(len(sc))]
    active = sorted(range(len(sc)), key=lambda s: (-size[s], -sc[s], -sm[s]))
    count = [len(grouped[s]) + len(plain[s]) for s in range(len(sc))]
    smallest_c = min(sc)
    smallest_m = min(sm)

    w_c = pool_c / total_c if total_c else 1.0
    w_m = pool_m / total_m if total_m else 1.0
    out: dict[int, int] = {}
    left_c = total_c
    left_m = total_m
    for k, b in enumerate(bins):
        rc = room_c[k]
        rm = room_m[k]
        left_c -= rc
        left_m -= rm
        if rc < smallest_c or rm < smallest_m:
            if pool_c > left_c or pool_m > left_m:
                return None
            continue
        cb = cap_c[b] or 1
        mb = cap_m[b] or 1
        kc = w_c / (cb * cb)
        km = w_m / (mb * mb)
        held = host_groups[b]
        held = dict(held) if held else None
        blocked: set[int] | None = None
        while True:
            best = -1
            best_score = -1.0
            a = kc * rc
            bm = km * rm
            for s in active:
                c = sc[s]
                m = sm[s]
                if c <= rc and m <= rm:
                    score = a * c + bm * m
                    if score > best_score and (blocked is None or s not in blocked):
                        best_score = score
                        best = s
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
            if j < 0 and plain[s]:
                j = plain[s].pop()
            if j < 0:
                if blocked is None:
                    blocked = set()
                blocked.add(s)
                continue
            out[j] = b
            c = sc[s]
            m = sm[s]
            rc -= c
            rm -= m
            pool_c -= c
            pool_m -= m
            gs = vm_groups[j]
            if gs:
                if held is None:
                    held = {}
                for g in gs:
                    held[g] = held.get(g, 0) + 1
            count[s] -= 1
            if count[s] == 0:
                active.remove(s)
                if not active:
                    return out
        if pool_c > left_c or pool_m > left_m:
            return None
    return out if not active else None

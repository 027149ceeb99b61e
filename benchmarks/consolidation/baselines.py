"""Baselines, written for this benchmark from the public descriptions of each
algorithm (no code was taken from the projects named).

Every baseline works on the same simulated cluster as the planner (usable
capacity after headroom, anti-affinity respected on every placement,
non-migratable VMs and must-stay-on hosts left alone) and returns a target
placement plus the hosts it powers off. ``plan_from_target`` turns that into
steps: a VM moved several times counts once (its net move), moves are ordered
by the planner's safe orderer, and any detour that ordering needs is a real,
counted migration. That is generous to baselines that, in real life, execute
their moves over several loops.

- ``ffd``: first-fit decreasing repack from scratch. VMs largest first (sum
  of the two normalised dimensions); hosts in order of current load, heaviest
  first, so a VM often lands where it already is.
- ``sercon``: OpenStack Watcher's basic consolidation (Sercon). Hosts are
  scored by utilisation; the least loaded host is emptied onto the most
  loaded ones (first fit, VMs largest first), rolled back if not every VM
  fits; stops when efficacy (released hosts per migration, in percent) falls
  below the target (Watcher's default 60) or after 0.8 x hosts unsuccessful
  attempts. ``sercon-nostop`` is the same loop with the efficacy stop off.
- ``watcher-vwc``: Watcher's VM-workload-consolidation. Hosts are sorted
  once by CPU utilisation; for each host from the least loaded, each VM (most
  CPU first) goes to the first host from the most loaded end that fits, as
  long as that host ranks above the source (two-pointer first fit). No
  rollback: a half-emptied host stays on. The offload phase has nothing to do
  (no host is over capacity) and is implemented only as that check.
- ``descheduler``: the descheduler's HighNodeUtilization plugin. Hosts with
  every resource below the threshold (50 percent) are underutilised; their VMs
  are evicted, least used host first, and placed by a scheduler scoring
  MostAllocated, approximated as first fit over hosts in decreasing
  allocation at the start of the run. Repeated up to 5 runs.
- ``cluster-autoscaler``: scale-down of the Kubernetes cluster autoscaler.
  A host is a candidate when max(cpu, memory) requested over allocatable is
  below 0.5; empty hosts go in bulk; a non-empty host goes only if a
  simulation places all its VMs on other hosts (first fit), one non-empty host
  at a time, candidates least utilised first, repeated until nothing changes.
- ``karpenter``: Karpenter's consolidation, deletion only (on-premises hosts
  cannot be replaced by cheaper instance types). Empty hosts first; then
  multi-node consolidation: candidates sorted by disruption cost (fewest VMs,
  then least utilised), at most 100, binary search for the longest prefix
  whose VMs all reschedule (largest first, first fit) on the remaining hosts;
  then single-node consolidation over every candidate. Repeated until no
  action is found.
- ``place-ff`` (scale-up workloads only): what a scheduler with a cluster
  autoscaler does for pending VMs on premises, and what the planner did
  before defragmentation: each pending VM, largest first, goes to the first
  host in service with room (first fit); what is left powers on standby
  hosts, largest first, and is placed on them; nothing migrates.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from stratus.core.consolidation import Action, Constraints, Host, Step, VM
from stratus.core.consolidation.ordering import Move, Unorderable, order_moves
from stratus.core.consolidation.world import World


class FirstFit:
    """Leftmost host (in a fixed order) with room for a request, in O(log n)
    per query in the usual case: a segment tree of the largest free CPU and
    free memory under each node, searched left to right with pruning."""

    def __init__(self, order: list[int], free_c: list[int], free_m: list[int]) -> None:
        self.order = order
        self.pos = {h: k for k, h in enumerate(order)}
        size = 1
        while size < max(1, len(order)):
            size *= 2
        self.size = size
        self.mc = [-1] * (2 * size)
        self.mm = [-1] * (2 * size)
        for k, h in enumerate(order):
            self.mc[size + k] = free_c[h]
            self.mm[size + k] = free_m[h]
        for p in range(size - 1, 0, -1):
            self.mc[p] = max(self.mc[2 * p], self.mc[2 * p + 1])
            self.mm[p] = max(self.mm[2 * p], self.mm[2 * p + 1])

    def set(self, h: int, fc: int, fm: int) -> None:
        p = self.pos[h] + self.size
        self.mc[p] = fc
        self.mm[p] = fm
        p //= 2
        mc, mm = self.mc, self.mm
        while p:
            mc[p] = max(mc[2 * p], mc[2 * p + 1])
            mm[p] = max(mm[2 * p], mm[2 * p + 1])
            p //= 2

    def find(self, c: int, m: int, lo: int = 0, hi: int | None = None) -> int:
        """Position of the leftmost fitting host in [lo, hi), or -1."""
        if hi is None:
            hi = len(self.order)
        mc, mm = self.mc, self.mm
        stack = [(1, 0, self.size)]
        while stack:
            node, l, r = stack.pop()
            if r <= lo or l >= hi or mc[node] < c or mm[node] < m:
                continue
            if r - l == 1:
                return l
            mid = (l + r) // 2
            stack.append((2 * node + 1, mid, r))
            stack.append((2 * node, l, mid))
        return -1


class Cluster:
    """Mutable simulation state shared by the baselines."""

    def __init__(self, hosts: tuple[Host, ...], vms: tuple[VM, ...], constraints: Constraints) -> None:
        self.world = World(hosts, vms, constraints)
        w = self.world
        self.n = len(hosts)
        self.cap_c, self.cap_m = w.cap_c, w.cap_m
        self.vm_c, self.vm_m, self.vm_groups = w.vm_c, w.vm_m, w.vm_groups
        self.vm_host = list(w.vm_host)
        self.load_c = list(w.load_c)
        self.load_m = list(w.load_m)
        self.vms_on: list[set[int]] = [set(v) for v in w.host_vms]
        self.groups: list[dict[int, int]] = [dict(g) if g else {} for g in w.host_groups]
        self.serving = w.serving_hosts()
        self.movable_host = [not w.pinned[i] for i in range(self.n)]
        self.migratable = w.vm_migratable
        self.on = [w.serving[i] and not w.cordoned[i] for i in range(self.n)]

    def free(self, i: int) -> tuple[int, int]:
        return self.cap_c[i] - self.load_c[i], self.cap_m[i] - self.load_m[i]

    def util(self, i: int) -> float:
        return max(self.load_c[i] / (self.cap_c[i] or 1), self.load_m[i] / (self.cap_m[i] or 1))

    def aa_ok(self, j: int, i: int) -> bool:
        gs = self.vm_groups[j]
        if not gs:
            return True
        here = self.groups[i]
        return not any(here.get(g, 0) > 0 for g in gs)

    def fits(self, j: int, i: int) -> bool:
        return (self.load_c[i] + self.vm_c[j] <= self.cap_c[i] and self.load_m[i] + self.vm_m[j] <= self.cap_m[i]
                and self.aa_ok(j, i))

    def move(self, j: int, i: int) -> None:
        src = self.vm_host[j]
        c, m = self.vm_c[j], self.vm_m[j]
        gs = self.vm_groups[j]
        if src >= 0:
            self.load_c[src] -= c
            self.load_m[src] -= m
            self.vms_on[src].discard(j)
            for g in gs:
                self.groups[src][g] -= 1
        self.load_c[i] += c
        self.load_m[i] += m
        self.vms_on[i].add(j)
        for g in gs:
            self.groups[i][g] = self.groups[i].get(g, 0) + 1
        self.vm_host[j] = i

    def size(self, j: int) -> float:
        return self.vm_c[j] / max(self.cap_c) + self.vm_m[j] / max(self.cap_m)

    def releasable(self, i: int) -> bool:
        return self.on[i] and self.movable_host[i]

    def find(self, ff: FirstFit, j: int, lo: int = 0, hi: int | None = None, skip: int = -1) -> int:
        """First host (in ``ff`` order) that fits VM ``j`` and its anti-affinity."""
        c, m = self.vm_c[j], self.vm_m[j]
        while True:
            p = ff.find(c, m, lo, hi)
            if p < 0:
                return -1
            h = ff.order[p]
            if h != skip and self.fits(j, h):
                return h
            lo = p + 1

    def sync(self, ff: FirstFit, i: int) -> None:
        if i in ff.pos:
            fc, fm = self.free(i) if self.on[i] else (-1, -1)
            ff.set(i, fc, fm)

    def power_off_empty(self) -> list[int]:
        out = []
        for i in self.serving:
            if self.on[i] and self.movable_host[i] and not self.vms_on[i]:
                self.on[i] = False
                out.append(i)
        return out


# -- the baselines -------------------------------------------------------------------------


def ffd(cl: Cluster) -> None:
    w = cl.world
    hosts = sorted(cl.serving, key=lambda i: (-(cl.load_c[i] / (cl.cap_c[i] or 1) + cl.load_m[i] / (cl.cap_m[i] or 1)), i))
    movable = [j for i in cl.serving for j in sorted(cl.vms_on[i]) if cl.migratable[j] and cl.movable_host[i]]
    # Empty every movable VM out of the simulation, then repack.
    for j in movable:
        i = cl.vm_host[j]
        cl.load_c[i] -= cl.vm_c[j]
        cl.load_m[i] -= cl.vm_m[j]
        cl.vms_on[i].discard(j)
        for g in cl.vm_groups[j]:
            cl.groups[i][g] -= 1
        cl.vm_host[j] = -1
    ff = FirstFit(hosts, [cl.free(i)[0] for i in range(cl.n)], [cl.free(i)[1] for i in range(cl.n)])
    original = w.vm_host
    for j in sorted(movable, key=lambda j: (-cl.size(j), j)):
        h = cl.find(ff, j)
        if h < 0:  # cannot happen when the start state was valid; keep the VM home
            h = original[j]
        cl.move(j, h)
        cl.sync(ff, h)
    cl.power_off_empty()


def sercon(cl: Cluster, target_efficacy: int = 60) -> None:
    released = migrations = 0
    unsuccessful = 0
    attempts = 0.8 * len(cl.serving)
    failed: set[int] = set()
    first = True
    cl.power_off_empty()  # Watcher disables hosts without VMs up front
    while unsuccessful <= attempts:
        if not first:
            efficacy = 100.0 * released / migrations if migrations else 0.0
            if efficacy < target_efficacy:
                break
        first = False
        busy = [i for i in cl.serving if cl.on[i] and cl.vms_on[i]]
        score = {i: (cl.load_c[i] / (cl.cap_c[i] or 1) + cl.load_m[i] / (cl.cap_m[i] or 1)) / 2 for i in busy}
        ranked = sorted(busy, key=lambda i: (-score[i], i))
        node = next((i for i in reversed(ranked) if i not in failed and cl.releasable(i)), -1)
        if node < 0:
            break
        targets = [i for i in ranked if i != node]
        ff = FirstFit(targets, [cl.free(i)[0] for i in range(cl.n)], [cl.free(i)[1] for i in range(cl.n)])
        done: list[tuple[int, int]] = []
        ok = True
        for j in sorted(cl.vms_on[node], key=lambda j: (-cl.size(j), j)):
            h = cl.find(ff, j)
            if h < 0:
                ok = False
                break
            cl.move(j, h)
            cl.sync(ff, h)
            done.append((j, node))
        if not ok:
            for j, src in reversed(done):
                cl.move(j, src)
            failed.add(node)
            unsuccessful += 1
            continue
        migrations += len(done)
        released += 1
        cl.on[node] = False


def sercon_nostop(cl: Cluster) -> None:
    sercon(cl, target_efficacy=0)


def watcher_vwc(cl: Cluster) -> None:
    # Offload phase: hosts over capacity shed VMs. None are in these workloads.
    nodes = sorted(cl.serving, key=lambda i: (cl.load_c[i] / (cl.cap_c[i] or 1), cl.load_m[i] / (cl.cap_m[i] or 1), i))
    rev = list(reversed(nodes))
    n = len(nodes)
    ff = FirstFit(rev, [cl.free(i)[0] for i in range(cl.n)], [cl.free(i)[1] for i in range(cl.n)])
    for a, node in enumerate(nodes):
        limit = n - 1 - a  # positions in ``rev`` that rank above ``node``
        if limit <= 0:
            break
        if not cl.releasable(node):
            continue
        for j in sorted(cl.vms_on[node], key=lambda j: (-cl.vm_c[j], j)):
            if not cl.migratable[j]:
                continue
            h = cl.find(ff, j, 0, limit)
            if h >= 0:
                cl.move(j, h)
                cl.sync(ff, h)
                cl.sync(ff, node)
    cl.power_off_empty()


def descheduler(cl: Cluster, threshold: int = 50, runs: int = 5) -> None:
    for _ in range(runs):
        under = [i for i in cl.serving if cl.on[i] and cl.releasable(i) and cl.vms_on[i]
                 and cl.load_c[i] * 100 < threshold * cl.cap_c[i] and cl.load_m[i] * 100 < threshold * cl.cap_m[i]]
        if not under:
            break
        order = sorted((i for i in cl.serving if cl.on[i]), key=lambda i: (-cl.util(i), i))
        ff = FirstFit(order, [cl.free(i)[0] for i in range(cl.n)], [cl.free(i)[1] for i in range(cl.n)])
        changed = False
        for node in sorted(under, key=lambda i: (cl.util(i), i)):
            ff.set(node, -1, -1)
            for j in sorted(cl.vms_on[node], key=lambda j: (-cl.size(j), j)):
                if not cl.migratable[j]:
                    continue
                h = cl.find(ff, j)
                if h >= 0:
                    cl.move(j, h)
                    cl.sync(ff, h)
                    changed = True
            cl.sync(ff, node)
        if not changed:
            break
    cl.power_off_empty()


def _simulate(cl: Cluster, ff: FirstFit, nodes: list[int], order_vms: Callable[[list[int]], list[int]]) -> list | None:
    """Take ``nodes`` out and place their VMs on the rest; undo on failure."""
    for i in nodes:
        ff.set(i, -1, -1)
    vms = order_vms([j for i in nodes for j in cl.vms_on[i]])
    done: list[tuple[int, int]] = []
    for j in vms:
        if not cl.migratable[j]:
            h = -1
        else:
            h = cl.find(ff, j)
        if h < 0:
            for jj, src in reversed(done):
                dst = cl.vm_host[jj]
                cl.move(jj, src)
                cl.sync(ff, dst)
            for i in nodes:
                cl.sync(ff, i)
            return None
        src = cl.vm_host[j]
        cl.move(j, h)
        cl.sync(ff, h)
        done.append((j, src))
    return done


def cluster_autoscaler(cl: Cluster, threshold: float = 0.5) -> None:
    ff = FirstFit(sorted(cl.serving), [cl.free(i)[0] for i in range(cl.n)], [cl.free(i)[1] for i in range(cl.n)])
    failed: set[int] = set()
    version = [0] * cl.n
    heap = [(cl.util(i), i, 0) for i in cl.serving if cl.releasable(i)]
    heapq.heapify(heap)

    def by_size(vms: list[int]) -> list[int]:
        return sorted(vms, key=lambda j: (-cl.size(j), j))

    while True:
        for i in cl.power_off_empty():
            ff.set(i, -1, -1)
        progressed = False
        while heap:
            u, i, v = heapq.heappop(heap)
            if v != version[i] or not cl.on[i] or i in failed:
                continue
            if u >= threshold:
                heap.clear()
                break
            done = _simulate(cl, ff, [i], by_size)
            if done is None:
                failed.add(i)
                continue
            cl.on[i] = False
            ff.set(i, -1, -1)
            for j, _ in done:
                h = cl.vm_host[j]
                version[h] += 1
                heapq.heappush(heap, (cl.util(h), h, version[h]))
            progressed = True
            break
        if not progressed:
            break
    cl.power_off_empty()


def karpenter(cl: Cluster, max_candidates: int = 100) -> None:
    ff = FirstFit(sorted(cl.serving), [cl.free(i)[0] for i in range(cl.n)], [cl.free(i)[1] for i in range(cl.n)])

    def by_size(vms: list[int]) -> list[int]:
        return sorted(vms, key=lambda j: (-cl.vm_c[j], -cl.vm_m[j], j))

    def undo(done, nodes):
        for jj, src in reversed(done):
            dst = cl.vm_host[jj]
            cl.move(jj, src)
            cl.sync(ff, dst)
        for i in nodes:
            cl.sync(ff, i)

    while True:
        for i in cl.power_off_empty():
            ff.set(i, -1, -1)
        cands = sorted((i for i in cl.serving if cl.on[i] and cl.releasable(i) and cl.vms_on[i]
                        and all(cl.migratable[j] for j in cl.vms_on[i])),
                       key=lambda i: (len(cl.vms_on[i]), cl.util(i), i))
        if not cands:
            break
        window = cands[:max_candidates]
        lo, hi, best = 1, len(window), 0
        while lo <= hi:
            mid = (lo + hi) // 2
            done = _simulate(cl, ff, window[:mid], by_size)
            if done is not None:
                best = mid
                undo(done, window[:mid])
                lo = mid + 1
            else:
                hi = mid - 1
        if best >= 1:
            done = _simulate(cl, ff, window[:best], by_size)
            if done is not None:
                for i in window[:best]:
                    cl.on[i] = False
                    ff.set(i, -1, -1)
                continue
        acted = False
        for i in cands:
            done = _simulate(cl, ff, [i], by_size)
            if done is not None:
                cl.on[i] = False
                ff.set(i, -1, -1)
                acted = True
                break
        if not acted:
            break


BASELINES: dict[str, Callable[[Cluster], None]] = {
    "ffd": ffd,
    "sercon": sercon,
    "sercon-nostop": sercon_nostop,
    "watcher-vwc": watcher_vwc,
    "descheduler": descheduler,
    "cluster-autoscaler": cluster_autoscaler,
    "karpenter": karpenter,
}


def plan_from_target(world: World, vm_host: list[int], off: list[int]) -> tuple[list[Step], int]:
    """Steps that take ``world`` to the target placement, then power ``off``.
    Returns (steps, detours)."""
    moves = [Move(j, world.vm_host[j], t) for j, t in enumerate(vm_host) if t != world.vm_host[j] and t >= 0]
    hosts, vms = world.hosts, world.vms
    try:
        waves = order_moves(world, moves, allow_detours=True)
    except Unorderable:  # no safe order exists: emit them one by one, the checker flags the bad ones
        waves = [[mv] for mv in moves]
    steps: list[Step] = []
    wave = 0
    for group in waves:
        for mv in group:
            steps.append(Step(Action.MIGRATE, hosts[mv.target].name, vm=vms[mv.vm].name,
                              source=hosts[mv.source].name, wave=wave))
        wave += 1
    steps.extend(Step(Action.POWER_OFF, hosts[i].name, wave=wave) for i in sorted(off))
    detours = sum(len(g) for g in waves) - len(moves)
    return steps, detours


def run_baseline(name: str, hosts, vms, constraints) -> tuple[list[Step], int]:
    cl = Cluster(hosts, vms, constraints)
    BASELINES[name](cl)
    off = [i for i in cl.serving if not cl.on[i]]
    return plan_from_target(cl.world, cl.vm_host, off)


def place_ff(hosts, vms, constraints) -> list[Step]:
    """The ``place-ff`` scale-up baseline: steps (power on, place)."""
    cl = Cluster(hosts, vms, constraints)
    w = cl.world
    order = sorted(cl.serving, key=lambda i: i)
    pending = sorted((j for j, h in enumerate(cl.vm_host) if h < 0), key=lambda j: (-cl.size(j), j))
    ff = FirstFit(order, [cl.free(i)[0] for i in range(cl.n)], [cl.free(i)[1] for i in range(cl.n)])
    placed: list[tuple[int, int]] = []
    left = []
    for j in pending:
        h = cl.find(ff, j)
        if h < 0:
            left.append(j)
            continue
        cl.move(j, h)
        cl.sync(ff, h)
        placed.append((j, h))
    woken = []
    standby = sorted((i for i in range(cl.n) if w.wakeable[i]), key=lambda i: (-(cl.cap_c[i] + cl.cap_m[i]), i))
    for i in standby:
        if not left:
            break
        got = []
        for j in left:
            if cl.fits(j, i):
                cl.move(j, i)
                got.append(j)
        if got:
            woken.append(i)
            placed += [(j, i) for j in got]
            left = [j for j in left if j not in set(got)]
    steps = [Step(Action.POWER_ON, w.hosts[i].name, wave=0) for i in woken]
    wave = 1 if woken else 0
    steps += [Step(Action.PLACE, w.hosts[h].name, vm=w.vms[j].name, wave=wave) for j, h in placed]
    return steps

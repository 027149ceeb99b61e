"""The consolidation planner: ``plan(hosts, vms, constraints, mode=None) -> Plan``.

Decisions:

- Modes. Without an explicit mode the planner scales up when VMs are pending,
  when utilisation is above the high watermark, or when fewer than
  ``min_free_hosts`` empty hosts are on and a standby host could fix that.
  Otherwise, with the ``savings`` trigger (the default), it scales down
  whenever the best scale-down plan pays for itself (``Constraints``: at most
  ``max_migrations_per_host`` migrations per host released, or, with the
  power objective, at least ``min_watts_per_migration`` watts saved per
  migration) and holds otherwise, saying so: reason ``SavingAboveFloor``,
  ``SavingBelowFloor`` (with the best plan's figures in the message) or
  ``NoSaving``. With the ``watermarks`` trigger it scales down below the low
  watermark only (reason ``LowUtilisation``, else ``WithinWatermarks``).
  If the chosen scale-up finds nothing to do (a pending VM fits nowhere),
  scale-down still gets its turn, so one impossible VM cannot stall
  consolidation. With the floor on, a host-by-host search that skips every
  host not worth its own migrations is a candidate too, so a plan that pays
  in part is found when the whole one would not.
- Candidates, and the best of them. Scale-down gathers the plans of every
  search below (prefix, host by host, reshaping, exact, shape exchange),
  orders them by the objective (hosts: most hosts off net of hosts powered
  on, then fewest migrations, fewest MiB, fewest watts; power: fewest
  estimated watts, then the same) and takes the first one the independent
  checker (``checker.check_plan``) accepts when replayed as it would run.
  Only candidates better than doing nothing are considered.
- Hosts the rankings miss (``hostwise``). A host holding a VM that fits in
  no other host's free room is *stuck*: the prefix searches keep it (it is
  treated as pinned there), because with it in the released tail every
  prefix fails and the search used to give up with nothing. The reshaping
  searches still rank it (a kept host may make room by handing VMs on). A
  host-by-host search, as Karpenter's and the cluster autoscaler's, runs
  from the start state as a candidate of its own, and again after the best
  prefix plan to release what that left behind.
- Shape exchange. When standby hosts exist of a shape larger than some
  active host (the largest; with the power objective, the one that idles
  cheapest per unit of room), the planner also plans with one of them, and
  with as many as the smaller active hosts' load needs, powered on and kept,
  releasing the smallest hosts first. The plan powers on only the standby
  hosts that receive VMs and competes with the others on the objective, its
  migrations counted like any other's (and against the savings floor), so
  it is taken only when it releases more hosts net (or saves watts).
- Scale-down first only moves VMs off the hosts it releases and only onto
  hosts that stay on. Every migration then frees room on a host that is going
  away and fills a host that only ever grows, so the plan is safe in any
  order (one wave) and its migrations are exactly the VMs of the released
  hosts. Which hosts to release: hosts are ranked for keeping (pinned hosts
  first: must-stay-on, cordoned, or running a non-migratable VM; then the
  rest), and the planner looks for the shortest prefix of the ranking whose
  free room takes the VMs of all other hosts (``packing.fill``), starting
  from the prefix whose capacity just covers the demand, doubling, then
  bisecting. A post-pass then tries to empty a few more of the kept hosts one
  by one. Rankings tried: by VMs hosted (most kept, so releases cost the
  fewest migrations) and by memory hosted (fewest MiB moved), each packed
  both by alignment and by dot product (``packing``: alignment wins on host
  count, the dot product sometimes on migrations with one host shape).
- Reshaping. When that keeps more hosts than the capacity floor, a second
  search lets the kept hosts hand on VMs of the wrong shape as well
  (``packing``, ``movable``): with mixed host shapes the VMs already on a
  kept host often leave it room of a shape nothing fits (a CPU-rich host
  whose free room is all memory). The ranking here is shape-balanced (every
  prefix's capacity points the way demand does). These plans move some VMs
  between kept hosts, in more than one wave; the packing sends VMs only to
  hosts later in its fill order, so the moves have no cycle and order
  without detours.
- Effort follows size. Up to ``_THOROUGH_HOSTS`` serving hosts (where one
  packing costs well under a millisecond per host) the planner also tries the
  shape-aware rankings without reshaping, and reshapes with every ranking and
  several packer settings; above it, the two rankings, both packers, and one
  reshaping search on the shape-balanced ranking, which keeps 5,000 hosts
  within seconds. On 20 hosts one host is 5 to 8 percent, and one setting
  alone missed the optimum by a host.
- With the hosts objective the winner powers off the most hosts, then needs
  the fewest migrations, then the fewest MiB. Migrations are counted before MiB because every live
  migration carries a fixed cost (set-up, the switch-over pause, a window of
  reduced redundancy) that dominates for the small VMs most fleets are made
  of; memory, the VM's migration cost, breaks ties. Host count comes first
  because that is what the cycle is for; the reshaping packer's keep rule
  (``keep_slack``) bounds what an extra host may cost in migrations.
  Scale-down never leaves utilisation above the high watermark, so it cannot
  trigger the next cycle's scale-up.
- Migration budget. If the best plan needs more migrations than
  ``max_migrations``, hosts are released in order of fewest VMs (most hosts
  freed per migration) and the longest feasible run that fits the budget is
  taken (without reshaping); the host-by-host search, which skips hosts that
  would go over the budget, competes with it. The plan says ``truncated``; the next cycle
  continues from there. A plan that spent part of its budget on an earlier
  round (placing pending VMs, say) and could release nothing more with the
  rest is truncated too; one that cannot release a host even with the whole
  budget is not (the next cycle could do no better).
- Scale-up places pending VMs on serving hosts first (best fit: least room
  left over), then powers on standby hosts: the smallest one that takes all
  remaining VMs, otherwise the one that takes the most, repeatedly. What is
  still pending is placed by defragmentation where possible
  (``_defragment``: evict smaller VMs from one host to others, fewest
  evictions first, within the migration budget). VMs that fit nowhere are
  listed in ``unplaced`` with a reason each: ``TooLarge`` (larger than the
  usable room of every host in service or standby: provably unplaceable) or
  ``NoRoom`` (no hole found within the budget). It then powers on hosts while
  utilisation stays above the high watermark, and to restore the free-host
  reserve (largest hosts first).
- No churn, by construction. A planning step is a pure function of the state
  (power and placement) with every tie broken by input position. ``plan``
  applies its own step and plans again, until a step comes back empty (or the
  budget is spent), and returns the composition of those steps from the
  original state. The state the plan leads to is therefore one on which the
  same planner returns an empty plan. Composition also cancels a VM moved
  twice into one move. Moves composed from several reshaping rounds may form
  a cycle that no single round had; ordering then breaks it with a detour
  (one extra migration, counted in the figures).
- Tiny clusters additionally get an exact search (``exact``) in which any VM
  may move anywhere; its plan is used when it is better and can be ordered
  safely without detours.
- The apply-and-replan loop is capped at 16 rounds as a guard; in practice
  it ends after two or three.
"""

from __future__ import annotations

from collections.abc import Sequence

import heapq
from dataclasses import replace

from .checker import check_plan
from .exact import exact_scale_down, small_enough
from .hostwise import RoomIndex, release_each
from .model import Action, Constraints, Figures, Host, Mode, Objective, Plan, Step, Trigger, VM
from .ordering import Move, Unorderable, order_moves
from .packing import fill
from .world import Loads, World

_MAX_ROUNDS = 16


class _Step:
    __slots__ = ("power_on", "moves", "power_off", "truncated")

    def __init__(self, power_on=(), moves=None, power_off=(), truncated=False):
        self.power_on = list(power_on)
        self.moves: dict[int, int] = moves or {}
        self.power_off = list(power_off)
        self.truncated = truncated

    @property
    def empty(self) -> bool:
        return not (self.power_on or self.moves or self.power_off)


def plan(
    hosts: Sequence[Host],
    vms: Sequence[VM],
    constraints: Constraints | None = None,
    mode: Mode | None = None,
) -> Plan:
    """Plan one consolidation cycle. Pure: no I/O, deterministic."""
    constraints = constraints or Constraints()
    w0 = World(hosts, vms, constraints)
    serving = list(w0.serving)
    vm_host = list(w0.vm_host)
    world = w0
    first_mode: Mode | None = None
    first_reason = first_note = ""
    truncated = False
    for _ in range(_MAX_ROUNDS):
        used = sum(1 for j, h in enumerate(vm_host) if h != w0.vm_host[j] and w0.vm_host[j] >= 0)
        left = None if constraints.max_migrations is None else constraints.max_migrations - used
        chosen, reason, note, step = _step(world, mode, left)
        if first_mode is None:
            first_mode, first_reason, first_note = chosen, reason, note
        if step.empty:
            # A step the budget emptied still leaves work for the next cycle.
            truncated = truncated or step.truncated
            break
        for i in step.power_on:
            serving[i] = True
        for j, i in step.moves.items():
            vm_host[j] = i
        for i in step.power_off:
            serving[i] = False
        world = World(hosts, vms, constraints, serving, vm_host)
        if step.truncated:
            truncated = True
            break
    return _compose(w0, world, first_mode or Mode.HOLD, first_reason, truncated, first_note)


def lower_bound(hosts: Sequence[Host], vms: Sequence[VM], constraints: Constraints | None = None) -> int:
    """Fewest powered-on hosts that could run the placed VMs: the larger of the
    per-dimension capacity bounds (largest usable hosts first), the VMs too big
    to share a host, the largest anti-affinity group, and the hosts that are
    pinned on (must stay on, cordoned and on, or running a non-migratable VM)
    plus the hosts the demand their room cannot take needs."""
    return _lower_bound(World(hosts, vms, constraints or Constraints()))


# -- one step --------------------------------------------------------------------------


def _step(world: World, mode: Mode | None, budget: int | None) -> tuple[Mode, str, str, _Step]:
    """(mode, reason, note, step): ``note`` says why a scale-down did or did not act."""
    if mode is Mode.SCALE_UP:
        return Mode.SCALE_UP, "Requested", "", _scale_up(world, budget)
    if mode is Mode.SCALE_DOWN:
        step, _, note = _scale_down(world, budget)
        return Mode.SCALE_DOWN, "Requested", note, step
    if mode is Mode.HOLD:
        return Mode.HOLD, "Requested", "", _Step()
    c = world.constraints
    util = world.utilisation_permille()
    wants_up = None
    if any(h < 0 for h in world.vm_host):
        wants_up = "PendingVMs"
    elif util > c.high_watermark_percent * 10:
        wants_up = "HighUtilisation"
    elif world.free_serving() < c.min_free_hosts and any(world.wakeable):
        wants_up = "FreeHostReserve"
    up_truncated = False
    if wants_up:
        step = _scale_up(world, budget)
        if not step.empty:
            return Mode.SCALE_UP, wants_up, "", step
        up_truncated = step.truncated
    if c.trigger is Trigger.WATERMARKS:
        if util < c.low_watermark_percent * 10:
            step, _, note = _scale_down(world, budget)
            if not step.empty or not wants_up:
                return Mode.SCALE_DOWN, "LowUtilisation", note, step
        if wants_up:
            return Mode.SCALE_UP, wants_up, "", _Step(truncated=up_truncated)
        return Mode.HOLD, "WithinWatermarks", "utilisation is between the watermarks", _Step()
    # Savings: act whenever the best plan pays for itself.
    step, verdict, note = _scale_down(world, budget, floor=True)
    if not step.empty:
        return Mode.SCALE_DOWN, "SavingAboveFloor", note, step
    if wants_up:
        return Mode.SCALE_UP, wants_up, note, _Step(truncated=step.truncated or up_truncated)
    if verdict == "below":
        return Mode.HOLD, "SavingBelowFloor", note, step
    return Mode.HOLD, "NoSaving", note, step


# -- scale-down ---------------------------------------------------------------------------


class _Cand:
    """One scale-down candidate: hosts to power on (a shape exchange), moves,
    hosts to power off, with the figures the objective compares."""

    __slots__ = ("power_on", "moves", "off", "truncated", "migrations", "mib", "net_off", "watts", "source")

    def __init__(self, world: World, moves: dict[int, int], off: list[int], power_on=(), truncated=False,
                 source: str = "") -> None:
        self.power_on = list(power_on)
        self.moves = moves
        self.off = list(off)
        self.truncated = truncated
        self.source = source
        self.migrations = sum(1 for j in moves if world.vm_host[j] >= 0)
        self.mib = sum(world.vm_m[j] for j in moves if world.vm_host[j] >= 0)
        self.net_off = len(self.off) - len(self.power_on)
        self.watts = _watts_after(world, moves, self.off, self.power_on)

    def key(self, objective: Objective) -> tuple:
        if objective is Objective.POWER:
            return (self.watts, -self.net_off, self.migrations, self.mib)
        return (-self.net_off, self.migrations, self.mib, self.watts)


def _watts_after(world: World, moves: dict[int, int], off: list[int], power_on) -> int:
    """The estimated draw after ``moves`` and the power changes (``World.watts``
    with loads adjusted)."""
    delta: dict[int, int] = {}
    vm_host, vm_c = world.vm_host, world.vm_c
    for j, t in moves.items():
        delta[t] = delta.get(t, 0) + vm_c[j]
        src = vm_host[j]
        if src >= 0:
            delta[src] = delta.get(src, 0) - vm_c[j]
    total = world.watts()
    gone = set(off)
    for i in gone:
        total -= world.host_watts(i, world.load_c[i])
    for i in power_on:
        total += world.host_watts(i, world.load_c[i] + delta.get(i, 0))
    on = set(power_on)
    for i, d in delta.items():
        if i in gone or i in on:
            continue
        total += world.host_watts(i, world.load_c[i] + d) - world.host_watts(i, world.load_c[i])
    return total


def _scale_down(world: World, budget: int | None, floor: bool = False) -> tuple[_Step, str, str]:
    """The best scale-down candidate that the checker accepts (and, with
    ``floor``, that pays for itself): (step, verdict, note). The verdict is
    "acted", "below" (plans exist, none pays) or "none"."""
    cands = _down_candidates(world, budget, floor)
    objective = world.constraints.objective
    base = _Cand(world, {}, [])
    useful = sorted((c for c in cands if c.key(objective) < base.key(objective)), key=lambda c: c.key(objective))
    if floor:
        paying = [c for c in useful if _pays(world, base, c)]
        if useful and not paying:
            return _Step(), "below", _saving_note(world, base, useful[0], below=True)
        useful = paying
    for cand in useful:
        if _valid(world, cand):
            return (_Step(power_on=cand.power_on, moves=cand.moves, power_off=cand.off, truncated=cand.truncated),
                    "acted", _saving_note(world, base, cand))
    truncated = any(c.truncated for c in cands)
    spent = budget is not None and budget < (world.constraints.max_migrations or 0)
    return _Step(truncated=truncated and spent), "none", "no plan powers a host off" + (
        "" if objective is Objective.HOSTS else " or saves power")


def _pays(world: World, base: _Cand, cand: _Cand) -> bool:
    """Whether a candidate's saving beats its cost (``Constraints``)."""
    c = world.constraints
    saved = base.watts - cand.watts
    if c.objective is Objective.POWER:
        return saved > 0 and saved >= c.min_watts_per_migration * cand.migrations
    return cand.net_off > 0 and cand.migrations <= c.max_migrations_per_host * cand.net_off


def _saving_note(world: World, base: _Cand, cand: _Cand, below: bool = False) -> str:
    c = world.constraints
    saved = base.watts - cand.watts
    what = f"{cand.net_off} hosts off, {saved} W ({saved * 24 / 1000:.1f} kWh/day) saved for {cand.migrations} migrations"
    if c.objective is Objective.POWER:
        rate = f"{saved / cand.migrations:.0f} W per migration" if cand.migrations else "no migration"
        floor = f"at least {c.min_watts_per_migration} W per migration"
    else:
        rate = (f"{cand.migrations / cand.net_off:.1f} migrations per host" if cand.net_off > 0
                else "no host released")
        floor = f"at most {c.max_migrations_per_host} per host"
    if below:
        return f"the best plan ({what}: {rate}) does not pay for itself ({floor})"
    return f"{what} ({rate}; floor: {floor})"


def _down_candidates(world: World, budget: int | None, floor: bool = False) -> list[_Cand]:
    """Every scale-down plan the searches find (module docstring)."""
    serving = world.serving_hosts()
    fixed = [i for i in serving if world.pinned[i]]
    movable_hosts = [i for i in serving if not world.pinned[i]]
    if not movable_hosts:
        return []
    # Hosts holding a VM that fits in no other host's free room can only be
    # kept by the searches that move VMs off released hosts alone; ranking them
    # for release makes every prefix fail (issue: "gives up too early").
    stuck = _stuck(world, serving, movable_hosts)
    out: list[_Cand] = []
    found_all = _down_searches(world, fixed, movable_hosts, stuck, budget)
    for found, source in found_all:
        out.append(_Cand(world, found[3], found[4], truncated=found[6] if len(found) > 6 else False, source=source))
    # Karpenter-style: host by host from the start state.
    each = release_each(world, serving, set(fixed), budget=budget)
    if each is not None:
        out.append(_Cand(world, each[3], each[4], source="hostwise"))
    if floor:
        # Host by host again, skipping every host that does not pay on its own:
        # the plan that releases what pays when the whole plan would not.
        c = world.constraints
        if c.objective is Objective.POWER:
            def worth(h: int, n: int) -> bool:
                # Its VMs' dynamic draw moves with them: the idle draw is saved.
                return world.idle_w[h] >= c.min_watts_per_migration * n
        else:
            def worth(h: int, n: int) -> bool:
                return n <= c.max_migrations_per_host
        each = release_each(world, serving, set(fixed), budget=budget, worth=worth)
        if each is not None:
            out.append(_Cand(world, each[3], each[4], source="hostwise-paying"))
    if small_enough(world):
        exact = exact_scale_down(world, budget)
        if exact is not None:
            moves, off = exact
            try:
                order_moves(world, [Move(j, world.vm_host[j], t) for j, t in moves.items()], allow_detours=False)
            except Unorderable:
                pass
            else:
                out.append(_Cand(world, moves, off, source="exact"))
    best = min(out, key=lambda c: c.key(world.constraints.objective), default=None)
    out.extend(_exchanges(world, budget, best))
    if any(c.truncated for c in out):
        # Some search found more than the budget allows: whatever wins, the
        # next cycle has work left.
        for c in out:
            c.truncated = True
    return out


def _down_searches(world: World, pinned: list[int], movable: list[int], stuck: set[int], budget: int | None):
    """The prefix searches (with the host-by-host post-pass) and the reshaping
    searches: a list of (outcome, source). Hosts in ``stuck`` are kept by the
    prefix searches (they only move VMs off released hosts) and ranked like
    the others by the reshaping ones (a kept host may make room by handing
    VMs on)."""
    out = []
    fixed = pinned + [i for i in movable if i in stuck]
    cands = [i for i in movable if i not in stuck]
    serving = world.serving_hosts()
    cap_c, cap_m, load_m = world.cap_c, world.cap_m, world.load_m
    host_vms = world.host_vms
    ref_c = max(cap_c[i] for i in serving) or 1
    ref_m = max(cap_m[i] for i in serving) or 1

    def capacity(i: int) -> float:
        return cap_c[i] / ref_c + cap_m[i] / ref_m

    by_count = sorted(cands, key=lambda i: (-len(host_vms[i]), -load_m[i], -capacity(i), i))
    orders = [sorted(cands, key=lambda i: (-load_m[i], -capacity(i), i)), by_count]
    if world.constraints.objective is Objective.POWER and len({(world.idle_w[i], cap_c[i], cap_m[i]) for i in cands}) > 1:
        # Keep the hosts that idle cheapest for their size.
        orders.append(sorted(cands, key=lambda i: (world.idle_w[i] / capacity(i), -load_m[i], i)))
    # The ranking a reshaping search uses: with mixed shapes, the balanced one.
    reshape_order = by_count
    thorough = len(serving) <= _THOROUGH_HOSTS
    if len({(cap_c[i], cap_m[i]) for i in cands}) > 1:
        reshape_order = _balanced_order(world, fixed, cands)
        if thorough:
            # Small clusters also try the shape-aware rankings without reshaping:
            # balanced, largest hosts first, most loaded (by fraction) first.
            orders.append(reshape_order)
            orders.append(sorted(cands, key=lambda i: (-capacity(i), -load_m[i], i)))
            orders.append(sorted(cands, key=lambda i: (-max(world.load_c[i] / (cap_c[i] or 1),
                                                            load_m[i] / (cap_m[i] or 1)), -capacity(i), i)))
    objective = world.constraints.objective

    def better(a, b) -> bool:
        return b is None or (-a[0], a[1], a[2]) < (-b[0], b[1], b[2])

    best = None
    for order in orders:
        for align in (True, False):
            found = _search_prefix(world, fixed, order, align)
            if found is not None:
                found = _release_more(world, fixed, found, align)
                if objective is Objective.POWER:
                    out.append((found, "prefix"))
                if better(found, best):
                    best = found
    in_place = best
    if best is not None:
        more = release_each(world, best[5], set(fixed), best[3], best[4])
        if more is not None and more[0] > best[0]:
            best = more
        out.append((best, "prefix"))
    if stuck:
        # The reshaping searches rank every movable host.
        fixed, cands = pinned, movable
        by_count = sorted(cands, key=lambda i: (-len(host_vms[i]), -load_m[i], -capacity(i), i))
        orders = [sorted(cands, key=lambda i: (-load_m[i], -capacity(i), i)), by_count]
        reshape_order = by_count
        if len({(cap_c[i], cap_m[i]) for i in cands}) > 1:
            reshape_order = _balanced_order(world, fixed, cands)
    if thorough:
        rankings = [reshape_order] + [o for o in orders[:2] if o != reshape_order]
        variants = [(o, how) for o in rankings for how in _THOROUGH]
    else:
        variants = [(reshape_order, _Reshape())]
    for order, how in variants:
        reshaped = _search_reshape(world, fixed, order, in_place, how)
        if reshaped is not None:
            out.append((reshaped, "reshape"))
    if budget is not None:
        over = [f for f, _ in out if f[1] > budget]
        if over or not out:
            out = [(f, s) for f, s in out if f[1] <= budget]
            limited = _search_budget(world, fixed, by_count, budget)
            if limited is not None:
                out.append((limited + (True,), "budget"))
            elif over:
                # Nothing fits the budget: the caller reports it as truncated.
                out.append(((0, 0, 0, {}, [], [], True), "budget"))
    return [(f, s) for f, s in out if f[0] > 0 or (len(f) > 6 and f[6])]


def _stuck(world: World, serving: list[int], hosts: list[int]) -> set[int]:
    """Hosts among ``hosts`` that hold a VM fitting in no other serving host's
    free room (capacity only)."""
    cap_c, cap_m, load_c, load_m = world.cap_c, world.cap_m, world.load_c, world.load_m
    rooms = sorted(((cap_c[i] - load_c[i], cap_m[i] - load_m[i], i) for i in serving), reverse=True)
    shapes: dict[int, list[int]] = {}
    for i in hosts:
        for j in world.host_vms[i]:
            shapes.setdefault(world.vm_shape[j], []).append(i)
    out: set[int] = set()
    for s, on in shapes.items():
        c, m = world.shape_c[s], world.shape_m[s]
        fits: list[int] = []
        for rc, rm, i in rooms:
            if rc < c:
                break
            if rm >= m:
                fits.append(i)
                if len(fits) == 2:
                    break
        if len(fits) == 2:
            continue
        for i in on:
            if not fits or fits == [i]:
                out.add(i)
    return out


def _exchanges(world: World, budget: int | None, best: _Cand | None) -> list[_Cand]:
    """Shape exchange: power on standby hosts of a larger shape when that lets
    more (or costlier) active hosts go off (module docstring)."""
    n = len(world.hosts)
    wake = [i for i in range(n) if world.wakeable[i]]
    serving = world.serving_hosts()
    movable = [i for i in serving if not world.pinned[i]]
    if not wake or not movable:
        return []
    cap_c, cap_m = world.cap_c, world.cap_m
    objective = world.constraints.objective
    small = min(cap_c[i] + cap_m[i] for i in movable)
    # One shape of standby host: the largest (power objective: the one that
    # idles cheapest per unit of room), of those larger than some active host.
    by_shape: dict[tuple[int, int, int, int], list[int]] = {}
    for i in wake:
        by_shape.setdefault((cap_c[i], cap_m[i], world.idle_w[i], world.peak_w[i]), []).append(i)
    ref_c = max(cap_c[i] for i in serving + wake) or 1
    ref_m = max(cap_m[i] for i in serving + wake) or 1

    def size(shape) -> float:
        return shape[0] / ref_c + shape[1] / ref_m

    shapes = [sh for sh in by_shape if sh[0] + sh[1] > small and sh[0] and sh[1]]
    if not shapes:
        return []
    if objective is Objective.POWER:
        shape = min(shapes, key=lambda sh: (sh[2] / size(sh), -size(sh)))
    else:
        shape = max(shapes, key=lambda sh: (size(sh), -sh[2]))
    pool = sorted(by_shape[shape])
    # How many: enough to take the VMs of the active hosts smaller than the shape.
    smaller = [i for i in movable if cap_c[i] <= shape[0] and cap_m[i] <= shape[1]
               and (cap_c[i], cap_m[i]) != (shape[0], shape[1])]
    if not smaller:
        return []
    need = max(-(-sum(world.load_c[i] for i in smaller) // shape[0]),
               -(-sum(world.load_m[i] for i in smaller) // shape[1]))
    out = []
    tried = set()
    for k in (1, min(len(pool), max(1, need))):
        if k in tried:
            continue
        tried.add(k)
        woken = pool[:k]
        serving_now = list(world.serving)
        for i in woken:
            serving_now[i] = True
        w2 = World(world.hosts, world.vms, world.constraints, serving_now, world.vm_host)
        # The woken hosts are kept (they are why the exchange exists).
        fixed = [i for i in w2.serving_hosts() if w2.pinned[i]] + woken
        fixed_set = set(fixed)
        cands = [i for i in w2.serving_hosts() if i not in fixed_set]
        stuck = _stuck(w2, w2.serving_hosts(), cands)
        fixed += [i for i in cands if i in stuck]
        cands = [i for i in cands if i not in stuck]
        if not cands:
            continue
        # Smallest hosts released first: they are what the exchange replaces.
        order = sorted(cands, key=lambda i: (-(cap_c[i] / ref_c + cap_m[i] / ref_m), -len(w2.host_vms[i]), i))
        found = _search_prefix(w2, fixed, order, True)
        if found is not None:
            more = release_each(w2, found[5], set(fixed), found[3], found[4])
            if more is not None and more[0] > found[0]:
                found = more
        else:
            found = release_each(w2, w2.serving_hosts(), set(fixed))
        if found is None:
            continue
        moves, off = found[3], found[4]
        used = set(moves.values())
        on = [i for i in woken if i in used]
        if not on or (budget is not None and len(moves) > budget):
            continue
        cand = _Cand(world, moves, off, power_on=on, source="exchange")
        if best is None or cand.key(objective) < best.key(objective):
            out.append(cand)
    return out


def _valid(world: World, cand: _Cand) -> bool:
    """The independent checker's verdict on a candidate, run as the plan would
    run it (power on, moves in safe waves, power off)."""
    hosts, vms = _records(world)
    start = world
    if cand.power_on:
        serving = list(world.serving)
        for i in cand.power_on:
            serving[i] = True
        start = World(world.hosts, world.vms, world.constraints, serving, world.vm_host)
    try:
        waves = order_moves(start, [Move(j, world.vm_host[j], t) for j, t in cand.moves.items()],
                            allow_detours=False)
    except Unorderable:
        return False
    steps = _steps(world, cand.power_on, waves, cand.off)
    return not check_plan(hosts, vms, world.constraints, steps)


def _records(world: World) -> tuple[list[Host], list[VM]]:
    """The world's state (power and placement) as planner input records."""
    hosts = []
    for i, h in enumerate(world.hosts):
        if world.serving[i] != h.in_service and not h.cordoned:
            h = replace(h, powered_on=world.serving[i], standby=not world.serving[i])
        hosts.append(h)
    vms = []
    for j, v in enumerate(world.vms):
        t = world.vm_host[j]
        name = None if t < 0 else world.hosts[t].name
        if name != v.host:
            v = replace(v, host=name)
        vms.append(v)
    return hosts, vms


def _steps(world: World, power_on, waves, power_off) -> list[Step]:
    hosts, vms = world.hosts, world.vms
    steps: list[Step] = []
    wave = 0
    if power_on:
        steps.extend(Step(Action.POWER_ON, hosts[i].name, wave=wave) for i in sorted(power_on, key=lambda i: hosts[i].name))
        wave += 1
    for group in waves:
        for mv in sorted(group, key=lambda mv: vms[mv.vm].name):
            if mv.source < 0:
                steps.append(Step(Action.PLACE, hosts[mv.target].name, vm=vms[mv.vm].name, wave=wave))
            else:
                steps.append(Step(Action.MIGRATE, hosts[mv.target].name, vm=vms[mv.vm].name,
                                  source=hosts[mv.source].name, wave=wave))
        wave += 1
    if power_off:
        steps.extend(Step(Action.POWER_OFF, hosts[i].name, wave=wave) for i in sorted(power_off, key=lambda i: hosts[i].name))
    return steps


def _balanced_order(world: World, fixed: list[int], cands: list[int]) -> list[int]:
    """Rank hosts so that every prefix's capacity points the way demand does.

    With mixed shapes, keeping the biggest hosts first can cover one dimension
    long before the other (CPU-rich hosts for a memory-hungry mix). Here the
    next host is always the one that raises the smaller of the two coverage
    ratios (capacity over demand) the most; within a shape the most loaded
    host comes first, so fewer VMs move.
    """
    dem_c, dem_m = world.demand()
    dem_c = dem_c or 1
    dem_m = dem_m or 1
    cov_c = sum(world.cap_c[i] for i in fixed) / dem_c
    cov_m = sum(world.cap_m[i] for i in fixed) / dem_m
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i in sorted(cands, key=lambda i: (-world.load_m[i], -world.load_c[i], i)):
        by_shape.setdefault((world.cap_c[i], world.cap_m[i]), []).append(i)
    heads = {shape: 0 for shape in by_shape}
    order: list[int] = []
    while len(order) < len(cands):
        best = None
        for shape, hosts in by_shape.items():
            k = heads[shape]
            if k >= len(hosts):
                continue
            c = cov_c + shape[0] / dem_c
            m = cov_m + shape[1] / dem_m
            key = (min(c, m), c + m, world.load_m[hosts[k]], -hosts[k])
            if best is None or key > best[0]:
                best = (key, shape)
        shape = best[1]
        i = by_shape[shape][heads[shape]]
        heads[shape] += 1
        order.append(i)
        cov_c += shape[0] / dem_c
        cov_m += shape[1] / dem_m
    return order


def _bins(world: World, kept: list[int]) -> list[int]:
    return _bins_with(world, kept, world.load_c, world.load_m)


def _bins_with(world: World, kept: list[int], load_c: list[int], load_m: list[int]) -> list[int]:
    """Hosts to fill, fullest (least room, relative to size) first."""
    cap_c, cap_m = world.cap_c, world.cap_m
    return sorted(kept, key=lambda i: ((cap_c[i] - load_c[i]) / (cap_c[i] or 1) + (cap_m[i] - load_m[i]) / (cap_m[i] or 1), i))


def _evaluate(world: World, fixed: list[int], order: list[int], m: int, reshape: _Reshape | None = None,
              align: bool = True):
    """Keep ``fixed`` and ``order[:m]``, release the rest. Returns
    (powered off, migrations, MiB moved, moves, hosts to power off, kept) or None.
    With ``reshape`` the kept hosts of ``order`` may also hand VMs on
    (``packing``); pinned hosts never do."""
    kept = fixed + order[:m]
    released = order[m:]
    reserve = _reserve_needed(world, kept)
    if len(released) <= reserve:
        return None
    pool = [j for i in released for j in world.host_vms[i]]
    if reshape is None:
        moves = fill(world, _bins(world, kept), pool, align=align)
    else:
        bins = kept if reshape.in_rank_order else _bins(world, kept)
        moves = fill(world, bins, pool, movable=set(order[:m]), keep_slack=reshape.keep_slack)
    if moves is None:
        return None
    found = _outcome(world, kept, released, moves)
    return found if found[0] > 0 else None


def _reserve_needed(world: World, kept: list[int]) -> int:
    free_kept = sum(1 for i in kept if not world.host_vms[i])
    return max(0, world.constraints.min_free_hosts - free_kept)


def _outcome(world: World, kept: list[int], released: list[int], moves: dict[int, int]):
    # Hosts kept on as the free reserve: already empty ones first, then the largest.
    targets = set(moves.values())
    free_kept = sum(1 for i in kept if not world.host_vms[i] and i not in targets)
    reserve = max(0, world.constraints.min_free_hosts - free_kept)
    cap_c, cap_m = world.cap_c, world.cap_m
    spare = set(sorted(released, key=lambda i: (1 if world.host_vms[i] else 0, -(cap_c[i] + cap_m[i]), i))[:reserve])
    off = [i for i in released if i not in spare]
    cost = sum(world.vm_m[j] for j in moves)
    return len(off), len(moves), cost, moves, off, kept


def _release_more(world: World, fixed: list[int], found, align: bool = True, attempts: int = 48,
                  patience: int = 12):
    """After the prefix search: try to empty a few more of the kept hosts,
    one at a time, into the room the others still have.

    The prefix search can only release hosts in ranking order; a host further
    up the ranking may still be easy to empty. Candidates are the kept hosts
    with the fewest VMs (after the moves), at most ``attempts`` of them, giving
    up after ``patience`` failures in a row. Still only moves VMs off hosts
    that end empty, onto hosts that stay on. Skipped when a free-host reserve
    is configured (the prefix search already accounts for it).
    """
    _, _, _, moves, off, kept = found
    if world.constraints.min_free_hosts:
        return found
    kept_set = set(kept)
    if any(world.vm_host[j] in kept_set for j in moves):
        # A reshaped packing: its moves are ordered by the fill order, which
        # emptying further hosts would no longer respect.
        return found
    state = Loads(world)
    load_c, load_m, shift = state.c, state.m, state.shift
    on: dict[int, list[int]] = {i: [j for j in world.host_vms[i]] for i in kept}
    for j, t in moves.items():
        shift(j, world.vm_host[j], t)
        on[t].append(j)
    high = world.constraints.high_watermark_percent
    dem_c, dem_m = world.demand()
    have_c = sum(world.cap_c[i] for i in kept)
    have_m = sum(world.cap_m[i] for i in kept)
    pinned = set(fixed)
    cands = sorted((i for i in kept if i not in pinned),
                   key=lambda i: (len(on[i]), load_m[i], i))[:attempts]
    misses = 0
    moves = dict(moves)
    off = list(off)
    for h in cands:
        if misses >= patience:
            break
        if ((have_c - world.cap_c[h]) * high < dem_c * 100
                or (have_m - world.cap_m[h]) * high < dem_m * 100):
            misses += 1
            continue
        kept_set.discard(h)
        bins = _bins_with(world, [i for i in kept if i in kept_set], load_c, load_m)
        got = fill(world, bins, on[h], load_c, load_m, state.groups, align=align)
        if got is None:
            kept_set.add(h)
            misses += 1
            continue
        misses = 0
        for j, t in got.items():
            shift(j, h, t)
            on[t].append(j)
            if world.vm_host[j] == t:
                moves.pop(j, None)
            else:
                moves[j] = t
        on[h] = []
        have_c -= world.cap_c[h]
        have_m -= world.cap_m[h]
        off.append(h)
    if len(off) == found[0]:
        return found
    kept = [i for i in kept if i in kept_set]
    return len(off), len(moves), sum(world.vm_m[j] for j in moves), moves, off, kept


def _watermark_floor(world: World, fixed: list[int], order: list[int]) -> int:
    """Shortest prefix whose capacity keeps utilisation at or below the high watermark."""
    high = world.constraints.high_watermark_percent
    dem_c, dem_m = world.demand()
    need_c = dem_c * 100
    need_m = dem_m * 100
    have_c = sum(world.cap_c[i] for i in fixed) * high
    have_m = sum(world.cap_m[i] for i in fixed) * high
    m = 0
    while (have_c < need_c or have_m < need_m) and m < len(order):
        have_c += world.cap_c[order[m]] * high
        have_m += world.cap_m[order[m]] * high
        m += 1
    if have_c < need_c or have_m < need_m:
        return len(order) + 1
    return m


def _search_prefix(world: World, fixed: list[int], order: list[int], align: bool = True):
    lo = _watermark_floor(world, fixed, order)
    n = len(order)
    if lo >= n:
        return None
    # Grow the prefix from the capacity floor until a packing succeeds...
    step = 1
    fail = lo - 1
    m = lo
    found = None
    while m < n:
        found = _evaluate(world, fixed, order, m, align=align)
        if found is not None:
            break
        fail = m
        m = min(n, m + step)
        step *= 2
    if found is None:
        return None
    # ...then bisect between the last failure and the first success.
    return _bisect(lambda k: _evaluate(world, fixed, order, k, align=align), fail, m, found)


def _bisect(evaluate, fail: int, ok: int, best):
    """The result for the shortest prefix length in (``fail``, ``ok``] that
    ``evaluate`` accepts (not None), given that ``fail`` fails and ``ok``
    gave ``best``; feasibility is taken to grow with the length."""
    while ok - fail > 1:
        mid = (fail + ok) // 2
        got = evaluate(mid)
        if got is not None:
            ok, best = mid, got
        else:
            fail = mid
    return best


class _Reshape:
    """One way of running the reshaping packer: the keep rule's slack, and
    whether kept hosts are filled in ranking order (else fullest first)."""

    __slots__ = ("keep_slack", "in_rank_order")

    def __init__(self, keep_slack: float = 0.1, in_rank_order: bool = False) -> None:
        self.keep_slack = keep_slack
        self.in_rank_order = in_rank_order


# Up to this many serving hosts, the thorough search (module docstring).
_THOROUGH_HOSTS = 200
_THOROUGH = tuple(_Reshape(slack, ranked) for slack in (0.1, 0.2, 0.05) for ranked in (False, True))


def _search_reshape(world: World, fixed: list[int], order: list[int], found, how: _Reshape):
    """Fewer hosts by letting kept hosts hand on VMs of the wrong shape.

    Runs only when the packing without that (``found``) keeps more hosts than
    the capacity floor. Bisects the prefix length between the floor and one
    host fewer than ``found`` keeps; the caller compares the outcome (more
    hosts off wins, then fewer migrations).
    """
    lo = _watermark_floor(world, fixed, order)
    hi = len(order) if found is None else len(found[5]) - len(fixed)
    if lo >= hi:
        return None
    best = _evaluate(world, fixed, order, hi - 1, reshape=how)
    if best is None:
        return None
    best = _bisect(lambda k: _evaluate(world, fixed, order, k, reshape=how), lo - 1, hi - 1, best)
    return _trim(world, best)


def _trim(world: World, found):
    """Drop the moves a reshaped packing did not need.

    The packer decides host by host, so it may send a VM away from a kept
    host that, once everything has landed, still has room for it; or send a
    VM away and bring in another of the same shape. Here such a VM stays
    (the incoming one of its shape goes where it would have gone), if that
    breaks no anti-affinity group. Each change removes a move and adds no
    dependency between hosts, so the moves still order without cycles.
    """
    n_off, _, _, moves, off, kept = found
    kept_set = set(kept)
    vm_host, vm_c, vm_m, vm_groups, vm_shape = world.vm_host, world.vm_c, world.vm_m, world.vm_groups, world.vm_shape
    cap_c, cap_m = world.cap_c, world.cap_m
    state = Loads(world)
    load_c, load_m, shift = state.c, state.m, state.shift

    def clash(j: int, h: int, leaving: int = -1) -> bool:
        gs = vm_groups[j]
        if not gs:
            return False
        d = state.groups_on(h)
        gone = vm_groups[leaving] if leaving >= 0 else ()
        return any(d.get(g, 0) - (1 if g in gone else 0) > 0 for g in gs)

    moves = dict(moves)
    for j, t in moves.items():
        shift(j, vm_host[j], t)
    evicted = sorted(j for j in moves if vm_host[j] in kept_set)
    if not evicted:
        return found
    # A VM whose kept host still has room for it stays.
    for j in evicted:
        a, t = vm_host[j], moves[j]
        if (load_c[a] + vm_c[j] <= cap_c[a] and load_m[a] + vm_m[j] <= cap_m[a]
                and not clash(j, a)):
            shift(j, t, a)
            del moves[j]
    # A VM sent away while another of its shape came in: it stays, and the
    # other goes where it was going.
    into: dict[tuple[int, int], list[int]] = {}
    for k in sorted(moves):
        into.setdefault((moves[k], vm_shape[k]), []).append(k)
    for j in evicted:
        if j not in moves:
            continue
        a, t = vm_host[j], moves[j]
        waiting = into.get((a, vm_shape[j]))
        if not waiting:
            continue
        for idx, k in enumerate(waiting):
            if moves.get(k) != a or clash(k, t, leaving=j) or clash(j, a, leaving=k):
                continue
            shift(j, t, a)
            shift(k, a, t)
            del moves[j]
            if vm_host[k] == t:
                del moves[k]
            else:
                moves[k] = t
                into.setdefault((t, vm_shape[k]), []).append(k)
            del waiting[idx]
            break
    return n_off, len(moves), sum(vm_m[j] for j in moves), moves, off, kept


def _search_budget(world: World, fixed: list[int], order: list[int], budget: int):
    """Release the longest tail of ``order`` (fewest VMs last) within the budget."""
    n = len(order)
    lo = _watermark_floor(world, fixed, order)
    counts = [len(world.host_vms[i]) for i in order]
    # Smallest m such that the tail order[m:] needs no more than ``budget`` migrations.
    m_budget = n
    total = 0
    for m in range(n - 1, -1, -1):
        total += counts[m]
        if total > budget:
            break
        m_budget = m
    start = max(lo, m_budget)
    if start >= n:
        return None
    found = _evaluate(world, fixed, order, start)
    if found is not None:
        return found
    return _bisect(lambda k: _evaluate(world, fixed, order, k), start, n, None)


# -- scale-up -------------------------------------------------------------------------------


def _scale_up(world: World, budget: int | None = None) -> _Step:
    c = world.constraints
    cap_c, cap_m = world.cap_c, world.cap_m
    vm_c, vm_m, vm_groups = world.vm_c, world.vm_m, world.vm_groups
    n = len(world.hosts)
    room_c = [cap_c[i] - world.load_c[i] for i in range(n)]
    room_m = [cap_m[i] - world.load_m[i] for i in range(n)]
    held: dict[int, dict[int, int]] = {}

    def groups_on(i: int) -> dict[int, int]:
        d = held.get(i)
        if d is None:
            base = world.host_groups[i]
            d = held[i] = dict(base) if base else {}
        return d

    def clashes(j: int, i: int) -> bool:
        gs = vm_groups[j]
        if not gs:
            return False
        here = groups_on(i)
        return any(here.get(g, 0) > 0 for g in gs)

    def put(j: int, i: int) -> None:
        room_c[i] -= vm_c[j]
        room_m[i] -= vm_m[j]
        gs = vm_groups[j]
        if gs:
            here = groups_on(i)
            for g in gs:
                here[g] = here.get(g, 0) + 1

    serving = world.serving_hosts()
    wake = [i for i in range(n) if world.wakeable[i]]
    pool = serving + wake
    ref_c = max((cap_c[i] for i in pool), default=1) or 1
    ref_m = max((cap_m[i] for i in pool), default=1) or 1
    pending = sorted((j for j, h in enumerate(world.vm_host) if h < 0),
                     key=lambda j: (-(vm_c[j] / ref_c + vm_m[j] / ref_m), j))
    moves: dict[int, int] = {}
    left: list[int] = []
    for j in pending:
        best, best_score = -1, 0.0
        for i in serving:
            rc = room_c[i] - vm_c[j]
            rm = room_m[i] - vm_m[j]
            if rc < 0 or rm < 0 or clashes(j, i):
                continue
            score = rc / (cap_c[i] or 1) + rm / (cap_m[i] or 1)
            if best < 0 or score < best_score:
                best, best_score = i, score
        if best >= 0:
            put(j, best)
            moves[j] = best
        else:
            left.append(j)

    power_on: list[int] = []
    while left and wake:
        # One candidate per host shape: the first standby host of that shape.
        shapes: dict[tuple[int, int], int] = {}
        for i in wake:
            shapes.setdefault((cap_c[i], cap_m[i]), i)
        best_choice = None
        for (sc, sm), i in shapes.items():
            placed = _simulate(world, i, left, sc, sm)
            if not placed:
                continue
            weight = sum(vm_c[j] / ref_c + vm_m[j] / ref_m for j in placed)
            size = sc / ref_c + sm / ref_m
            complete = len(placed) == len(left)
            key = (0, size, i) if complete else (1, -weight, size, i)
            if best_choice is None or key < best_choice[0]:
                best_choice = (key, i, placed)
        if best_choice is None:
            break
        _, i, placed = best_choice
        power_on.append(i)
        wake.remove(i)
        for j in placed:
            put(j, i)
            moves[j] = i
        placed_set = set(placed)
        left = [j for j in left if j not in placed_set]

    # Defragmentation: pending VMs still left go where migrating smaller VMs
    # away opens a hole.
    truncated = False
    if left:
        spent = sum(1 for j in moves if world.vm_host[j] >= 0)
        room = None if budget is None else budget - spent
        left, truncated = _defragment(world, serving + power_on, left, moves, room_c, room_m, groups_on, put,
                                      clashes, room)

    # Utilisation above the high watermark: add capacity, smallest host that suffices.
    high = c.high_watermark_percent
    on = serving + power_on
    dem_c = sum(world.load_c[i] for i in serving) + sum(vm_c[j] for j in moves)
    dem_m = sum(world.load_m[i] for i in serving) + sum(vm_m[j] for j in moves)
    have_c = sum(cap_c[i] for i in on)
    have_m = sum(cap_m[i] for i in on)
    while wake and (have_c * high < dem_c * 100 or have_m * high < dem_m * 100):
        need_c = max(0, -(-dem_c * 100 // high) - have_c)
        need_m = max(0, -(-dem_m * 100 // high) - have_m)
        enough = [i for i in wake if cap_c[i] >= need_c and cap_m[i] >= need_m]
        if enough:
            i = min(enough, key=lambda i: (cap_c[i] / ref_c + cap_m[i] / ref_m, i))
        else:
            i = min(wake, key=lambda i: (-(cap_c[i] / ref_c + cap_m[i] / ref_m), i))
        power_on.append(i)
        wake.remove(i)
        have_c += cap_c[i]
        have_m += cap_m[i]

    # Free-host reserve: empty serving hosts, counting the ones just powered on.
    used = {i for i in moves.values()}
    free = sum(1 for i in serving if not world.host_vms[i] and i not in used)
    free += sum(1 for i in power_on if i not in used)
    while free < c.min_free_hosts and wake:
        i = min(wake, key=lambda i: (-(cap_c[i] / ref_c + cap_m[i] / ref_m), i))
        power_on.append(i)
        wake.remove(i)
        free += 1
    return _Step(power_on=power_on, moves=moves, truncated=truncated)


def _defragment(world: World, pool: list[int], left: list[int], moves: dict[int, int], room_c: list[int],
                room_m: list[int], groups_on, put, clashes, budget: int | None) -> tuple[list[int], bool]:
    """Place pending VMs by migrating smaller VMs off a host to make room.

    For each pending VM (largest first), hosts large enough for it are tried,
    the ones whose free room is closest to it first (at most
    ``_DEFRAG_HOSTS``); on each, VMs no larger than the pending one and able to
    move (migratable, placed before this plan) are evicted, the ones covering
    most of the shortfall first, each to the fullest host that has room for it
    (``hostwise.RoomIndex``). The host needing the fewest evictions (then the
    fewest MiB) wins. Hosts that give VMs away never receive evicted ones and
    the other way round, so the moves form no cycle: evictions run in one wave,
    placements after them. Evictions count against the migration budget; a
    VM whose hole would cost more than what is left stays pending (and the
    plan says truncated). Returns (still pending, truncated).
    """
    cap_c, cap_m, vm_c, vm_m = world.cap_c, world.cap_m, world.vm_c, world.vm_m
    vm_host, migratable = world.vm_host, world.vm_migratable
    on: dict[int, list[int]] = {i: [j for j in world.host_vms[i] if migratable[j] and j not in moves] for i in pool}
    ev_c = {i: sum(vm_c[j] for j in on[i]) for i in pool}
    ev_m = {i: sum(vm_m[j] for j in on[i]) for i in pool}
    donors: set[int] = set()
    receivers: set[int] = set()

    def frac(i: int) -> float:
        return room_c[i] / (cap_c[i] or 1) + room_m[i] / (cap_m[i] or 1)

    index = RoomIndex(sorted(pool, key=lambda i: (frac(i), i)), room_c, room_m)
    still: list[int] = []
    truncated = False
    used = 0
    for p in left:
        c, m = vm_c[p], vm_m[p]
        hosts = [i for i in pool if cap_c[i] >= c and cap_m[i] >= m and room_c[i] + ev_c[i] >= c
                 and room_m[i] + ev_m[i] >= m and i not in receivers and not clashes(p, i)]
        hosts = heapq.nsmallest(_DEFRAG_HOSTS, hosts,
                                key=lambda i: (max(0, c - room_c[i]) / (c or 1) + max(0, m - room_m[i]) / (m or 1), i))
        best = None
        for h in hosts:
            got = _hole(world, index, h, c, m, on[h], room_c, room_m, clashes, put_back=True)
            if got is not None and (best is None or (len(got), sum(vm_m[j] for j, _ in got)) < best[0]):
                best = ((len(got), sum(vm_m[j] for j, _ in got)), h, got)
                if len(got) == 1:
                    break
        if best is None:
            still.append(p)
            continue
        _, h, evictions = best
        if budget is not None and used + len(evictions) > budget:
            truncated = True
            still.append(p)
            continue
        index.set(h, -1, -1)
        donors.add(h)
        for j, t in evictions:
            room_c[h] += vm_c[j]
            room_m[h] += vm_m[j]
            put(j, t)
            index.set(t, room_c[t], room_m[t])
            moves[j] = t
            receivers.add(t)
            on[h].remove(j)
            ev_c[h] -= vm_c[j]
            ev_m[h] -= vm_m[j]
            groups = groups_on(h)
            for g in world.vm_groups[j]:
                groups[g] -= 1
        used += len(evictions)
        put(p, h)
        moves[p] = h
    return still, truncated


def _hole(world: World, index: RoomIndex, h: int, c: int, m: int, mine: list[int], room_c: list[int],
          room_m: list[int], clashes, put_back: bool):
    """Evictions [(vm, target)] that give host ``h`` room for (c, m), or None."""
    vm_c, vm_m = world.vm_c, world.vm_m
    need_c = max(0, c - room_c[h])
    need_m = max(0, m - room_m[h])
    small = [j for j in mine if vm_c[j] <= c and vm_m[j] <= m]
    if sum(vm_c[j] for j in small) < need_c or sum(vm_m[j] for j in small) < need_m:
        return None  # even evicting all of them would not do
    saved = index.fc[index.pos[h]], index.fm[index.pos[h]]
    index.set(h, -1, -1)
    taken: list[tuple[int, int]] = []
    ok = False
    while True:
        if need_c <= 0 and need_m <= 0:
            ok = True
            break
        best, best_score = -1, -1.0
        for j in small:
            a, b = vm_c[j], vm_m[j]
            score = ((a if a < need_c else need_c) / need_c if need_c > 0 else 0.0) + \
                ((b if b < need_m else need_m) / need_m if need_m > 0 else 0.0)
            if score > best_score + 1e-12:
                best, best_score = j, score
        if best < 0 or best_score <= 0:
            break
        small.remove(best)
        p = index.find(vm_c[best], vm_m[best])
        while p >= 0 and clashes(best, index.order[p]):
            p = index.find(vm_c[best], vm_m[best], p + 1)
        if p < 0:
            continue
        t = index.order[p]
        index.set(t, index.fc[p] - vm_c[best], index.fm[p] - vm_m[best])
        taken.append((best, t))
        need_c -= vm_c[best]
        need_m -= vm_m[best]
    # Tentative: the caller commits the winner.
    for j, t in reversed(taken):
        q = index.pos[t]
        index.set(t, index.fc[q] + vm_c[j], index.fm[q] + vm_m[j])
    index.set(h, *saved)
    return taken if ok else None


# Hosts tried per pending VM by the defragmentation (``_defragment``).
_DEFRAG_HOSTS = 64


def _simulate(world: World, host: int, left: list[int], cap_c: int, cap_m: int) -> list[int]:
    """Pending VMs (already largest first) that would land on an empty ``host``."""
    rc, rm = cap_c, cap_m
    groups: set[int] = set()
    placed = []
    for j in left:
        c, m = world.vm_c[j], world.vm_m[j]
        if c > rc or m > rm:
            continue
        gs = world.vm_groups[j]
        if gs and any(g in groups for g in gs):
            continue
        rc -= c
        rm -= m
        groups.update(gs)
        placed.append(j)
    return placed


# -- the plan ---------------------------------------------------------------------------------


def _compose(w0: World, wf: World, mode: Mode, reason: str, truncated: bool, note: str = "") -> Plan:
    n = len(w0.hosts)
    power_on = [i for i in range(n) if wf.serving[i] and not w0.serving[i]]
    power_off = [i for i in range(n) if w0.serving[i] and not wf.serving[i]]
    moves = [Move(j, w0.vm_host[j], wf.vm_host[j]) for j in range(len(w0.vms))
             if wf.vm_host[j] != w0.vm_host[j] and wf.vm_host[j] >= 0]
    serving = list(w0.serving)
    for i in power_on:
        serving[i] = True
    start = World(w0.hosts, w0.vms, w0.constraints, serving, w0.vm_host)
    try:
        waves = order_moves(start, moves, allow_detours=False)
    except Unorderable:
        # Each round's moves order on their own; moves composed from several
        # rounds of reshaping can form a cycle, which a detour breaks.
        try:
            waves = order_moves(start, moves, allow_detours=True)
        except Unorderable:
            empty = _figures(w0, w0, [], [], [])
            return Plan(Mode.HOLD, "Unorderable", "the planned moves could not be ordered safely; holding",
                        (), (), empty)
        moves = [mv for group in waves for mv in group]
    steps = _steps(w0, power_on, waves, power_off)
    vms = w0.vms
    left = [j for j, h in enumerate(wf.vm_host) if h < 0]
    unplaced = tuple(sorted(vms[j].name for j in left))
    why = tuple(sorted((vms[j].name, _why_unplaced(wf, j)) for j in left))
    figures = _figures(w0, wf, moves, power_on, power_off)
    if not steps:
        message = note or "nothing to do"
        if unplaced:
            message += f"; {len(unplaced)} pending VMs fit on no host"
        if mode is not Mode.HOLD and reason not in ("WithinWatermarks",):
            reason = "NoImprovement" if mode is Mode.SCALE_DOWN else ("NoCapacity" if unplaced else "NoImprovement")
    else:
        parts = []
        if figures.powered_on:
            parts.append(f"power on {figures.powered_on} hosts")
        if figures.placements:
            parts.append(f"place {figures.placements} pending VMs")
        if figures.migrations:
            parts.append(f"migrate {figures.migrations} VMs ({figures.migrated_mib} MiB)")
        if figures.powered_off:
            parts.append(f"power off {figures.powered_off} hosts")
        message = ", ".join(parts)
        saved = figures.watts_before - figures.watts_after
        if saved > 0:
            message += f"; {figures.watts_before} W -> {figures.watts_after} W ({saved * 24 / 1000:.1f} kWh/day saved)"
        elif saved < 0:
            message += f"; {figures.watts_before} W -> {figures.watts_after} W"
        if unplaced:
            message += f"; {len(unplaced)} pending VMs fit on no host"
        if truncated:
            message += "; stopped at the migration budget"
        if note and mode is Mode.SCALE_DOWN and reason == "SavingAboveFloor":
            message += f"; pays for itself: {note}"
    return Plan(mode, reason, message, tuple(steps), unplaced, figures, truncated, why)


def _figures(w0: World, wf: World, moves: list[Move], power_on: list[int], power_off: list[int]) -> Figures:
    def in_use(w: World) -> int:
        return sum(1 for v in w.host_vms if v)

    migrations = [mv for mv in moves if mv.source >= 0]
    return Figures(
        hosts_on_before=sum(1 for h in w0.hosts if h.powered_on),
        hosts_on_after=sum(1 for h in w0.hosts if h.powered_on) + sum(1 for i in power_on if not w0.hosts[i].powered_on)
        - len(power_off),
        hosts_in_use_before=in_use(w0),
        hosts_in_use_after=in_use(wf),
        lower_bound_hosts=_lower_bound(wf),
        migrations=len(migrations),
        migrated_mib=sum(w0.vm_m[mv.vm] for mv in migrations),
        placements=len(moves) - len(migrations),
        powered_on=len(power_on),
        powered_off=len(power_off),
        unplaced=sum(1 for h in wf.vm_host if h < 0),
        utilisation_before_permille=w0.utilisation_permille(),
        utilisation_after_permille=wf.utilisation_permille(),
        watts_before=w0.watts(),
        watts_after=wf.watts(),
    )


def _why_unplaced(w: World, j: int) -> str:
    """Why pending VM ``j`` is left pending in the final state ``w``."""
    c, m = w.vm_c[j], w.vm_m[j]
    pool = [i for i in range(len(w.hosts)) if not w.cordoned[i] and (w.serving[i] or w.wakeable[i])]
    if not any(w.cap_c[i] >= c and w.cap_m[i] >= m for i in pool):
        big_c = max((w.cap_c[i] for i in pool), default=0)
        big_m = max((w.cap_m[i] for i in pool), default=0)
        return (f"TooLarge: needs {c}m CPU and {m} MiB; no host in service or standby has that much usable room "
                f"(largest: {big_c}m CPU, {big_m} MiB after headroom)")
    if w.vm_groups[j]:
        return "NoRoom: hosts large enough hold members of its anti-affinity groups or are full, even after migrations"
    return "NoRoom: hosts large enough are full, and migrations within the budget do not open a hole big enough"


def _lower_bound(w: World) -> int:
    eligible = [i for i in range(len(w.hosts)) if not w.cordoned[i] and (w.serving[i] or w.wakeable[i])]
    placed = [j for j, h in enumerate(w.vm_host) if h >= 0 and not w.cordoned[h]]
    if not placed:
        return sum(1 for i in range(len(w.hosts)) if w.serving[i] and w.pinned[i] and not w.cordoned[i])
    dem_c = sum(w.vm_c[j] for j in placed)
    dem_m = sum(w.vm_m[j] for j in placed)

    def by_dimension(caps: list[int], demand: int) -> int:
        total = 0
        for k, cap in enumerate(sorted(caps, reverse=True), start=1):
            total += cap
            if total >= demand:
                return k
        return len(caps) + 1

    bound = max(by_dimension([w.cap_c[i] for i in eligible], dem_c),
                by_dimension([w.cap_m[i] for i in eligible], dem_m))
    max_c = max((w.cap_c[i] for i in eligible), default=0)
    max_m = max((w.cap_m[i] for i in eligible), default=0)
    big_c = sum(1 for j in placed if 2 * w.vm_c[j] > max_c)
    big_m = sum(1 for j in placed if 2 * w.vm_m[j] > max_m)
    bound = max(bound, big_c, big_m)
    sizes: dict[int, int] = {}
    for j in placed:
        for g in w.vm_groups[j]:
            sizes[g] = sizes.get(g, 0) + 1
    if sizes:
        bound = max(bound, max(sizes.values()))
    pinned = [i for i in eligible if w.serving[i] and w.pinned[i] and (w.host_vms[i] or w.must_stay_on[i])]
    bound = max(bound, len(pinned))
    if pinned:
        # Pinned hosts stay on whatever happens: they count, their room takes
        # what it can, and the rest of the demand needs hosts of its own.
        pinned_set = set(pinned)
        others = [i for i in eligible if i not in pinned_set]
        rest_c = dem_c - sum(w.cap_c[i] for i in pinned)
        rest_m = dem_m - sum(w.cap_m[i] for i in pinned)
        extra = max(by_dimension([w.cap_c[i] for i in others], rest_c) if rest_c > 0 else 0,
                    by_dimension([w.cap_m[i] for i in others], rest_m) if rest_m > 0 else 0)
        bound = max(bound, len(pinned) + extra)
    cordoned_busy = sum(1 for i in range(len(w.hosts)) if w.cordoned[i] and w.hosts[i].powered_on)
    return bound + cordoned_busy

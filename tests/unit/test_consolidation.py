"""Table-driven tests of the consolidation planner (stratus.core.consolidation)."""

from __future__ import annotations

import itertools
import random

import pytest

from stratus.core.consolidation import (
    Action,
    AntiAffinityGroup,
    Constraints,
    Host,
    Mode,
    VM,
    apply_plan,
    check_plan,
    lower_bound,
    plan,
)
from stratus.core.consolidation.ordering import Move, order_moves
from stratus.core.consolidation.packing import fill
from stratus.core.consolidation.world import World

GIB = 1024
CORE = 1000


def host(name: str, cores: int = 16, gib: int = 64, **kw) -> Host:
    return Host(name, cores * CORE, gib * GIB, **kw)


def vm(name: str, cores: int, gib: int, on: str | None, **kw) -> VM:
    return VM(name, cores * CORE, gib * GIB, on, **kw)


# Scale-down is wanted in every scenario below: utilisation is low and the
# watermarks leave all the room to consolidate.
DOWN = dict(low_watermark_percent=100, high_watermark_percent=100)


def _state_after(hosts, vms, p):
    hosts2, vms2 = apply_plan(hosts, vms, p)
    return {h.name: h for h in hosts2}, {v.name: v.host for v in vms2}


# -- each constraint is respected ------------------------------------------------------


def _aa():
    hosts = [host("a"), host("b"), host("c")]
    vms = [vm("web-1", 2, 8, "a"), vm("web-2", 2, 8, "b"), vm("x", 2, 8, "c")]
    c = Constraints(anti_affinity_groups=(AntiAffinityGroup("web", ("web-1", "web-2")),), **DOWN)

    def expect(p, hosts_after, where):
        assert where["web-1"] != where["web-2"]
        assert p.figures.powered_off == 1  # c empties onto a or b; a and b cannot merge

    return hosts, vms, c, expect


def _headroom():
    hosts = [host("a", cores=10), host("b", cores=10)]
    vms = [vm("v1", 5, 4, "a"), vm("v2", 5, 4, "b")]
    c = Constraints(headroom_percent=20, **DOWN)  # usable: 8 cores, 5 + 5 does not fit

    def expect(p, hosts_after, where):
        assert p.is_empty

    return hosts, vms, c, expect


def _must_stay_on():
    hosts = [host("a"), host("b")]
    vms = [vm("v1", 1, 1, "a"), vm("v2", 4, 16, "b"), vm("v3", 4, 16, "b")]
    c = Constraints(must_stay_on=frozenset({"a"}), **DOWN)

    def expect(p, hosts_after, where):
        assert "a" not in p.power_off
        assert p.power_off == ("b",)
        assert where["v2"] == where["v3"] == "a"

    return hosts, vms, c, expect


def _min_free():
    hosts = [host("a"), host("b"), host("c"), host("d")]
    vms = [vm("v1", 2, 8, "a"), vm("v2", 2, 8, "b")]
    c = Constraints(min_free_hosts=2, **DOWN)

    def expect(p, hosts_after, where):
        on = [h for h in hosts_after.values() if h.in_service]
        free = [h for h in on if h.name not in set(where.values())]
        assert len(free) >= 2
        assert p.figures.powered_off == 1  # 4 hosts, 1 needed, 2 spare

    return hosts, vms, c, expect


def _budget():
    hosts = [host("a"), host("b"), host("c"), host("d")]
    vms = ([vm("s1", 1, 2, "a"), vm("s2", 1, 2, "b")]
           + [vm(f"c{k}", 1, 2, "c") for k in range(3)] + [vm(f"d{k}", 1, 2, "d") for k in range(6)])
    c = Constraints(max_migrations=2, **DOWN)

    def expect(p, hosts_after, where):
        assert p.figures.migrations <= 2
        assert sorted(p.power_off) == ["a", "b"]  # the two hosts that cost one migration each
        assert p.truncated

    return hosts, vms, c, expect


def _non_migratable():
    hosts = [host("a"), host("b"), host("c")]
    vms = [vm("pinned", 1, 2, "a", migratable=False), vm("v2", 4, 16, "b"), vm("v3", 4, 16, "c")]
    c = Constraints(**DOWN)

    def expect(p, hosts_after, where):
        assert where["pinned"] == "a"
        assert "a" not in p.power_off
        assert all(s.vm != "pinned" for s in p.steps)
        assert p.figures.powered_off == 2  # b and c move onto a

    return hosts, vms, c, expect


def _cordoned():
    hosts = [host("a", cordoned=True), host("b"), host("c")]
    vms = [vm("v1", 1, 2, "a"), vm("v2", 1, 2, "b"), vm("v3", 1, 2, "c")]
    c = Constraints(**DOWN)

    def expect(p, hosts_after, where):
        assert where["v1"] == "a"
        assert all(s.host != "a" and s.source != "a" for s in p.steps)
        assert p.figures.powered_off == 1

    return hosts, vms, c, expect


def _high_watermark():
    hosts = [host("a"), host("b"), host("c")]
    vms = [vm(f"v{k}", 4, 16, "abc"[k % 3]) for k in range(6)]  # 24 cores of 48: 50 %
    c = Constraints(low_watermark_percent=60, high_watermark_percent=70)

    def expect(p, hosts_after, where):
        # Two hosts would run at 75 %: above the high watermark, so nothing is released.
        assert p.is_empty

    return hosts, vms, c, expect


CONSTRAINT_CASES = {
    "anti-affinity": _aa,
    "headroom": _headroom,
    "must-stay-on": _must_stay_on,
    "min-free-hosts": _min_free,
    "max-migrations": _budget,
    "non-migratable": _non_migratable,
    "cordoned-host": _cordoned,
    "high-watermark-caps-scale-down": _high_watermark,
}


@pytest.mark.parametrize("case", CONSTRAINT_CASES.values(), ids=CONSTRAINT_CASES.keys())
def test_constraint_respected(case):
    hosts, vms, c, expect = case()
    p = plan(hosts, vms, c)
    assert check_plan(hosts, vms, c, p) == []
    hosts_after, where = _state_after(hosts, vms, p)
    expect(p, hosts_after, where)


# -- no churn --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CONSTRAINT_CASES.values(), ids=CONSTRAINT_CASES.keys())
@pytest.mark.parametrize("mode", [None, Mode.SCALE_DOWN], ids=["auto", "scale-down"])
def test_no_churn_on_replan(case, mode):
    hosts, vms, c, _ = case()
    first = plan(hosts, vms, c, mode)
    # A budget-truncated plan is continued by the next cycles on purpose: follow them
    # until a cycle finishes; the plan after that one must move nothing.
    for _ in range(10):
        hosts, vms = apply_plan(hosts, vms, first)
        if not first.truncated:
            break
        first = plan(hosts, vms, c, mode)
    else:
        pytest.fail("budget-truncated plans did not finish within 10 cycles")
    again = plan(hosts, vms, c, mode)
    assert again.migrations == ()
    assert again.is_empty


def test_budget_truncated_plans_converge_without_moving_a_vm_twice():
    hosts, vms, c, _ = _budget()
    moved: set[str] = set()
    for _ in range(10):
        p = plan(hosts, vms, c)
        assert check_plan(hosts, vms, c, p) == []
        if p.is_empty:
            break
        names = {s.vm for s in p.migrations}
        assert not names & moved
        moved |= names
        hosts, vms = apply_plan(hosts, vms, p)
    else:
        pytest.fail("did not converge")
    assert plan(hosts, vms, c).is_empty


# -- safe ordering -----------------------------------------------------------------------


def test_scale_down_plan_is_one_safe_wave():
    hosts = [host(f"h{i}") for i in range(6)]
    vms = [vm(f"v{i}", 2, 8, f"h{i % 6}") for i in range(18)]
    c = Constraints(**DOWN)
    p = plan(hosts, vms, c)
    assert check_plan(hosts, vms, c, p) == []
    waves = {s.wave for s in p.migrations}
    assert len(waves) == 1
    assert all(s.wave > p.migrations[0].wave for s in p.steps if s.action is Action.POWER_OFF)


def test_reshaping_moves_a_vm_between_kept_hosts_so_a_host_comes_off():
    """No host can be emptied into the room the other two have left; moving
    one VM from the memory-rich host to the middle one first makes room there
    for the small host's VMs (found by a seeded search over small clusters)."""
    hosts = [host("small", 16, 32), host("rich", 16, 128), host("middle", 16, 64)]
    placed = {"small": [(1, 12), (2, 8), (1, 2), (2, 8)],
              "rich": [(4, 48), (2, 4), (1, 2), (4, 32), (2, 4)],
              "middle": [(1, 8), (4, 48)]}
    vms = [vm(f"{h}-{k}", c, g, h) for h, sizes in placed.items() for k, (c, g) in enumerate(sizes)]
    c = Constraints(**DOWN)
    world = World(hosts, vms, c)
    for i in range(3):  # the premise: without reshaping nothing comes off
        kept = [k for k in range(3) if k != i]
        assert fill(world, kept, world.host_vms[i]) is None

    p = plan(hosts, vms, c)
    assert check_plan(hosts, vms, c, p) == []
    assert p.power_off == ("small",)
    kept_moves = [s for s in p.migrations if s.source != "small"]
    assert [(s.source, s.host) for s in kept_moves] == [("rich", "middle")]
    # Not all of it fits on the rich host before that VM has left: a later wave.
    assert max(s.wave for s in p.migrations if s.host == "rich") > kept_moves[0].wave
    hosts2, vms2 = apply_plan(hosts, vms, p)
    assert plan(hosts2, vms2, c).is_empty


ORDER_CASES = {
    # name: (host cores, VM (cores, host), moves (vm, target), expected waves as VM lists)
    "chain-frees-room-first": (
        [4, 4, 4], [(4, 0), (4, 1)], [(0, 1), (1, 2)], [[1], [0]],
    ),
    "independent-moves-share-a-wave": (
        [4, 4, 8], [(2, 0), (2, 1)], [(0, 2), (1, 2)], [[0, 1]],
    ),
    "swap-needs-a-detour": (
        [4, 4, 4], [(4, 0), (4, 1)], [(0, 1), (1, 0)], None,  # 3 waves via the empty host
    ),
}


@pytest.mark.parametrize("case", ORDER_CASES.values(), ids=ORDER_CASES.keys())
def test_order_moves(case):
    caps, placed, moves, expected = case
    hosts = [Host(f"h{i}", c * CORE, 64 * GIB) for i, c in enumerate(caps)]
    vms = [VM(f"v{j}", c * CORE, GIB, f"h{h}") for j, (c, h) in enumerate(placed)]
    world = World(hosts, vms, Constraints())
    waves = order_moves(world, [Move(j, world.vm_host[j], t) for j, t in moves])
    if expected is not None:
        assert [[m.vm for m in w] for w in waves] == expected
    # Replaying the waves never overfills a host.
    load = [0] * len(hosts)
    for j, (c, h) in enumerate(placed):
        load[h] += c
    for w in waves:
        for m in w:
            load[m.target] += placed[m.vm][0]
            assert load[m.target] <= caps[m.target]
        for m in w:
            load[m.source] -= placed[m.vm][0]
    final = {m.vm: m.target for w in waves for m in w}
    assert final == dict(moves)


def test_order_moves_respects_anti_affinity_within_a_wave():
    hosts = [host("a"), host("b"), host("c")]
    vms = [vm("x", 1, 1, "a"), vm("y", 1, 1, "b")]
    c = Constraints(anti_affinity_groups=(AntiAffinityGroup("g", ("x", "y")),))
    world = World(hosts, vms, c)
    # y leaves b while x arrives: not in the same wave.
    waves = order_moves(world, [Move(0, 0, 1), Move(1, 1, 2)])
    assert [[m.vm for m in w] for w in waves] == [[1], [0]]


# -- scale-up ------------------------------------------------------------------------------


def _standby(name, cores, gib):
    return Host(name, cores * CORE, gib * GIB, powered_on=False, standby=True)


SCALE_UP_CASES = {
    # name: (hosts, vms, constraints, expected power-on, expected unplaced)
    "pending-fits-on-active-host": (
        [host("a"), _standby("s", 32, 128)], [vm("p", 2, 4, None)], Constraints(), [], [],
    ),
    "best-fitting-standby-host": (
        [host("a", cores=4), _standby("big", 64, 256), _standby("small", 32, 128)],
        [vm("busy", 4, 8, "a"), vm("p", 24, 96, None)], Constraints(), ["small"], [],
    ),
    "fewest-standby-hosts": (
        [host("a", cores=4), _standby("s1", 32, 128), _standby("s2", 32, 128), _standby("big", 64, 256)],
        [vm("busy", 4, 8, "a"), vm("p1", 24, 64, None), vm("p2", 24, 64, None)], Constraints(), ["big"], [],
    ),
    "anti-affinity-needs-two-hosts": (
        [host("a", cores=4), _standby("s1", 32, 128), _standby("s2", 32, 128)],
        [vm("busy", 4, 8, "a"), vm("p1", 2, 4, None), vm("p2", 2, 4, None)],
        Constraints(anti_affinity_groups=(AntiAffinityGroup("g", ("p1", "p2")),)), ["s1", "s2"], [],
    ),
    "too-big-for-any-host": (
        [host("a"), _standby("s", 32, 128)], [vm("busy", 1, 1, "a"), vm("huge", 128, 16, None)], Constraints(),
        [], ["huge"],
    ),
    "high-utilisation": (
        [host("a"), _standby("s1", 16, 64), _standby("s2", 8, 32)],
        [vm("v", 15, 8, "a")], Constraints(high_watermark_percent=80), ["s2"], [],
    ),
    "free-host-reserve": (
        [host("a"), _standby("s1", 16, 64), _standby("s2", 32, 64)],
        [vm("v", 1, 8, "a")], Constraints(min_free_hosts=1), ["s2"], [],
    ),
    "out-of-service-host-is-not-woken": (
        [host("a", cores=4), Host("broken", 64 * CORE, 256 * GIB, powered_on=False)],
        [vm("busy", 4, 8, "a"), vm("p", 8, 8, None)], Constraints(), [], ["p"],
    ),
}


@pytest.mark.parametrize("case", SCALE_UP_CASES.values(), ids=SCALE_UP_CASES.keys())
def test_scale_up(case):
    hosts, vms, c, power_on, unplaced = case
    p = plan(hosts, vms, c)
    assert p.mode is Mode.SCALE_UP
    assert check_plan(hosts, vms, c, p) == []
    assert sorted(p.power_on) == power_on
    assert list(p.unplaced) == unplaced
    placed = {s.vm for s in p.placements}
    assert placed == {v.name for v in vms if v.host is None} - set(unplaced)
    hosts2, vms2 = apply_plan(hosts, vms, p)
    assert plan(hosts2, vms2, c).migrations == ()


def test_scale_up_does_not_stall_scale_down():
    # A pending VM that fits nowhere must not keep an idle cluster from consolidating.
    hosts = [host("a"), host("b")]
    vms = [vm("v1", 1, 2, "a"), vm("v2", 1, 2, "b"), vm("huge", 128, 8, None)]
    p = plan(hosts, vms, Constraints())
    assert p.figures.powered_off == 1
    assert p.unplaced == ("huge",)


# -- small instances: optimal, compared with a brute force -------------------------------------


def _brute_force_min_hosts(hosts, vms, c):
    """Fewest hosts on over every placement of the migratable VMs that respects
    capacity and anti-affinity (order and power steps ignored)."""
    usable = [c.usable(h) for h in hosts]
    groups = {v.name: {g.name for g in c.anti_affinity_groups if v.name in g.vms} for v in vms}
    movable = [v for v in vms if v.migratable]
    fixed = [v for v in vms if not v.migratable]
    best = len(hosts)
    for choice in itertools.product(range(len(hosts)), repeat=len(movable)):
        load = [[0, 0] for _ in hosts]
        held = [set() for _ in hosts]
        ok = True
        placed = [(v, next(i for i, h in enumerate(hosts) if h.name == v.host)) for v in fixed]
        placed += list(zip(movable, choice))
        for v, i in placed:
            load[i][0] += v.cpu_millicores
            load[i][1] += v.memory_mib
            if load[i][0] > usable[i][0] or load[i][1] > usable[i][1] or groups[v.name] & held[i]:
                ok = False
                break
            held[i] |= groups[v.name]
        if ok:
            used = {i for _, i in placed} | {i for i, h in enumerate(hosts) if h.name in c.must_stay_on}
            best = min(best, len(used))
    return best


def _tiny(seed):
    rng = random.Random(seed)
    n_hosts = rng.randint(2, 5)
    hosts = [host(f"h{i}", cores=rng.choice([8, 16]), gib=rng.choice([32, 64])) for i in range(n_hosts)]
    vms = []
    load = {h.name: [0, 0] for h in hosts}
    for j in range(rng.randint(3, 7)):
        c, m = rng.choice([1, 2, 4]) * CORE, rng.choice([2, 4, 8, 16]) * GIB
        h = rng.choice(hosts)
        if load[h.name][0] + c <= h.cpu_millicores and load[h.name][1] + m <= h.memory_mib:
            load[h.name][0] += c
            load[h.name][1] += m
            vms.append(VM(f"v{j}", c, m, h.name, migratable=rng.random() > 0.15))
    names = [v.name for v in vms]
    groups = ()
    if len(names) >= 2 and rng.random() < 0.5:
        pair = rng.sample(names, 2)
        if {v.host for v in vms if v.name in pair} and len({v.host for v in vms if v.name in pair}) == 2:
            groups = (AntiAffinityGroup("g", tuple(pair)),)
    return hosts, vms, Constraints(anti_affinity_groups=groups, **DOWN)


@pytest.mark.parametrize("seed", range(150))
def test_small_instances_are_optimal(seed):
    hosts, vms, c = _tiny(seed)
    p = plan(hosts, vms, c)
    assert check_plan(hosts, vms, c, p) == []
    assert p.figures.hosts_on_after == _brute_force_min_hosts(hosts, vms, c)


# -- property-style randomized checks -------------------------------------------------------------


def _random_cluster(seed):
    rng = random.Random(seed)
    n = rng.randint(4, 24)
    hosts = []
    for i in range(n):
        on = rng.random() > 0.25
        hosts.append(Host(f"h{i:02d}", rng.choice([16, 32, 64]) * CORE, rng.choice([64, 128, 256]) * GIB,
                          powered_on=on, standby=not on and rng.random() > 0.2,
                          cordoned=rng.random() < 0.05))
    serving = [h for h in hosts if h.in_service]
    headroom = rng.choice([0, 0, 10, 20])
    usable = {h.name: [h.cpu_millicores * (100 - headroom) // 100, h.memory_mib * (100 - headroom) // 100]
              for h in hosts}
    vms = []
    for j in range(rng.randint(0, 8 * n)):
        c = rng.choice([1, 1, 2, 4, 8]) * CORE
        m = c // CORE * rng.choice([2, 4, 8]) * GIB
        where = None
        if serving and rng.random() > 0.05:
            h = rng.choice(serving)
            if usable[h.name][0] >= c and usable[h.name][1] >= m:
                usable[h.name][0] -= c
                usable[h.name][1] -= m
                where = h.name
        vms.append(VM(f"vm{j:03d}", c, m, where, migratable=rng.random() > 0.1))
    names = [v.name for v in vms]
    rng.shuffle(names)
    groups = []
    by_name = {v.name: v for v in vms}
    k = 0
    while k + 1 < len(names) // 10:
        size = rng.randint(2, 4)
        members = names[k:k + size]
        placed = [by_name[x].host for x in members if by_name[x].host]
        if len(placed) == len(set(placed)):
            groups.append(AntiAffinityGroup(f"g{k}", tuple(members)))
        k += size
    low = rng.choice([30, 50, 70])
    c = Constraints(
        anti_affinity_groups=tuple(groups),
        headroom_percent=headroom,
        max_migrations=rng.choice([None, None, 0, 3, 20]),
        must_stay_on=frozenset(h.name for h in hosts if rng.random() < 0.1),
        min_free_hosts=rng.choice([0, 0, 1, 2]),
        low_watermark_percent=low,
        high_watermark_percent=rng.choice([low, 90, 100]),
    )
    return hosts, vms, c


@pytest.mark.parametrize("seed", range(200))
@pytest.mark.parametrize("mode", [None, Mode.SCALE_DOWN, Mode.SCALE_UP], ids=["auto", "down", "up"])
def test_random_clusters(seed, mode):
    hosts, vms, c = _random_cluster(seed)
    p = plan(hosts, vms, c, mode)
    assert check_plan(hosts, vms, c, p) == [], p.steps
    assert plan(hosts, vms, c, mode) == p  # deterministic
    moved = {s.vm for s in p.migrations}
    assert not moved & {v.name for v in vms if not v.migratable}
    if c.max_migrations is not None:
        assert len(p.migrations) <= c.max_migrations
    assert not set(p.power_off) & c.must_stay_on
    if not p.truncated:
        hosts2, vms2 = apply_plan(hosts, vms, p)
        assert plan(hosts2, vms2, c, mode).migrations == ()


# -- lower bound --------------------------------------------------------------------------------


LOWER_BOUND_CASES = {
    "memory-bound": ([host("a"), host("b"), host("c")], [vm("x", 1, 40, "a"), vm("y", 1, 40, "b")], Constraints(), 2),
    "too-big-to-share": ([host("a"), host("b"), host("c")],
                         [vm("x", 9, 1, "a"), vm("y", 9, 1, "b"), vm("z", 9, 1, "c")], Constraints(), 3),
    "anti-affinity-group": ([host("a"), host("b"), host("c")], [vm("x", 1, 1, "a"), vm("y", 1, 1, "b")],
                            Constraints(anti_affinity_groups=(AntiAffinityGroup("g", ("x", "y")),)), 2),
    "headroom-shrinks-hosts": ([host("a"), host("b")], [vm("x", 1, 60, "a")], Constraints(headroom_percent=10), 2),
}


@pytest.mark.parametrize("case", LOWER_BOUND_CASES.values(), ids=LOWER_BOUND_CASES.keys())
def test_lower_bound(case):
    hosts, vms, c, expected = case
    assert lower_bound(hosts, vms, c) == expected

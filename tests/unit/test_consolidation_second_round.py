"""Table-driven tests of the planner's second round (issue 19): hosts the rankings
miss, the savings trigger, the power model, defragmentation for pending VMs and
shape exchange."""

from __future__ import annotations

import random

import pytest

from benchmarks.consolidation.baselines import BASELINES, run_baseline
from stratus.core.consolidation import (
    Action,
    AntiAffinityGroup,
    Constraints,
    Host,
    Mode,
    Objective,
    Trigger,
    VM,
    apply_plan,
    check_plan,
    plan,
)

GIB = 1024
CORE = 1000
DOWN = dict(low_watermark_percent=100, high_watermark_percent=100)


def host(name: str, cores: int = 16, gib: int = 64, **kw) -> Host:
    return Host(name, cores * CORE, gib * GIB, **kw)


def vm(name: str, cores: int, gib: int, on: str | None, **kw) -> VM:
    return VM(name, cores * CORE, gib * GIB, on, **kw)


def _released(steps) -> int:
    return sum(1 for s in steps if s.action is Action.POWER_OFF)


def _best_baseline(hosts, vms, c) -> tuple[str, int]:
    """The most hosts any baseline releases with a plan the checker accepts (the
    baselines know nothing of the free-host reserve, for one)."""
    best = ("none", 0)
    for name in BASELINES:
        steps, _ = run_baseline(name, tuple(hosts), tuple(vms), c)
        if _released(steps) > best[1] and not check_plan(hosts, vms, c, steps):
            best = (name, _released(steps))
    return best


# -- hosts at the end of both rankings each hold a VM larger than any other host's room ----


def _tail_blocked(big_hosts: int, small_hosts: int, movable_hosts: int, **kw):
    """``small_hosts`` hosts of 12 x 4 GiB (16 GiB free each), ``big_hosts`` hosts
    with one 40 GiB VM each (fewest VMs and least memory: last in both rankings;
    the VM fits in no other host's free room), and ``movable_hosts`` hosts of
    11 x 4 GiB that could be emptied."""
    hosts, vms = [], []
    for k in range(small_hosts):
        hosts.append(host(f"full-{k}"))
        vms += [vm(f"full-{k}-{x}", 1, 4, f"full-{k}") for x in range(12)]
    for k in range(movable_hosts):
        hosts.append(host(f"easy-{k}"))
        vms += [vm(f"easy-{k}-{x}", 1, 4, f"easy-{k}") for x in range(11)]
    for k in range(big_hosts):
        hosts.append(host(f"big-{k}"))
        vms.append(vm(f"big-{k}-0", 1, 40, f"big-{k}"))
    return hosts, vms, Constraints(**DOWN, **kw)


def _mixed_tail():
    """Mixed shapes: CPU-rich hosts at the tail each run one wide VM (12 cores)
    that no memory-rich host has the CPU for."""
    hosts = [host(f"mem-{k}", 16, 128) for k in range(4)] + [host(f"cpu-{k}", 32, 64) for k in range(3)]
    vms = []
    for k in range(4):
        vms += [vm(f"mem-{k}-{x}", 1, 8, f"mem-{k}") for x in range(12)]  # 12 cores, 96 GiB used
    for k in range(3):
        vms.append(vm(f"cpu-{k}-wide", 24, 8, f"cpu-{k}"))
    hosts.append(host("lone", 16, 128))
    vms += [vm(f"lone-{x}", 1, 4, "lone") for x in range(6)]
    return hosts, vms, Constraints(**DOWN)


def _non_migratable_tail():
    hosts, vms, c = _tail_blocked(2, 4, 2)
    vms = [VM(v.name, v.cpu_millicores, v.memory_mib, v.host, migratable=not v.name.startswith("full-0-"))
           for v in vms]
    return hosts, vms, c


TAIL_CASES = {
    # name: (builder, at least this many hosts released)
    "two-big-tail-one-movable": (lambda: _tail_blocked(2, 4, 1), 2),
    "two-big-tail-two-movable": (lambda: _tail_blocked(2, 4, 2), 2),
    "three-big-tail": (lambda: _tail_blocked(3, 5, 1), 2),
    "big-tail-with-free-reserve": (lambda: _tail_blocked(2, 4, 2, min_free_hosts=1), 1),
    "big-tail-with-budget": (lambda: _tail_blocked(2, 4, 2, max_migrations=12), 1),
    "mixed-shapes-wide-vms-at-the-tail": (_mixed_tail, 1),
    "non-migratable-host-and-big-tail": (_non_migratable_tail, 1),
}


@pytest.mark.parametrize("case", TAIL_CASES.values(), ids=TAIL_CASES.keys())
def test_hosts_the_rankings_miss_are_released(case):
    build, at_least = case
    hosts, vms, c = build()
    p = plan(hosts, vms, c, Mode.SCALE_DOWN)
    assert check_plan(hosts, vms, c, p) == []
    assert len(p.power_off) >= at_least, p.message
    name, best = _best_baseline(hosts, vms, c)
    assert len(p.power_off) >= best, f"{name} released {best}, the planner {len(p.power_off)}"
    hosts2, vms2 = apply_plan(hosts, vms, p)
    if not p.truncated:
        assert plan(hosts2, vms2, c, Mode.SCALE_DOWN).migrations == ()


def _random_tail(seed: int):
    """Random clusters with a share of hosts each running one VM too large for
    any other host's free room."""
    rng = random.Random(seed)
    n = rng.randint(6, 24)
    hosts = [host(f"h{k:02d}", rng.choice([16, 32]), rng.choice([64, 128])) for k in range(n)]
    vms = []
    for h in hosts:
        if rng.random() < 0.25:
            vms.append(VM(f"{h.name}-big", h.cpu_millicores // 2, h.memory_mib * 3 // 4, h.name))
            continue
        c, m = h.cpu_millicores, h.memory_mib
        target = rng.uniform(0.3, 0.85)
        k = 0
        while True:
            cores = rng.choice([1, 1, 2, 4])
            gib = cores * rng.choice([2, 4, 8])
            if (h.memory_mib - m + gib * GIB) > target * h.memory_mib or gib * GIB > m or cores * CORE > c:
                break
            vms.append(vm(f"{h.name}-{k}", cores, gib, h.name, migratable=rng.random() > 0.03))
            c -= cores * CORE
            m -= gib * GIB
            k += 1
    names = [v.name for v in vms]
    groups = []
    for g in range(len(names) // 20):
        members = tuple(rng.sample(names, 2))
        where = {v.name: v.host for v in vms}
        if where[members[0]] != where[members[1]]:
            groups.append(AntiAffinityGroup(f"g{g}", members))
    return hosts, vms, Constraints(anti_affinity_groups=tuple(groups), **DOWN)


@pytest.mark.parametrize("seed", range(60))
def test_never_fewer_hosts_than_the_best_baseline(seed):
    hosts, vms, c = _random_tail(seed)
    p = plan(hosts, vms, c, Mode.SCALE_DOWN)
    assert check_plan(hosts, vms, c, p) == []
    name, best = _best_baseline(hosts, vms, c)
    assert len(p.power_off) >= best, f"{name} released {best}, the planner {len(p.power_off)}"


# -- the savings trigger -------------------------------------------------------------------


def _spread(n: int, per_host: int, gib: int = 4):
    """``n`` 16-core / 64 GiB hosts with ``per_host`` 1-core VMs each."""
    hosts = [host(f"h{k}") for k in range(n)]
    vms = [vm(f"h{k}-{x}", 1, gib, f"h{k}") for k in range(n) for x in range(per_host)]
    return hosts, vms


TRIGGER_CASES = {
    # 10 hosts at 55 % memory: watermarks hold, savings act (a fifth of the hosts or more).
    "watermarks-hold-at-55": (dict(trigger=Trigger.WATERMARKS), 9, Mode.HOLD, "WithinWatermarks", 0),
    "savings-act-at-55": (dict(), 9, Mode.SCALE_DOWN, "SavingAboveFloor", 2),
    # Floor of 3 migrations per host: emptying a 9-VM host never pays.
    "savings-below-floor": (dict(max_migrations_per_host=3), 9, Mode.HOLD, "SavingBelowFloor", 0),
    # Power: a host idles at 100 W; 9 migrations to save ~100 W is 11 W each.
    "power-pays": (dict(objective=Objective.POWER, min_watts_per_migration=10), 9, Mode.SCALE_DOWN,
                   "SavingAboveFloor", 2),
    "power-below-floor": (dict(objective=Objective.POWER, min_watts_per_migration=20), 9, Mode.HOLD,
                          "SavingBelowFloor", 0),
}


@pytest.mark.parametrize("case", TRIGGER_CASES.values(), ids=TRIGGER_CASES.keys())
def test_trigger(case):
    kw, per_host, mode, reason, at_least_off = case
    hosts, vms = _spread(10, per_host)
    c = Constraints(low_watermark_percent=50, high_watermark_percent=90, **kw)
    p = plan(hosts, vms, c)
    assert p.mode is mode
    assert p.reason == reason
    assert p.message  # says why it acted or held
    assert check_plan(hosts, vms, c, p) == []
    assert len(p.power_off) >= at_least_off
    if reason == "SavingBelowFloor":
        assert "does not pay" in p.message and p.steps == ()
    if mode is Mode.SCALE_DOWN:
        assert p.figures.watts_after < p.figures.watts_before
        assert p.figures.energy_saved_wh_per_day == (p.figures.watts_before - p.figures.watts_after) * 24
        assert "kWh/day" in p.message


def test_nothing_to_save_says_so():
    hosts, vms = _spread(2, 10, gib=4)
    p = plan(hosts, vms, Constraints())
    assert p.mode is Mode.HOLD and p.reason == "NoSaving" and p.steps == ()


# -- the power model -------------------------------------------------------------------------


def test_watts_are_linear_in_cpu_requested():
    h = Host("h", 32 * CORE, 128 * GIB, idle_watts=120, peak_watts=420)
    assert h.watts(0) == 120
    assert h.watts(16 * CORE) == 270
    assert h.watts(32 * CORE) == 420
    assert h.watts(64 * CORE) == 420


def test_power_objective_keeps_the_efficient_hosts():
    """Two hungry hosts and two frugal ones, each half full: by host count any two
    may go; by power the hungry ones go."""
    hosts = [Host("hungry-0", 16 * CORE, 64 * GIB, idle_watts=250, peak_watts=500),
             Host("frugal-0", 16 * CORE, 64 * GIB, idle_watts=80, peak_watts=300),
             Host("hungry-1", 16 * CORE, 64 * GIB, idle_watts=250, peak_watts=500),
             Host("frugal-1", 16 * CORE, 64 * GIB, idle_watts=80, peak_watts=300)]
    vms = [vm(f"{h.name}-{x}", 2, 8, h.name) for h in hosts for x in range(3)]
    # The hungry hosts hold more VMs, so the host-count rankings keep them.
    vms += [vm(f"{h.name}-extra", 1, 2, h.name) for h in hosts if h.name.startswith("hungry")]
    c = Constraints(objective=Objective.POWER, **DOWN)
    p = plan(hosts, vms, c, Mode.SCALE_DOWN)
    assert check_plan(hosts, vms, c, p) == []
    assert sorted(p.power_off) == ["hungry-0", "hungry-1"]
    by_hosts = plan(hosts, vms, Constraints(**DOWN), Mode.SCALE_DOWN)
    assert len(by_hosts.power_off) == 2
    assert p.figures.watts_after <= by_hosts.figures.watts_after


# -- defragmentation for pending VMs -----------------------------------------------------------


def _defrag_case(budget=None, standby=False):
    """Three 16c/64G hosts with seven 8 GiB VMs each (8 GiB free each): a 24 GiB
    pending VM fits on none until two small VMs move; a 100 GiB one fits on no
    host at all."""
    hosts = [host(n) for n in "abc"]
    if standby:
        hosts.append(host("spare", 16, 16, powered_on=False, standby=True))
    vms = [vm(f"{h}{k}", 1, 8, h) for h in "abc" for k in range(7)]
    vms += [vm("big", 2, 24, None), vm("huge", 2, 100, None)]
    return hosts, vms, Constraints(max_migrations=budget)


DEFRAG_CASES = {
    "two-migrations-make-a-hole": (dict(), ["huge"], 2),
    "standby-too-small-still-defragments": (dict(standby=True), ["huge"], 2),
    "budget-too-small": (dict(budget=1), ["big", "huge"], 0),
}


@pytest.mark.parametrize("case", DEFRAG_CASES.values(), ids=DEFRAG_CASES.keys())
def test_defragmentation_places_pending_vms(case):
    kw, unplaced, migrations = case
    hosts, vms, c = _defrag_case(**kw)
    p = plan(hosts, vms, c)
    assert p.mode is Mode.SCALE_UP
    assert check_plan(hosts, vms, c, p) == []
    assert sorted(p.unplaced) == unplaced
    assert len(p.migrations) == migrations
    why = dict(p.unplaced_reasons)
    assert why["huge"].startswith("TooLarge")
    if "big" in unplaced:
        assert why["big"].startswith("NoRoom") and p.truncated
    else:
        placed = [s for s in p.steps if s.action is Action.PLACE and s.vm == "big"]
        assert placed and all(s.wave > m.wave for s in placed for m in p.migrations)


def test_defragmentation_respects_anti_affinity():
    hosts, vms, _ = _defrag_case()
    c = Constraints(anti_affinity_groups=(AntiAffinityGroup("g", ("big", "a0", "b0", "c0")),))
    p = plan(hosts, vms, c)
    assert check_plan(hosts, vms, c, p) == []
    assert "big" in p.unplaced


# -- shape exchange ------------------------------------------------------------------------------


def _exchange_case(objective=Objective.HOSTS, **kw):
    """Four small active hosts, each half full with VMs too large to pair up on
    the others, and one large standby host that takes them all."""
    hosts = [host(f"small-{k}", 16, 64) for k in range(4)]
    hosts.append(Host("large", 96 * CORE, 768 * GIB, powered_on=False, standby=True, idle_watts=190, peak_watts=620))
    vms = [vm(f"small-{k}-{x}", 4, 20, f"small-{k}") for k in range(4) for x in range(2)]
    return hosts, vms, Constraints(objective=objective, **DOWN, **kw)


def test_shape_exchange_powers_on_a_large_standby_host():
    hosts, vms, c = _exchange_case()
    p = plan(hosts, vms, c, Mode.SCALE_DOWN)
    assert check_plan(hosts, vms, c, p) == []
    assert p.power_on == ("large",)
    assert len(p.power_off) >= 3
    assert p.figures.hosts_on_after < p.figures.hosts_on_before
    assert p.steps[0].action is Action.POWER_ON


def test_shape_exchange_not_taken_when_it_does_not_reduce_the_objective():
    """Power objective with a large host that idles at 900 W: it replaces four
    small hosts drawing 200 W each only at a loss."""
    hosts, vms, c = _exchange_case(Objective.POWER)
    hosts[-1] = Host("large", 96 * CORE, 768 * GIB, powered_on=False, standby=True, idle_watts=900, peak_watts=1200)
    p = plan(hosts, vms, c, Mode.SCALE_DOWN)
    assert check_plan(hosts, vms, c, p) == []
    assert p.power_on == ()


def test_shape_exchange_counts_migrations_against_the_floor():
    hosts, vms, c = _exchange_case(max_migrations_per_host=1)
    c = Constraints(max_migrations_per_host=1)
    p = plan(hosts, vms, c)
    assert p.power_on == () and p.reason == "SavingBelowFloor"

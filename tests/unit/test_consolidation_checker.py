"""The independent plan checker must catch every kind of broken plan."""

from __future__ import annotations

import pytest

from stratus.core.consolidation import Action, AntiAffinityGroup, Constraints, Host, Step, VM, check_plan

GIB = 1024
CORE = 1000

HOSTS = [
    Host("a", 8 * CORE, 32 * GIB),
    Host("b", 8 * CORE, 32 * GIB),
    Host("c", 8 * CORE, 32 * GIB),
    Host("off", 8 * CORE, 32 * GIB, powered_on=False, standby=True),
    Host("broken", 8 * CORE, 32 * GIB, powered_on=False),
    Host("fenced", 8 * CORE, 32 * GIB, cordoned=True),
]
VMS = [
    VM("x", 5 * CORE, 8 * GIB, "a"),
    VM("y", 2 * CORE, 8 * GIB, "b"),
    VM("q", 4 * CORE, 8 * GIB, "b"),
    VM("z", 1 * CORE, 1 * GIB, "c", migratable=False),
    VM("pending", 1 * CORE, 1 * GIB, None),
    VM("w", 1 * CORE, 1 * GIB, "c"),
]
BASE = Constraints(anti_affinity_groups=(AntiAffinityGroup("g", ("y", "w")),))


def mig(vm, source, target, wave=0):
    return Step(Action.MIGRATE, target, vm=vm, source=source, wave=wave)


CASES = {
    # name: (steps, constraints, expected violation kinds)
    "valid": ([mig("w", "c", "a"), Step(Action.PLACE, "c", vm="pending", wave=1)], BASE, []),
    "overfill": ([mig("x", "a", "b")], BASE, ["Overfill"]),
    "headroom-overfill": ([mig("w", "c", "a")], Constraints(headroom_percent=30), ["Overfill"]),
    "anti-affinity": ([mig("w", "c", "b")], BASE, ["AntiAffinity"]),
    "non-migratable": ([mig("z", "c", "a")], BASE, ["NotMigratable"]),
    "wrong-source": ([mig("x", "b", "c")], BASE, ["WrongSource"]),
    "target-powered-off": ([mig("w", "c", "off")], BASE, ["TargetNotInService"]),
    "target-cordoned": ([mig("w", "c", "fenced")], BASE, ["CordonedHost"]),
    "power-off-busy-host": ([Step(Action.POWER_OFF, "a")], BASE, ["HostNotEmpty"]),
    "power-off-must-stay-on": (
        [mig("x", "a", "c"), Step(Action.POWER_OFF, "a", wave=1)],
        Constraints(must_stay_on=frozenset({"a"})), ["MustStayOn"],
    ),
    "free-host-reserve": (
        [mig("x", "a", "c"), Step(Action.POWER_OFF, "a", wave=1)],
        Constraints(min_free_hosts=1), ["FreeHostReserve"],
    ),
    "budget": ([mig("w", "c", "a"), mig("y", "b", "c", wave=1)], Constraints(max_migrations=1), ["MigrationBudget"]),
    "power-on-out-of-service": ([Step(Action.POWER_ON, "broken")], BASE, ["NotWakeable"]),
    "place-running-vm": ([Step(Action.PLACE, "c", vm="x")], BASE, ["NotPending"]),
    "unknown-names": ([mig("nope", "a", "b"), Step(Action.POWER_ON, "nowhere")], BASE, ["UnknownHost", "UnknownVM"]),
    # Safe one by one, unsafe if the wave runs concurrently: q must leave b
    # before x arrives, so they may not share a wave.
    "wave-overfill": ([mig("q", "b", "c"), mig("x", "a", "b")], BASE, ["WaveOverfill"]),
    "same-moves-in-two-waves": ([mig("q", "b", "c"), mig("x", "a", "b", wave=1)], BASE, []),
    "wave-anti-affinity": ([mig("y", "b", "a"), mig("w", "c", "b")], BASE, ["WaveAntiAffinity"]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_checker(case):
    steps, constraints, expected = case
    kinds = sorted(v.kind for v in check_plan(HOSTS, VMS, constraints, steps))
    assert kinds == sorted(expected)

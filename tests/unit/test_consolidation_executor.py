"""One execution pass of a ConsolidationPlan (stratus.core.consolidation.executor):
action states, host actions and the plan's end, driven with an in-memory host layer.
Table-driven, no cluster, a fixed clock."""

from __future__ import annotations

import copy
import datetime

import pytest

from stratus.api.consolidationplan import PlanPhase
from stratus.core.consolidation import executor as ex
from stratus.core.consolidation import inputs as ci
from tests.fakes.hosts import RecordingHosts
from tests.unit.test_consolidation_inputs import bmn, launcher, node, vmi

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
LONG_AGO = "2026-01-01T11:00:00Z"  # an hour before NOW: past every timeout
JUST_NOW = "2026-01-01T11:59:59Z"
POLICY = {"powerTimeoutSeconds": 600, "migrationTimeoutSeconds": 600,
          "parallelMigrationsPerCluster": 5, "parallelOutboundMigrationsPerNode": 2}

MIG_V1 = {"type": "Migrate", "vm": "ns/v1", "source": "h1", "host": "h2", "wave": 0}
OFF_H1 = {"type": "PowerOff", "host": "h1", "wave": 1}
ON_H3 = {"type": "PowerOn", "host": "h3", "wave": 0}
PLACE_V9 = {"type": "Place", "vm": "ns/v9", "host": "h2", "wave": 1}


def plan(actions, statuses=None, cancel=False, name="p1"):
    st = {"actions": statuses} if statuses is not None else {}
    return {"metadata": {"name": name}, "spec": {"actions": actions, "cancel": cancel}, "status": st}


def world(nodes=(), bmns=(), vmis=(), pods=()):
    return {"nodes": list(nodes), "bmns": list(bmns), "vmis": list(vmis), "pods": list(pods)}


def migration(name, ns="ns", phase="Running", vmi_name="v1", failure=None):
    status = {"phase": phase}
    if failure:
        status["migrationState"] = {"failureReason": failure}
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"vmiName": vmi_name}, "status": status}


def running(i, started=JUST_NOW, **extra):
    return {"index": i, "state": "Running", "startedAt": started, **extra}


def one_pass(actions, statuses=None, w=None, migrations=(), cancel=False, pod_messages=None):
    io = RecordingHosts(pod_messages)
    p = ex.Pass(plan(actions, statuses, cancel), POLICY, copy.deepcopy(w or world()), copy.deepcopy(list(migrations)), NOW)
    return p, ex.run(p, io), io


MIG_NAME = ci.migration_name("p1", 0, "ns/v1")


@pytest.mark.parametrize(
    "actions, states, expected",
    [
        ([MIG_V1, OFF_H1], ["Pending", "Pending"], [0]),
        ([MIG_V1, OFF_H1], ["Running", "Pending"], []),
        ([MIG_V1, OFF_H1], ["Succeeded", "Pending"], [1]),
        ([MIG_V1, OFF_H1], ["Skipped", "Pending"], [1]),
        ([MIG_V1, OFF_H1], ["Failed", "Pending"], []),
        ([ON_H3, MIG_V1, OFF_H1], ["Pending", "Pending", "Pending"], [0, 1]),
        ([MIG_V1, OFF_H1], ["Succeeded", "Succeeded"], []),
    ],
    ids=["first-wave", "earlier-running", "earlier-done", "earlier-skipped", "earlier-failed", "same-wave", "all-done"],
)
def test_which_actions_may_start(actions, states, expected):
    assert ex.current_wave(actions, states) == expected


@pytest.mark.parametrize(
    "action, text",
    [(MIG_V1, "Migrate ns/v1 from h1 to h2"), (PLACE_V9, "Place ns/v9 on h2"), (OFF_H1, "PowerOff h1")],
    ids=["migrate", "place", "power"],
)
def test_actions_are_described_for_people(action, text):
    assert ex.describe(action) == text


HEALTHY = world(nodes=[node("h1", bmn="h1"), node("h2", bmn="h2")], bmns=[bmn("h1"), bmn("h2")], vmis=[vmi("v1", "h1")])

# (id, actions, statuses, world, migrations, expected states, expected host calls, expected final phase)
PASSES = [
    ("migration-starts-and-source-is-cordoned", [MIG_V1, OFF_H1], None, HEALTHY, [],
     ["Running", "Pending"], [("cordon", "h1", "p1"), ("create_migration", "ns", MIG_NAME, "h2")], None),
    ("migration-found-after-restart", [MIG_V1], None, HEALTHY, [migration(MIG_NAME)],
     ["Running"], [("cordon", "h1", "p1")], None),
    ("vm-already-on-target", [MIG_V1], None,
     world(nodes=[node("h1"), node("h2")], vmis=[vmi("v1", "h2")]), [],
     ["Succeeded"], [("cordon", "h1", "p1"), ("uncordon", "h1")], PlanPhase.SUCCEEDED),
    ("vm-gone", [MIG_V1], None, world(nodes=[node("h1"), node("h2")]), [],
     ["Skipped"], [("cordon", "h1", "p1"), ("uncordon", "h1")], PlanPhase.SUCCEEDED),
    ("target-cordoned-fails-the-plan", [MIG_V1, OFF_H1], None,
     world(nodes=[node("h1"), node("h2", unschedulable=True)], vmis=[vmi("v1", "h1")]), [],
     ["Failed", "Skipped"], [("cordon", "h1", "p1"), ("uncordon", "h1")], PlanPhase.FAILED),
    ("cluster-limit-waits", [MIG_V1], None, HEALTHY,
     [migration(f"other-{i}", vmi_name=f"x{i}") for i in range(5)],
     ["Pending"], [("cordon", "h1", "p1")], None),
    ("migration-succeeded", [MIG_V1], [running(0, migration=MIG_NAME)],
     world(nodes=[node("h1", cordoned_by="p1"), node("h2")], vmis=[vmi("v1", "h2")]),
     [migration(MIG_NAME, phase="Succeeded")], ["Succeeded"], [("uncordon", "h1")], PlanPhase.SUCCEEDED),
    ("migration-failed", [MIG_V1], [running(0, migration=MIG_NAME)],
     world(nodes=[node("h1", cordoned_by="p1"), node("h2")], vmis=[vmi("v1", "h1")]),
     [migration(MIG_NAME, phase="Failed", failure="no room")], ["Failed"], [("uncordon", "h1")], PlanPhase.FAILED),
    ("migration-timed-out-is-cancelled", [MIG_V1], [running(0, started=LONG_AGO, migration=MIG_NAME)],
     world(nodes=[node("h1", cordoned_by="p1"), node("h2")], vmis=[vmi("v1", "h1")]),
     [migration(MIG_NAME, phase="Scheduling")], ["Failed"],
     [("delete_migration", "ns", MIG_NAME), ("uncordon", "h1")], PlanPhase.FAILED),
    ("migration-disappeared", [MIG_V1], [running(0, migration=MIG_NAME)],
     world(nodes=[node("h1", cordoned_by="p1"), node("h2")], vmis=[vmi("v1", "h1")]), [],
     ["Failed"], [("uncordon", "h1")], PlanPhase.FAILED),
    ("power-off-switches-the-bmn", [OFF_H1], None,
     world(nodes=[node("h1", bmn="h1")], bmns=[{**bmn("h1"), "spec": {"online": True}}]), [],
     ["Running"], [("cordon", "h1", "p1"), ("set_online", "h1", False)], None),
    ("power-off-refused-while-a-vm-runs", [OFF_H1], None,
     world(nodes=[node("h1", bmn="h1", cordoned_by="p1")], bmns=[{**bmn("h1"), "spec": {"online": True}}],
           vmis=[vmi("v1", "h1")]), [],
     ["Failed"], [("uncordon", "h1")], PlanPhase.FAILED),
    ("power-off-waits-for-launcher-pods", [OFF_H1], None,
     world(nodes=[node("h1", bmn="h1", cordoned_by="p1")], bmns=[{**bmn("h1"), "spec": {"online": True}}],
           pods=[launcher("v1", "h1")]), [],
     ["Running"], [], None),
    ("power-off-done-when-the-bmc-says-off", [OFF_H1], [running(0)],
     world(nodes=[node("h1", bmn="h1", cordoned_by="p1")], bmns=[{**bmn("h1", powered_on=False), "spec": {"online": False}}]),
     [], ["Succeeded"], [], PlanPhase.SUCCEEDED),
    ("power-off-times-out", [OFF_H1], [running(0, started=LONG_AGO)],
     world(nodes=[node("h1", bmn="h1", cordoned_by="p1")], bmns=[{**bmn("h1", powered_on=True), "spec": {"online": False}}]),
     [], ["Failed"], [("uncordon", "h1")], PlanPhase.FAILED),
    ("power-on-switches-the-bmn", [ON_H3], None,
     world(nodes=[node("h3", bmn="h3", ready=False)], bmns=[bmn("h3", powered_on=False)]), [],
     ["Running"], [("set_online", "h3", True)], None),
    ("power-on-done-when-ready", [ON_H3], [running(0)],
     world(nodes=[node("h3", bmn="h3")], bmns=[bmn("h3", powered_on=True)]), [],
     ["Succeeded"], [("uncordon", "h3")], PlanPhase.SUCCEEDED),
    ("power-on-without-bmn-fails", [ON_H3], None, world(nodes=[node("h3")]), [],
     ["Failed"], [], PlanPhase.FAILED),
    ("place-succeeds-once-scheduled", [PLACE_V9], [running(0)],
     world(vmis=[vmi("v9", "h2")]), [], ["Succeeded"], [], PlanPhase.SUCCEEDED),
    ("place-waits", [PLACE_V9], [running(0)], world(vmis=[vmi("v9")]), [], ["Running"], [], None),
    ("place-skipped-after-grace", [PLACE_V9], [running(0, started=LONG_AGO)],
     world(vmis=[vmi("v9")]), [], ["Skipped"], [], PlanPhase.SUCCEEDED),
]


@pytest.mark.parametrize("actions, statuses, w, migrations, states, calls, final", [c[1:] for c in PASSES],
                         ids=[c[0] for c in PASSES])
def test_one_pass(actions, statuses, w, migrations, states, calls, final):
    p, outcome, io = one_pass(actions, statuses, w, migrations)
    assert p.states() == states
    assert io.calls == calls
    assert (outcome.final[0] if outcome.final else None) == final
    if final is None:
        assert "message" in outcome.patch
    failed = [s for s in p.statuses if s["state"] == "Failed"]
    assert [(e[0], e[1]) for e in outcome.events] == [("Warning", "ActionFailed")] * len(failed)


def test_timed_out_migration_reports_the_schedulers_message():
    _, outcome, _ = one_pass([MIG_V1], [running(0, started=LONG_AGO, migration=MIG_NAME)],
                             world(nodes=[node("h1"), node("h2")], vmis=[vmi("v1", "h1")]),
                             [migration(MIG_NAME, phase="Scheduling")],
                             pod_messages={("ns", MIG_NAME): "target Pod unschedulable: 0/3 nodes"})
    assert "0/3 nodes" in outcome.final[2] and "cancelled" in outcome.final[2]


def test_cancel_stops_before_anything_new_starts():
    p, outcome, io = one_pass([MIG_V1, OFF_H1], None, HEALTHY, cancel=True)
    assert p.states() == ["Skipped", "Skipped"]
    assert io.calls == []  # nothing cordoned, nothing started
    assert outcome.final[:2] == (PlanPhase.CANCELLED, "Cancelled")


def test_a_failure_waits_for_running_migrations_to_finish():
    actions = [MIG_V1, {**MIG_V1, "vm": "ns/v2"}]
    other = ci.migration_name("p1", 1, "ns/v2")
    statuses = [running(0, migration=MIG_NAME), running(1, migration=other)]
    w = world(nodes=[node("h1", cordoned_by="p1"), node("h2")], vmis=[vmi("v1", "h1"), vmi("v2", "h1")])
    p, outcome, io = one_pass(actions, statuses, w, [migration(MIG_NAME, phase="Failed"), migration(other, vmi_name="v2")])
    assert p.states() == ["Failed", "Running"]
    assert outcome.final is None and "stopping after a failure" in outcome.patch["message"]
    assert io.calls == []  # nobody is uncordoned while a migration still runs


def test_an_unchanged_pass_writes_nothing():
    statuses = [running(0)]
    p = ex.Pass(plan([PLACE_V9], statuses), POLICY, world(vmis=[vmi("v9")]), [], NOW)
    first = ex.run(p, RecordingHosts())
    again = ex.Pass({**plan([PLACE_V9], statuses), "status": {"actions": statuses, **first.patch}}, POLICY,
                    world(vmis=[vmi("v9")]), [], NOW)
    assert ex.run(again, RecordingHosts()).patch is None


def test_the_plan_cordons_only_the_hosts_it_empties():
    actions = [
        {"type": "Migrate", "vm": "v1", "source": "kept-a", "host": "kept-b"},
        {"type": "Migrate", "vm": "v2", "source": "gone", "host": "kept-a"},
        {"type": "PowerOff", "host": "gone"},
    ]
    assert ex.hosts_to_cordon(actions) == ["gone"]

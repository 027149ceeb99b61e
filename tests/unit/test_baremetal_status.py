"""The bare-metal loop's decisions beyond the state machine (stratus.core.baremetal_status):
what the hypervisor's Kubernetes Node becomes, which status fields are worth a write,
and the events for history entries. Table-driven, no cluster."""

from __future__ import annotations

import pytest

from stratus.api.baremetalnode import NODE_LABEL
from stratus.core import baremetal as bm
from stratus.core import baremetal_status as bst

S = bm.State
ON, OFF = bm.Power.ON, bm.Power.OFF


def existing(ours=True, managed=False):
    meta = {"name": "bm0", "labels": {NODE_LABEL: "bm0"} if ours else {},
            "annotations": {bst.KWOK_ANNOTATION: "fake"} if managed else {}}
    return {"metadata": meta}


# (id, hypervisor, state, power, mode, node, expected)
NODE_CASES = [
    ("tenant-has-no-node", False, S.PROVISIONED, ON, "kwok", None, bst.NodeSync(node_name="")),
    ("deprovisioned-kwok-node-deleted", True, S.AVAILABLE, OFF, "kwok", existing(), bst.NodeSync(delete=True, node_name="")),
    ("deprovisioned-foreign-node-kept", True, S.AVAILABLE, OFF, "kwok", existing(ours=False), bst.NodeSync(node_name="")),
    ("deprovisioned-external-node-kept", True, S.AVAILABLE, OFF, "external", existing(), bst.NodeSync(node_name="")),
    ("paused-leaves-everything", True, S.PAUSED, ON, "kwok", existing(), bst.NodeSync(node_name=None)),
    ("detached-leaves-everything", True, S.DETACHED, ON, "kwok", existing(), bst.NodeSync(node_name=None)),
    ("kwok-on-registers-managed", True, S.PROVISIONED, ON, "kwok", None, bst.NodeSync(register=True, node_name="bm0")),
    ("kwok-off-not-registered-yet", True, S.PROVISIONED, OFF, "kwok", None, bst.NodeSync(node_name="")),
    ("kwok-on-and-managed-reapplied", True, S.PROVISIONED, ON, "kwok", existing(managed=True),
     bst.NodeSync(register=True, node_name="bm0")),
    ("kwok-switched-off-re-registers-unmanaged", True, S.PROVISIONED, OFF, "kwok", existing(managed=True),
     bst.NodeSync(delete=True, register=False, mark_not_ready=True, node_name="bm0")),
    ("kwok-switched-on-re-registers-managed", True, S.PROVISIONED, ON, "kwok", existing(managed=False),
     bst.NodeSync(delete=True, register=True, node_name="bm0")),
    ("kwok-unknown-power-is-off", True, S.PROVISIONED, None, "kwok", existing(managed=False),
     bst.NodeSync(register=False, mark_not_ready=True, node_name="bm0")),
    ("external-waits-for-the-kubelet", True, S.PROVISIONED, ON, "external", None, bst.NodeSync(node_name="")),
    ("external-labels-the-kubelets-node", True, S.PROVISIONED, ON, "external", existing(ours=False),
     bst.NodeSync(label=True, node_name="bm0")),
    ("external-already-labelled", True, S.PROVISIONED, ON, "external", existing(), bst.NodeSync(node_name="bm0")),
]


@pytest.mark.parametrize("hypervisor, state, power, mode, node, expected", [c[1:] for c in NODE_CASES],
                         ids=[c[0] for c in NODE_CASES])
def test_the_node_follows_the_machine(hypervisor, state, power, mode, node, expected):
    assert bst.node_sync("bm0", hypervisor=hypervisor, state=state, power=power, mode=mode, existing=node) == expected


def test_kwok_node_is_managed_only_while_ready():
    assert bst.kwok_node("bm0", "bm0", True)["metadata"]["annotations"].get(bst.KWOK_ANNOTATION)
    off = bst.kwok_node("bm0", "bm0", False)
    assert off["metadata"]["annotations"] == {} and off["metadata"]["labels"][NODE_LABEL] == "bm0"
    cond = bst.powered_off_node_status("bm0", "2026-01-01T00:00:00Z")["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Ready", "False", "BareMetalPoweredOff")


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ({"phase": "Available"}, {"phase": "Available"}, {}),
        ({"phase": "Available", "lastPowerCheck": "a"}, {"phase": "Available", "lastPowerCheck": "b"}, {}),
        ({"phase": "Available", "lastPowerCheck": "a"}, {"phase": "Provisioning", "lastPowerCheck": "b"},
         {"phase": "Provisioning", "lastPowerCheck": "b"}),
        ({}, {"poweredOn": False}, {"poweredOn": False}),
    ],
    ids=["unchanged", "power-check-alone", "power-check-rides-along", "new-field"],
)
def test_which_status_fields_are_written(old, new, expected):
    assert bst.status_changes(old, new) == expected


@pytest.mark.parametrize(
    "entry, expected",
    [
        (bm.HistoryEntry("t", S.REGISTERING, S.INSPECTING, "registered", "ok"), ("Normal", "Registered", "registering -> inspecting: ok")),
        (bm.HistoryEntry("t", None, S.REGISTERING, "created"), ("Normal", "Created", "new -> registering")),
        (bm.HistoryEntry("t", S.AVAILABLE, S.POWER_MANAGEMENT_ERROR, "error", "BMCUnreachable: no answer", ("power_on",)),
         ("Warning", "BMCUnreachable", "available -> power-management-error: BMCUnreachable: no answer [power_on]")),
    ],
    ids=["transition", "first", "error"],
)
def test_history_entries_become_events(entry, expected):
    assert bst.history_events([entry]) == [expected]

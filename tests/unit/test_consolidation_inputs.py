"""The translation from cluster objects to the consolidation planner's inputs, and from
plans to actions (stratus.core.consolidation.inputs). Table-driven, no cluster."""

from __future__ import annotations

import pytest

from stratus.api.consolidationplan import ConsolidationPlanSpec
from stratus.core import consolidation as planner
from stratus.core.consolidation import inputs as ci

POLICY = {"headroomPercent": 0, "maxMigrationsPerCycle": 50, "lowWatermarkPercent": 50, "highWatermarkPercent": 90}


def node(name, cpu="32", memory="128Gi", ready=True, bmn=None, unschedulable=False, cordoned_by=None, schedulable=True):
    labels = {"kubernetes.io/hostname": name}
    if schedulable:
        labels[ci.SCHEDULABLE_LABEL] = "true"
    if bmn:
        labels[ci.BMN_LABEL] = bmn
    ann = {ci.CORDONED_BY: cordoned_by} if cordoned_by else {}
    return {"metadata": {"name": name, "labels": labels, "annotations": ann},
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {"allocatable": {"cpu": cpu, "memory": memory},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def bmn(name, powered_on=True, role="hypervisor", state="provisioned", labels=None, node_name=None, hardware=None, **ann):
    status = {"poweredOn": powered_on, "provisioningState": state, "nodeName": name if node_name is None else node_name}
    if hardware:
        status["hardware"] = hardware
    return {"metadata": {"name": name, "labels": labels or {}, "annotations": ann}, "spec": {"role": role}, "status": status}


def vmi(name, node_name=None, cpu="1", memory="2Gi", ns="ns", migratable=True, uid=None, **spec):
    conds = [] if migratable is None else [{"type": "LiveMigratable", "status": "True" if migratable else "False"}]
    status = {"phase": "Running" if node_name else "Scheduling", "conditions": conds}
    if node_name:
        status["nodeName"] = node_name
    return {"metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}", "labels": spec.pop("labels", {})},
            "spec": {"domain": {"resources": {"requests": {"cpu": cpu, "memory": memory}}}, **spec},
            "status": status}


def launcher(vm_name, node_name=None, cpu="1", memory="2Gi", ns="ns", unschedulable=False, target=None):
    labels = {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": f"uid-{vm_name}", "vm.kubevirt.io/name": vm_name}
    if target:
        labels["kubevirt.io/migration-target"] = target
    status = {"phase": "Running" if node_name else "Pending"}
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": "0/3 nodes are available: 3 Insufficient cpu."}]
    spec = {"containers": [{"name": "compute", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": {"name": f"virt-launcher-{vm_name}", "namespace": ns, "labels": labels}, "spec": spec, "status": status}


def other_pod(name, node_name, cpu="2", memory="4Gi", daemon=True):
    owners = [{"kind": "DaemonSet", "name": "ds"}] if daemon else [{"kind": "ReplicaSet", "name": "rs"}]
    return {"metadata": {"name": name, "namespace": "kube-system", "labels": {}, "ownerReferences": owners},
            "spec": {"nodeName": node_name, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
            "status": {"phase": "Running"}}


def host(state, name):
    return next(h for h in state.hosts if h.name == name)


# ------------------------------------------------------------------------------------------
# hosts
# ------------------------------------------------------------------------------------------

HOST_CASES = [
    # name, nodes, bmns, pool, expected (powered_on, standby, cordoned, must_stay_on) of host "h1"
    ("no BareMetalNode: always on, must stay on", [node("h1")], [], {}, (True, False, False, True)),
    ("no BareMetalNode and NotReady: out of service", [node("h1", ready=False)], [], {}, (False, False, False, True)),
    ("hypervisor on, in the pool", [node("h1", bmn="b1")], [bmn("b1", node_name="h1")], {}, (True, False, False, False)),
    ("hypervisor off: standby", [node("h1", bmn="b1", ready=False)], [bmn("b1", powered_on=False, node_name="h1")], {},
     (False, True, False, False)),
    ("on but the Node is not Ready yet: out of service", [node("h1", bmn="b1", ready=False)],
     [bmn("b1", node_name="h1")], {}, (False, False, False, False)),
    ("tenant role: not powerable", [node("h1", bmn="b1")], [bmn("b1", role="tenant", node_name="h1")], {},
     (True, False, False, True)),
    ("not provisioned: not powerable", [node("h1", bmn="b1")], [bmn("b1", state="available", node_name="h1")], {},
     (True, False, False, True)),
    ("paused BareMetalNode: not powerable", [node("h1", bmn="b1")],
     [bmn("b1", node_name="h1", **{"stratus.dev/paused": ""})], {}, (True, False, False, True)),
    ("outside the standby pool", [node("h1", bmn="b1")], [bmn("b1", labels={"pool": "b"}, node_name="h1")],
     {"matchLabels": {"pool": "a"}}, (True, False, False, True)),
    ("inside the standby pool (expression)", [node("h1", bmn="b1")], [bmn("b1", labels={"pool": "a"}, node_name="h1")],
     {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a", "c"]}]}, (True, False, False, False)),
    ("an operator's cordon is kept", [node("h1", bmn="b1", unschedulable=True)], [bmn("b1", node_name="h1")], {},
     (True, False, True, False)),
    ("consolidation's cordon on a standby host is not a cordon", [node("h1", bmn="b1", ready=False, unschedulable=True,
                                                                        cordoned_by="p1")],
     [bmn("b1", powered_on=False, node_name="h1")], {}, (False, True, False, False)),
    ("mapped by status.nodeName when the Node has no label", [node("h1")], [bmn("b1", node_name="h1")], {},
     (True, False, False, False)),
    ("a Pod that is not a VM pins the host", [node("h1", bmn="b1")], [bmn("b1", node_name="h1")], {},
     (True, False, False, True)),
]


@pytest.mark.parametrize("name,nodes,bmns,pool,expected", HOST_CASES, ids=[c[0] for c in HOST_CASES])
def test_hosts(name, nodes, bmns, pool, expected):
    pods = [other_pod("web", "h1", daemon=False)] if "not a VM" in name else []
    state = ci.cluster_state(nodes, bmns, [], pods, {**POLICY, "standbyPool": pool})
    h = host(state, "h1")
    assert (h.powered_on, h.standby, h.cordoned, "h1" in state.constraints.must_stay_on) == expected


def test_capacity_is_allocatable_minus_pods_that_are_not_vms():
    state = ci.cluster_state([node("h1", cpu="32", memory="128Gi")], [], [vmi("a", "h1")],
                             [other_pod("ds", "h1", cpu="500m", memory="1Gi"), launcher("a", "h1")], POLICY)
    h = host(state, "h1")
    assert (h.cpu_millicores, h.memory_mib) == (31500, 127 * 1024)
    assert "h1" in state.constraints.must_stay_on  # no BareMetalNode
    assert state.info["h1"].pinned_reason.startswith("no BareMetalNode")


def test_nodes_without_the_schedulable_label_are_not_hosts():
    state = ci.cluster_state([node("h1"), node("cp", schedulable=False)], [], [], [], POLICY)
    assert [h.name for h in state.hosts] == ["h1"]


def test_standby_baremetalnode_without_a_node_is_sized_from_its_inventory():
    hw = {"cpu": {"count": 16}, "memory": {"totalMiB": 65536}}
    state = ci.cluster_state([], [bmn("b1", powered_on=False, node_name="", hardware=hw)], [], [], POLICY)
    assert host(state, "b1") == planner.Host("b1", 16000, 65536, powered_on=False, standby=True)
    state = ci.cluster_state([], [bmn("b1", powered_on=False, node_name="")], [], [], POLICY)
    assert state.hosts == () and "no hardware inventory" in state.notes[0]


# ------------------------------------------------------------------------------------------
# VMs
# ------------------------------------------------------------------------------------------

VM_CASES = [
    # name, vmi, pods, expected VM or None
    ("running, requests from the launcher Pod", vmi("a", "h1"), [launcher("a", "h1", cpu="1100m", memory="2200Mi")],
     planner.VM("ns/a", 1100, 2200, "h1", True)),
    ("running without a Pod: the VMI's requests", vmi("a", "h1", cpu="2", memory="1536Mi"), [],
     planner.VM("ns/a", 2000, 1536, "h1", True)),
    ("LiveMigratable False: never moved", vmi("a", "h1", migratable=False), [], planner.VM("ns/a", 1000, 2048, "h1", False)),
    ("no LiveMigratable condition: never moved", vmi("a", "h1", migratable=None), [],
     planner.VM("ns/a", 1000, 2048, "h1", False)),
    ("a nodeSelector pins it", vmi("a", "h1", nodeSelector={"gpu": "yes"}), [], planner.VM("ns/a", 1000, 2048, "h1", False)),
    ("the schedulable selector does not pin it", vmi("a", "h1", nodeSelector={ci.SCHEDULABLE_LABEL: "true"}), [],
     planner.VM("ns/a", 1000, 2048, "h1", True)),
    ("required node affinity pins it",
     vmi("a", "h1", affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}}),
     [], planner.VM("ns/a", 1000, 2048, "h1", False)),
    ("pending: the launcher Pod is unschedulable", vmi("a"), [launcher("a", unschedulable=True)],
     planner.VM("ns/a", 1000, 2048, None, True)),
    ("scheduling, not judged yet: left out", vmi("a"), [launcher("a")], None),
    ("finished: left out", {**vmi("a", "h1"), "status": {"phase": "Succeeded", "nodeName": "h1"}}, [], None),
    ("on a node that is not a host: left out", vmi("a", "elsewhere"), [], None),
]


@pytest.mark.parametrize("name,obj,pods,expected", VM_CASES, ids=[c[0] for c in VM_CASES])
def test_vms(name, obj, pods, expected):
    state = ci.cluster_state([node("h1")], [], [obj], pods, POLICY)
    assert (state.vms[0] if state.vms else None) == expected


def test_a_migration_in_flight_pins_the_vm_and_its_target_pod_is_not_the_launcher():
    obj = vmi("a", "h1")
    obj["status"]["migrationState"] = {"completed": False, "failed": False}
    pods = [launcher("a", "h1"), launcher("a", "h2", cpu="4", target="m1")]
    state = ci.cluster_state([node("h1"), node("h2")], [], [obj], pods, POLICY)
    assert state.vms == (planner.VM("ns/a", 1000, 2048, "h1", False),)


def test_required_anti_affinity_becomes_a_group_of_the_matching_vms():
    term = {"labelSelector": {"matchLabels": {"stratus.dev/server-group": "g"}}, "topologyKey": ci.HOSTNAME}
    aff = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    vmis = [vmi(n, "h1", labels={"stratus.dev/server-group": "g"}, affinity=aff) for n in ("a", "b")]
    vmis.append(vmi("c", "h1", labels={"stratus.dev/server-group": "g"}, ns="other"))
    state = ci.cluster_state([node("h1")], [], vmis, [], POLICY)
    assert [g.vms for g in state.constraints.anti_affinity_groups] == [("ns/a", "ns/b")]


@pytest.mark.parametrize("spec,expected", [
    ({}, planner.Constraints(headroom_percent=10, max_migrations=20)),
    ({"headroomPercent": 5, "maxMigrationsPerCycle": 0, "minFreeHosts": 2, "lowWatermarkPercent": 30,
      "highWatermarkPercent": 80},
     planner.Constraints(headroom_percent=5, max_migrations=0, min_free_hosts=2, low_watermark_percent=30,
                         high_watermark_percent=80)),
    ({"trigger": "watermarks", "objective": "power", "maxMigrationsPerHost": 8, "minWattsPerMigration": 25},
     planner.Constraints(headroom_percent=10, max_migrations=20, trigger=planner.Trigger.WATERMARKS,
                         objective=planner.Objective.POWER, max_migrations_per_host=8, min_watts_per_migration=25)),
])
def test_constraints_from_the_policy(spec, expected):
    assert ci.constraints_of(spec) == expected


@pytest.mark.parametrize("selector,labels,matches", [
    ({}, {}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "x"}, False),
])
def test_selector(selector, labels, matches):
    assert ci.selector_matches(selector, labels) is matches


# ------------------------------------------------------------------------------------------
# the planner on the translated state, and plans to actions
# ------------------------------------------------------------------------------------------


def test_low_utilisation_frees_powerable_hosts_only():
    nodes = [node("fixed")] + [node(f"h{i}", bmn=f"b{i}") for i in range(4)]
    bmns = [bmn(f"b{i}", node_name=f"h{i}") for i in range(4)]
    vmis = [vmi(f"v{i}", ["fixed", "h0", "h1", "h2", "h3"][i % 5]) for i in range(10)]
    state = ci.cluster_state(nodes, bmns, vmis, [], POLICY)
    plan = planner.plan(state.hosts, state.vms, state.constraints)
    assert plan.mode is planner.Mode.SCALE_DOWN
    assert "fixed" not in plan.power_off and len(plan.power_off) == 4
    assert not planner.check_plan(state.hosts, state.vms, state.constraints, plan)
    actions = ci.plan_actions(plan)
    assert {a["type"] for a in actions} == {"Migrate", "PowerOff"}
    mig = next(a for a in actions if a["type"] == "Migrate")
    assert mig["vm"].startswith("ns/") and mig["source"] and mig["host"] == "fixed"
    spec = ci.plan_spec(plan, "default", approved=True)
    assert spec["figures"]["poweredOff"] == 4 and spec["approved"] is True and spec["mode"] == "ScaleDown"
    assert ci.same_actions(spec["actions"], actions)


def test_pending_vms_wake_standby_hosts():
    nodes = [node("h0", bmn="b0"), node("h1", bmn="b1", ready=False, unschedulable=True, cordoned_by="old")]
    bmns = [bmn("b0", node_name="h0"), bmn("b1", powered_on=False, node_name="h1")]
    vmis = [vmi("full", "h0", cpu="30"), vmi("new", cpu="16")]
    pods = [launcher("full", "h0", cpu="30"), launcher("new", cpu="16", unschedulable=True)]
    state = ci.cluster_state(nodes, bmns, vmis, pods, POLICY)
    plan = planner.plan(state.hosts, state.vms, state.constraints)
    assert plan.mode is planner.Mode.SCALE_UP and plan.power_on == ("h1",)
    assert [(a["type"], a["host"], a["vm"]) for a in ci.plan_actions(plan)] == [("PowerOn", "h1", ""), ("Place", "h1", "ns/new")]


def test_migration_object_names_the_target_and_is_deterministic():
    a = ci.migration_object("p1", 3, "ns/vm-1", "h7", server="vm-1")
    assert a == ci.migration_object("p1", 3, "ns/vm-1", "h7", server="vm-1")
    assert a["metadata"]["namespace"] == "ns" and a["spec"] == {"vmiName": "vm-1", "addedNodeSelector": {ci.HOSTNAME: "h7"}}
    assert a["metadata"]["labels"] == {ci.PLAN_LABEL: "p1", ci.SERVER_LABEL: "vm-1"}
    assert ci.migration_name("p1", 4, "ns/vm-1") != a["metadata"]["name"]
    assert len(ci.migration_name("p" * 250, 1, "ns/" + "v" * 253)) <= 253


LIMIT_CASES = [
    # name, candidates, in flight sources, per cluster, per node, expected
    ("all fit", [(0, "a"), (1, "b")], [], 5, 2, [0, 1]),
    ("per node outbound", [(0, "a"), (1, "a"), (2, "a"), (3, "b")], [], 5, 2, [0, 1, 3]),
    ("cluster-wide, counting others' migrations", [(0, "a"), (1, "b"), (2, "c")], ["x", "y", "z", "w"], 5, 2, [0]),
    ("node already busy", [(0, "a"), (1, "b")], ["a", "a"], 5, 2, [1]),
    ("full", [(0, "a")], ["a", "b", "c", "d", "e"], 5, 2, []),
]


@pytest.mark.parametrize("name,cands,flight,per_cluster,per_node,expected", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_kubevirt_migration_limits(name, cands, flight, per_cluster, per_node, expected):
    assert ci.migrations_to_start(cands, flight, per_cluster, per_node) == expected


def test_vms_on_host_sees_vmis_and_launcher_pods():
    vmis = [vmi("a", "h1"), vmi("b", "h2"), {**vmi("c", "h1"), "status": {"phase": "Succeeded", "nodeName": "h1"}}]
    pods = [launcher("d", "h1"), {**launcher("e", "h1"), "status": {"phase": "Succeeded"}}]
    assert ci.vms_on_host(vmis, pods, "h1") == ["ns/a", "ns/d"]
    assert ci.vms_on_host(vmis, pods, "h3") == []


def test_a_reshaping_plan_cordons_only_the_hosts_it_empties():
    from stratus.core.consolidation.executor import hosts_to_cordon

    actions = [
        {"type": "Migrate", "vm": "v1", "source": "kept-a", "host": "kept-b"},  # kept-a hands a VM on...
        {"type": "Migrate", "vm": "v2", "source": "gone", "host": "kept-a"},    # ...and takes one in
        {"type": "Migrate", "vm": "v3", "source": "spare", "host": "kept-b"},   # emptied, left on as reserve
        {"type": "PowerOff", "host": "gone"},
    ]
    # kept-a must stay schedulable: the migration into it would fail on a cordoned node.
    assert hosts_to_cordon(actions) == ["gone", "spare"]


def test_the_policy_status_summary_counts_the_cluster():
    state = ci.cluster_state([node("h1"), node("h2", bmn="h2")], [bmn("h2", powered_on=False)],
                             [vmi("a", "h1", cpu="16"), vmi("b")], [launcher("b", unschedulable=True)],
                             {**POLICY, "standbyPool": {}})
    summary = state.summary()
    assert {k: summary[k] for k in ("hosts", "vms", "pendingVms")} == {"hosts": 2, "vms": 1, "pendingVms": 1}
    assert 0 <= summary["utilisationPercent"] <= 100


POWER = {"power": {"defaultIdleWatts": 90, "defaultPeakWatts": 250, "shapes": [
    {"cpuCores": 96, "memoryGib": 768, "idleWatts": 190, "peakWatts": 620},
    {"cpuCores": 96, "idleWatts": 170, "peakWatts": 560},
    {"cpuCores": 32, "idleWatts": 80, "peakWatts": 240},
]}}


@pytest.mark.parametrize("name,cpus,mib,expected", [
    ("shape-with-memory", 96, 768 * 1024, (190, 620)),
    ("shape-any-memory", 96, 384 * 1024, (170, 560)),
    ("memory-rounded-to-gib", 96, 768 * 1024 - 100, (190, 620)),
    ("no-match-takes-defaults", 64, 256 * 1024, (90, 250)),
])
def test_host_watts_from_the_policy_table(name, cpus, mib, expected):
    assert ci.host_watts(POWER, cpus, mib) == expected


def test_host_watts_default_without_a_table():
    assert ci.host_watts({}, 32, 1024) == (100, 300)


def test_hosts_carry_watts_from_inventory_else_allocatable():
    hw = {"cpu": {"count": 96}, "memory": {"totalMiB": 768 * 1024}}
    nodes = [node("big", cpu="94", memory="700Gi", bmn="big"), node("plain", cpu="31500m", memory="120Gi")]
    state = ci.cluster_state(nodes, [bmn("big", hardware=hw)], [], [], {**POLICY, **POWER})
    assert (host(state, "big").idle_watts, host(state, "big").peak_watts) == (190, 620)
    # No BareMetalNode: allocatable rounded up to 32 CPUs.
    assert (host(state, "plain").idle_watts, host(state, "plain").peak_watts) == (80, 240)


def test_plan_spec_carries_watts_and_why_vms_stay_pending():
    hosts = [planner.Host("h1", 4000, 8192, idle_watts=100, peak_watts=300)]
    vms = [planner.VM("ns/big", 1000, 65536, None), planner.VM("ns/a", 2000, 1024, "h1")]
    plan = planner.plan(hosts, vms, planner.Constraints())
    spec = ci.plan_spec(plan, "default", approved=False)
    assert spec["figures"]["wattsBefore"] == 200  # 100 + (300 - 100) * 2 / 4
    assert spec["figures"]["energySavedWhPerDay"] == 0
    assert spec["unplaced"] == ["ns/big"]
    assert spec["unplacedReasons"][0]["vm"] == "ns/big"
    assert spec["unplacedReasons"][0]["reason"].startswith("TooLarge")
    ConsolidationPlanSpec.model_validate(spec)  # what the API server's schema is made from

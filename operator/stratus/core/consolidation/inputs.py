"""From cluster objects to the consolidation planner's inputs, and from a plan to the
actions the controller runs. Pure: plain dicts in (as the API server returns them),
planner records and manifests out; no I/O.

Decisions:

- Hosts are the Nodes labelled ``kubevirt.io/schedulable=true``. Capacity is
  ``status.allocatable`` minus the requests of the Pods on the Node that are not
  VM launchers (DaemonSets and the like take room the planner cannot give away).
- Power comes from the BareMetalNode mapped to the Node (label
  ``stratus.dev/baremetalnode`` on the Node, else ``status.nodeName`` on the
  BareMetalNode): ``status.poweredOn``. A host is *powerable* when its BareMetalNode
  has ``role: hypervisor``, is ``provisioned``, is neither detached nor paused, and
  matches the policy's standby pool. A powerable host that is off is *standby* (the
  planner may wake it); a powered-on host that is not powerable must stay on. A Node
  without a BareMetalNode is an always-on host: on while Ready, never powered off.
  A powerable BareMetalNode that is off and whose Node is gone still counts as a
  standby host, sized from its hardware inventory.
- A host that is on but whose Node is not Ready is out of service (the planner
  neither fills it nor powers it off).
- Cordons: a Node that consolidation cordoned (annotation ``stratus.dev/cordoned-by``)
  is not cordoned to the planner: it is a standby host (off) or a host of a plan in
  progress. Any other cordon is an operator's: the planner leaves that host alone.
- VMs are VirtualMachineInstances. Placed: ``status.nodeName`` on a known host.
  Pending: the launcher Pod is unschedulable (its ``PodScheduled`` condition says
  ``Unschedulable``). Requests: the active launcher Pod's container requests (what
  the scheduler counts, KubeVirt's overhead included) and, without a Pod, the VMI's
  ``spec.domain.resources.requests``. Names are ``namespace/name``.
- A VM may migrate only when its ``LiveMigratable`` condition is True (no such
  condition: not migratable, as on a real cluster), no migration of it is in
  flight, and nothing pins it to particular Nodes the planner cannot see (a
  ``nodeSelector`` beyond ``kubevirt.io/schedulable``, required node affinity,
  or required pod affinity). VMs that cannot migrate are never moved; their host
  stays on.
- Required pod anti-affinity across hostnames (a ServerGroup with policy
  anti-affinity) becomes an anti-affinity group of the VMs its selector matches in
  the namespace.
- A host with Pods that are neither launchers nor DaemonSet Pods must stay on:
  powering it off would kill workloads consolidation cannot move.
- Power: a host's idle and peak watts come from the policy's per-shape table,
  matched on the CPU count and memory of the BareMetalNode's hardware inventory
  (what the machine is), else of the Node's allocatable (CPUs rounded up,
  memory rounded to GiB); the first matching row wins, no match takes the
  policy's defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing as t

from .model import VM, AntiAffinityGroup, Constraints, Host, Objective, Plan, Trigger
from ..quantity import parse_bytes, parse_millicpu

SCHEDULABLE_LABEL = "kubevirt.io/schedulable"
BMN_LABEL = "stratus.dev/baremetalnode"
CORDONED_BY = "stratus.dev/cordoned-by"
PLAN_LABEL = "stratus.dev/consolidation-plan"
SERVER_LABEL = "stratus.dev/server"
HOSTNAME = "kubernetes.io/hostname"
KUBEVIRT_API = "kubevirt.io/v1"
MIB = 1 << 20


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _labels(obj: dict) -> dict:
    return _meta(obj).get("labels") or {}


def _annotations(obj: dict) -> dict:
    return _meta(obj).get("annotations") or {}


def _condition(obj: dict, type_: str) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def vm_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def split_vm_key(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


def mib_up(n_bytes: int) -> int:
    return -(-n_bytes // MIB)


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A Kubernetes label selector (camelCase keys) against labels; empty matches all."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req.get("key"), req.get("operator"), req.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_requests(pod: dict) -> tuple[int, int]:
    """(millicores, bytes) requested by a Pod's containers (init containers: the max)."""
    spec = pod.get("spec") or {}
    cpu = mem = 0
    for c in spec.get("containers") or []:
        req = (c.get("resources") or {}).get("requests") or {}
        cpu += parse_millicpu(req.get("cpu", 0)) if req.get("cpu") is not None else 0
        mem += parse_bytes(req.get("memory", 0)) if req.get("memory") is not None else 0
    for c in spec.get("initContainers") or []:
        req = (c.get("resources") or {}).get("requests") or {}
        cpu = max(cpu, parse_millicpu(req["cpu"]) if req.get("cpu") is not None else 0)
        mem = max(mem, parse_bytes(req["memory"]) if req.get("memory") is not None else 0)
    return cpu, mem


def pod_finished(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") or bool(_meta(pod).get("deletionTimestamp"))


def is_launcher(pod: dict) -> bool:
    return _labels(pod).get("kubevirt.io") == "virt-launcher"


def is_daemon_pod(pod: dict) -> bool:
    return any(o.get("kind") == "DaemonSet" for o in _meta(pod).get("ownerReferences") or [])


def pod_unschedulable(pod: dict) -> str | None:
    """The scheduler's message when the Pod fits on no node, else None."""
    if (pod.get("spec") or {}).get("nodeName") or pod_finished(pod):
        return None
    cond = _condition(pod, "PodScheduled")
    if cond and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
        return cond.get("message") or "unschedulable"
    return None


def node_ready(node: dict) -> bool:
    cond = _condition(node, "Ready")
    return bool(cond and cond.get("status") == "True")


# ------------------------------------------------------------------------------------------
# the cluster as the planner sees it
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HostInfo:
    """What the controller needs to act on a host besides the planner's record."""

    name: str
    bare_metal_node: str = ""  # empty: no BareMetalNode (always on)
    powerable: bool = False
    node_exists: bool = True
    ready: bool = False
    cordoned_by: str = ""  # the plan that cordoned it, if consolidation did
    pinned_reason: str = ""  # why it must stay on, if it must


@dataclasses.dataclass(frozen=True)
class ClusterState:
    hosts: tuple[Host, ...]
    vms: tuple[VM, ...]
    constraints: Constraints
    info: dict[str, HostInfo]
    notes: tuple[str, ...] = ()  # objects left out, and why

    @property
    def pending(self) -> tuple[VM, ...]:
        return tuple(v for v in self.vms if v.host is None)

    @property
    def pinned_vms(self) -> tuple[VM, ...]:
        return tuple(v for v in self.vms if not v.migratable)

    def summary(self) -> dict:
        """Counts for the policy's status."""
        from .world import World

        world = World(self.hosts, self.vms, self.constraints)
        return {
            "hosts": len(self.hosts),
            "hostsOn": sum(1 for h in self.hosts if h.powered_on),
            "hostsStandby": sum(1 for h in self.hosts if h.wakeable and not h.powered_on),
            "vms": sum(1 for v in self.vms if v.host is not None),
            "pendingVms": len(self.pending),
            "pinnedVms": len(self.pinned_vms),
            "utilisationPercent": world.utilisation_permille() // 10,
        }


def _bmn_node_name(bmn: dict) -> str:
    return (bmn.get("status") or {}).get("nodeName") or _meta(bmn)["name"]


def bmn_powerable(bmn: dict, pool: dict | None) -> bool:
    spec, status = bmn.get("spec") or {}, bmn.get("status") or {}
    ann = _annotations(bmn)
    return (spec.get("role") == "hypervisor" and status.get("provisioningState") == "provisioned"
            and "stratus.dev/detached" not in ann and "stratus.dev/paused" not in ann
            and not _meta(bmn).get("deletionTimestamp") and selector_matches(pool, _labels(bmn)))


def _vmi_pinned(vmi: dict) -> str:
    """Why the VMI may not move, or ''."""
    status = vmi.get("status") or {}
    cond = _condition(vmi, "LiveMigratable")
    if cond is None:
        return "no LiveMigratable condition"
    if cond.get("status") != "True":
        return f"not live-migratable ({cond.get('reason') or cond.get('message') or 'LiveMigratable is False'})"
    mig = status.get("migrationState") or {}
    if mig and not mig.get("completed") and not mig.get("failed"):
        return "a migration is in flight"
    spec = vmi.get("spec") or {}
    extra = {k for k in (spec.get("nodeSelector") or {}) if k != SCHEDULABLE_LABEL}
    if extra:
        return f"nodeSelector {sorted(extra)} pins it"
    affinity = spec.get("affinity") or {}
    if ((affinity.get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")):
        return "required node affinity pins it"
    if ((affinity.get("podAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")):
        return "required pod affinity pins it"
    return ""


def _anti_affinity_groups(vmis: list[dict]) -> tuple[AntiAffinityGroup, ...]:
    groups: dict[tuple, set[str]] = {}
    for vmi in vmis:
        ns = _meta(vmi).get("namespace", "")
        affinity = (vmi.get("spec") or {}).get("affinity") or {}
        for term in (affinity.get("podAntiAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []:
            if term.get("topologyKey") != HOSTNAME:
                continue
            selector = term.get("labelSelector") or {}
            key = (ns, repr(sorted((selector.get("matchLabels") or {}).items())),
                   repr([sorted(r.items(), key=str) for r in selector.get("matchExpressions") or []]))
            members = groups.setdefault(key, set())
            members.add(vm_key(ns, _meta(vmi)["name"]))
            for other in vmis:
                if _meta(other).get("namespace", "") == ns and selector_matches(selector, _labels(other)):
                    members.add(vm_key(ns, _meta(other)["name"]))
    out = []
    for key in sorted(groups):
        members = groups[key]
        if len(members) > 1:
            digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
            out.append(AntiAffinityGroup(f"{key[0]}/anti-{digest}", tuple(sorted(members))))
    return tuple(out)


def constraints_of(policy_spec: dict, must_stay_on: t.Iterable[str] = (),
                   groups: tuple[AntiAffinityGroup, ...] = ()) -> Constraints:
    """The planner's constraints from a ConsolidationPolicy spec (camelCase dict)."""
    return Constraints(
        anti_affinity_groups=groups,
        headroom_percent=int(policy_spec.get("headroomPercent", 10)),
        max_migrations=int(policy_spec.get("maxMigrationsPerCycle", 20)),
        must_stay_on=frozenset(must_stay_on),
        min_free_hosts=int(policy_spec.get("minFreeHosts", 0)),
        low_watermark_percent=int(policy_spec.get("lowWatermarkPercent", 50)),
        high_watermark_percent=int(policy_spec.get("highWatermarkPercent", 90)),
        objective=Objective(policy_spec.get("objective", "hosts")),
        trigger=Trigger(policy_spec.get("trigger", "savings")),
        max_migrations_per_host=int(policy_spec.get("maxMigrationsPerHost", 20)),
        min_watts_per_migration=int(policy_spec.get("minWattsPerMigration", 10)),
    )


def host_watts(policy_spec: dict, cpu_cores: int, memory_mib: int) -> tuple[int, int]:
    """(idle, peak) watts of a host with this hardware, from the policy's power
    table (first matching shape) or its defaults."""
    power = policy_spec.get("power") or {}
    gib = (memory_mib + 512) // 1024
    for shape in power.get("shapes") or []:
        if int(shape.get("cpuCores", 0)) != cpu_cores:
            continue
        want = int(shape.get("memoryGib", 0) or 0)
        if want and want != gib:
            continue
        return int(shape.get("idleWatts", 0)), int(shape.get("peakWatts", 0))
    return int(power.get("defaultIdleWatts", 100)), int(power.get("defaultPeakWatts", 300))


def _hardware(bmn: dict | None) -> tuple[int, int]:
    """(CPUs, MiB) from a BareMetalNode's hardware inventory, zeros if unknown."""
    hw = ((bmn or {}).get("status") or {}).get("hardware") or {}
    try:
        return int((hw.get("cpu") or {}).get("count") or 0), int((hw.get("memory") or {}).get("totalMiB") or 0)
    except (TypeError, ValueError):
        return 0, 0


def cluster_state(nodes: list[dict], bare_metal_nodes: list[dict], vmis: list[dict], pods: list[dict],
                  policy_spec: dict) -> ClusterState:
    """The planner's view of the cluster (see the module docstring)."""
    pool = policy_spec.get("standbyPool") or {}
    notes: list[str] = []
    by_label: dict[str, dict] = {}
    bmns = {(_meta(b)["name"]): b for b in bare_metal_nodes}
    for node in nodes:
        bmn_name = _labels(node).get(BMN_LABEL)
        if bmn_name and bmn_name in bmns:
            by_label[_meta(node)["name"]] = bmns[bmn_name]
    by_node_name = {_bmn_node_name(b): b for b in bare_metal_nodes}

    # Pods per node: the room non-VM Pods take, and hosts they pin.
    other_c: dict[str, int] = {}
    other_m: dict[str, int] = {}
    foreign: dict[str, str] = {}
    launchers: dict[str, list[dict]] = {}
    for pod in pods:
        if pod_finished(pod):
            continue
        node_name = (pod.get("spec") or {}).get("nodeName") or ""
        if is_launcher(pod):
            uid = _labels(pod).get("kubevirt.io/created-by", "")
            launchers.setdefault(uid, []).append(pod)
            continue
        if not node_name:
            continue
        c, m = pod_requests(pod)
        other_c[node_name] = other_c.get(node_name, 0) + c
        other_m[node_name] = other_m.get(node_name, 0) + m
        if not is_daemon_pod(pod) and node_name not in foreign:
            foreign[node_name] = f"runs Pod {_meta(pod).get('namespace')}/{_meta(pod).get('name')}, which is not a VM"

    hosts: list[Host] = []
    info: dict[str, HostInfo] = {}
    must_stay_on: set[str] = set()
    for node in sorted(nodes, key=lambda n: _meta(n)["name"]):
        name = _meta(node)["name"]
        if _labels(node).get(SCHEDULABLE_LABEL) != "true":
            continue
        alloc = (node.get("status") or {}).get("allocatable") or {}
        try:
            cpu = parse_millicpu(alloc.get("cpu", 0)) - other_c.get(name, 0)
            mem = parse_bytes(alloc.get("memory", 0)) - other_m.get(name, 0)
        except ValueError as err:
            notes.append(f"host {name} left out: {err}")
            continue
        ready = node_ready(node)
        bmn = by_label.get(name) or by_node_name.get(name)
        powerable = bmn is not None and bmn_powerable(bmn, pool)
        if bmn is not None:
            powered_on = (bmn.get("status") or {}).get("poweredOn") is True
        else:
            powered_on = ready
        cordoned_by = _annotations(node).get(CORDONED_BY, "")
        admin_cordon = bool((node.get("spec") or {}).get("unschedulable")) and not cordoned_by
        pinned = ""
        if bmn is None:
            pinned = "no BareMetalNode (an always-on host)"
        elif not powerable:
            pinned = f"BareMetalNode {_meta(bmn)['name']} is not in the standby pool or not a provisioned hypervisor"
        elif name in foreign:
            pinned = foreign[name]
        if pinned:
            must_stay_on.add(name)
        standby = powerable and not powered_on and not pinned
        # On but not Ready: out of service (neither filled nor powered off).
        in_service_power = powered_on and ready
        hw_cpus, hw_mib = _hardware(bmn)
        if not hw_cpus or not hw_mib:
            try:
                hw_cpus = -(-parse_millicpu(alloc.get("cpu", 0)) // 1000)
                hw_mib = parse_bytes(alloc.get("memory", 0)) // MIB
            except ValueError:
                hw_cpus, hw_mib = 0, 0
        idle, peak = host_watts(policy_spec, hw_cpus, hw_mib)
        hosts.append(Host(name, max(cpu, 0), max(mem, 0) // MIB, powered_on=in_service_power,
                          standby=standby, cordoned=admin_cordon, idle_watts=idle, peak_watts=peak))
        info[name] = HostInfo(name, _meta(bmn)["name"] if bmn else "", powerable and not pinned, True, ready,
                              cordoned_by, pinned)
    # Standby BareMetalNodes whose Node is gone: sized from the hardware inventory.
    for bmn in sorted(bare_metal_nodes, key=lambda b: _meta(b)["name"]):
        name = _bmn_node_name(bmn)
        if name in info or not bmn_powerable(bmn, pool) or (bmn.get("status") or {}).get("poweredOn") is not False:
            continue
        hw = (bmn.get("status") or {}).get("hardware") or {}
        cpus = ((hw.get("cpu") or {}).get("count")) or 0
        mib = ((hw.get("memory") or {}).get("totalMiB")) or 0
        if not cpus or not mib:
            notes.append(f"BareMetalNode {_meta(bmn)['name']} left out: no Node and no hardware inventory to size it")
            continue
        idle, peak = host_watts(policy_spec, int(cpus), int(mib))
        hosts.append(Host(name, int(cpus) * 1000, int(mib), powered_on=False, standby=True, idle_watts=idle,
                          peak_watts=peak))
        info[name] = HostInfo(name, _meta(bmn)["name"], True, False, False, "", "")

    vms: list[VM] = []
    for vmi in sorted(vmis, key=lambda v: (_meta(v).get("namespace", ""), _meta(v)["name"])):
        meta, status = _meta(vmi), vmi.get("status") or {}
        key = vm_key(meta.get("namespace", ""), meta["name"])
        if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
            continue
        pods_of = [p for p in launchers.get(meta.get("uid", ""), []) if "kubevirt.io/migration-target" not in _labels(p)]
        node_name = status.get("nodeName") or ""
        active = [p for p in pods_of if (p.get("spec") or {}).get("nodeName") == node_name and node_name]
        try:
            if active:
                c, m = pod_requests(active[0])
            else:
                req = (((vmi.get("spec") or {}).get("domain") or {}).get("resources") or {}).get("requests") or {}
                c, m = parse_millicpu(req.get("cpu", 0)), parse_bytes(req.get("memory", 0))
        except ValueError as err:
            notes.append(f"VM {key} left out: {err}")
            continue
        if node_name:
            if node_name not in info:
                notes.append(f"VM {key} left out: it runs on {node_name}, which is not a KubeVirt host")
                continue
            reason = _vmi_pinned(vmi)
            vms.append(VM(key, c, mib_up(m), node_name, migratable=not reason))
        elif any(pod_unschedulable(p) for p in pods_of):
            vms.append(VM(key, c, mib_up(m), None, migratable=True))
    return ClusterState(tuple(hosts), tuple(vms), constraints_of(policy_spec, must_stay_on, _anti_affinity_groups(vmis)),
                        info, tuple(notes))


# ------------------------------------------------------------------------------------------
# plan -> actions
# ------------------------------------------------------------------------------------------


def plan_actions(plan: Plan) -> list[dict]:
    """The plan's steps as ConsolidationPlan spec.actions (camelCase dicts)."""
    out = []
    for s in plan.steps:
        out.append({"type": s.action.value, "host": s.host, "vm": s.vm or "", "source": s.source or "", "wave": s.wave})
    return out


def figures_of(plan: Plan) -> dict:
    f = plan.figures
    return {
        "hostsOnBefore": f.hosts_on_before, "hostsOnAfter": f.hosts_on_after,
        "hostsInUseBefore": f.hosts_in_use_before, "hostsInUseAfter": f.hosts_in_use_after,
        "lowerBoundHosts": f.lower_bound_hosts, "migrations": f.migrations, "migratedMib": f.migrated_mib,
        "placements": f.placements, "poweredOn": f.powered_on, "poweredOff": f.powered_off, "unplaced": f.unplaced,
        "utilisationBeforePermille": f.utilisation_before_permille,
        "utilisationAfterPermille": f.utilisation_after_permille,
        "wattsBefore": f.watts_before, "wattsAfter": f.watts_after,
        "energySavedWhPerDay": f.energy_saved_wh_per_day,
    }


def plan_spec(plan: Plan, policy: str, approved: bool) -> dict:
    """The spec of the ConsolidationPlan object recording `plan`."""
    return {
        "policy": policy,
        "mode": plan.mode.value,
        "reason": plan.reason,
        "summary": plan.message[:4096],
        "truncated": plan.truncated,
        "unplaced": list(plan.unplaced),
        "unplacedReasons": [{"vm": vm, "reason": why[:1024]} for vm, why in plan.unplaced_reasons[:1000]],
        "figures": figures_of(plan),
        "actions": plan_actions(plan),
        "approved": approved,
        "cancel": False,
    }


def same_actions(a: list[dict], b: list[dict]) -> bool:
    key = lambda x: (x.get("type"), x.get("host"), x.get("vm") or "", x.get("source") or "", x.get("wave", 0))  # noqa: E731
    return [key(x) for x in a] == [key(x) for x in b]


def migration_name(plan: str, index: int, vm: str) -> str:
    """Deterministic (a restarted controller finds the migration it made), at most 253
    characters, a DNS subdomain."""
    _, name = split_vm_key(vm)
    digest = hashlib.sha256(f"{plan}/{index}".encode()).hexdigest()[:10]
    return f"{name[:200]}-cons-{digest}"


def migration_object(plan: str, index: int, vm: str, target: str, server: str | None = None) -> dict:
    """The VirtualMachineInstanceMigration of a Migrate action, to `target` by
    spec.addedNodeSelector (KubeVirt adds it to the target Pod's node selector)."""
    namespace, name = split_vm_key(vm)
    labels = {PLAN_LABEL: plan}
    if server:
        labels[SERVER_LABEL] = server
    return {
        "apiVersion": KUBEVIRT_API,
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": migration_name(plan, index, vm), "namespace": namespace, "labels": labels},
        "spec": {"vmiName": name, "addedNodeSelector": {HOSTNAME: target}},
    }


MIGRATION_DONE = ("Succeeded", "Failed")


def migration_in_flight(mig: dict) -> bool:
    return (mig.get("status") or {}).get("phase") not in MIGRATION_DONE and not _meta(mig).get("deletionTimestamp")


def migrations_to_start(candidates: list[tuple[int, str]], in_flight_sources: list[str], per_cluster: int,
                        per_node: int) -> list[int]:
    """Which Migrate actions may start now under KubeVirt's limits.

    `candidates` are (action index, source host) in plan order; `in_flight_sources`
    the source host of every migration running cluster-wide (ours and others').
    At most `per_cluster` run at once, at most `per_node` leave one host."""
    running = len(in_flight_sources)
    by_node: dict[str, int] = {}
    for src in in_flight_sources:
        by_node[src] = by_node.get(src, 0) + 1
    out = []
    for index, source in candidates:
        if running >= per_cluster:
            break
        if by_node.get(source, 0) >= per_node:
            continue
        out.append(index)
        running += 1
        by_node[source] = by_node.get(source, 0) + 1
    return out


def vms_on_host(vmis: list[dict], pods: list[dict], host: str) -> list[str]:
    """VMs (namespace/name) still on `host`: VMIs whose node it is, and unfinished
    launcher Pods bound to it. A host with any is never powered off."""
    out = set()
    for vmi in vmis:
        if (vmi.get("status") or {}).get("nodeName") == host and (vmi.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            out.add(vm_key(_meta(vmi).get("namespace", ""), _meta(vmi)["name"]))
    for pod in pods:
        if is_launcher(pod) and not pod_finished(pod) and (pod.get("spec") or {}).get("nodeName") == host:
            out.add(vm_key(_meta(pod).get("namespace", ""), _labels(pod).get("vm.kubevirt.io/name", _meta(pod)["name"])))
    return sorted(out)


def action_waves(actions: list[dict]) -> list[int]:
    return sorted({int(a.get("wave", 0)) for a in actions})


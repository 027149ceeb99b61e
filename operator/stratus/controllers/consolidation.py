"""Node consolidation: ConsolidationPolicy (plans each cycle) and ConsolidationPlan
(runs one plan's actions).

Design decisions
================

Two daemons, level-based.
    One kopf daemon per ConsolidationPolicy plans every ``spec.intervalSeconds``: it
    reads the cluster (``read_cluster``), translates it (``core.consolidation.inputs``),
    asks the planner and, when the plan has steps, records it as a ConsolidationPlan
    owned by the policy. One kopf daemon per ConsolidationPlan runs it: each pass reads
    the plan and the world, advances what can advance, writes status, and sleeps a few
    seconds (a spec change, e.g. approval, wakes it at once). A restarted operator
    resumes from status: migration names are derived from the plan and the action, so
    a pass after a crash finds the migration it made instead of making another.

One plan at a time.
    While a plan of the policy is approved and not finished, the policy does not plan
    (the planner's view would be half-way through the last plan). In ``approve`` mode a
    waiting (Recommended) plan is kept while the planner keeps proposing the same
    actions, and superseded when it proposes different ones, or none. A plan in ``auto``
    mode is created approved.

Execution (``ConsolidationPlan`` module docstring for the actions).
    Waves run in order; a wave starts when every action before it is done. On the
    first pass every host the plan empties (hosts to power off, and sources of
    migrations that receive none; ``hosts_to_cordon``) is cordoned, marked ``stratus.dev/cordoned-by=<plan>``, so the scheduler does not
    refill it. Migrations start within KubeVirt's limits: at most
    ``parallelMigrationsPerCluster`` in flight cluster-wide (counting migrations that
    are not ours) and ``parallelOutboundMigrationsPerNode`` per source host. A
    migration names its target with ``spec.addedNodeSelector``. Before a host is
    powered off the controller checks again that no VMI and no launcher Pod is on
    it; a host that still runs a VM is never powered off (the action fails). Power is
    switched only through the host's BareMetalNode (``spec.online``), and an action is
    done when the BMC says so (``status.poweredOn``) and, for power-on, the Node is
    Ready; then the Node is uncordoned.

Failure is safe.
    A failed or timed-out migration, or a power action that fails or times out, fails
    its action; nothing new starts, migrations in flight are left to finish, the
    remaining actions are Skipped, and every host the plan cordoned that is still
    powered on is uncordoned. The plan ends Failed with the reason in
    ``status.message``, a ``Ready=False`` condition and a Warning event. A migration
    that cannot be scheduled (stays in Scheduling) is cancelled (deleted) at its
    timeout, and the scheduler's message is reported. ``spec.cancel`` stops a plan
    the same way, ending Cancelled.

Hosts consolidation cordoned and powered off stay cordoned while off (the planner sees
them as standby, not as an operator's cordon); when a later plan powers one on, it is
uncordoned once Ready. Between plans, a host consolidation cordoned that is on and
Ready (a leftover of an interrupted plan) is uncordoned.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading

import kopf
from kubernetes.client.rest import ApiException

from ..api.consolidationplan import FINAL_PHASES, ActionState, PlanPhase
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import consolidation as planner
from ..core.consolidation import inputs as ci
from ..core.conditions import now as now_iso
from ..core.conditions import set_condition
from ..drivers import kube

log = logging.getLogger(__name__)

POLICIES = "consolidationpolicies"
PLANS = "consolidationplans"
BMNS = "baremetalnodes"
POLICY_LABEL = "stratus.dev/consolidation-policy"
KUBEVIRT_GROUP, KUBEVIRT_VERSION = "kubevirt.io", "v1"
#: Seconds between passes of an executing plan, and of a waiting one.
EXECUTE_PASS = 2.0
WAIT_PASS = 10.0
#: A Place action is the planner's expectation, not an order: the scheduler may give the
#: room to another pending VM. It is skipped after this long, so the plan ends and the
#: next cycle plans for what is still pending.
PLACE_GRACE = 60.0

_plan_lock = threading.Lock()
_wake: dict[tuple[str, str], asyncio.Event] = {}


def _event_for(kind: str, name: str) -> asyncio.Event:
    key = (kind, name)
    if key not in _wake:
        _wake[key] = asyncio.Event()
    return _wake[key]


def _parse_time(value: str) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _age(value: str) -> float:
    at = _parse_time(value)
    if at is None:
        return 0.0
    return (datetime.datetime.now(datetime.timezone.utc) - at).total_seconds()


def _post(body: dict, type_: str, reason: str, message: str) -> None:
    try:
        kopf.event(body, type=type_, reason=reason, message=message[:1024])
    except Exception:  # noqa: BLE001 - an event is best effort (e.g. outside a kopf context)
        log.debug("could not post event %s", reason)


# ------------------------------------------------------------------------------------------
# Reading the cluster
# ------------------------------------------------------------------------------------------


def _list_custom(group: str, version: str, plural: str, label_selector: str = "") -> list[dict]:
    try:
        return kube.custom().list_cluster_custom_object(group, version, plural, label_selector=label_selector)["items"]
    except ApiException as exc:
        if exc.status == 404:  # the kind is not installed
            return []
        raise


def read_cluster() -> dict[str, list[dict]]:
    """Nodes, BareMetalNodes, VMIs and unfinished Pods, as plain dicts."""
    core = kube.core()
    san = kube.api_client().sanitize_for_serialization
    nodes = [san(n) for n in core.list_node().items]
    pods = [san(p) for p in core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed").items]
    return {
        "nodes": nodes,
        "bmns": _list_custom(GROUP, VERSION, BMNS),
        "vmis": _list_custom(KUBEVIRT_GROUP, KUBEVIRT_VERSION, "virtualmachineinstances"),
        "pods": pods,
    }


def state_of(world: dict[str, list[dict]], policy_spec: dict) -> ci.ClusterState:
    return ci.cluster_state(world["nodes"], world["bmns"], world["vmis"], world["pods"], policy_spec)


def plan_for(policy_spec: dict, world: dict | None = None) -> tuple[ci.ClusterState, planner.Plan]:
    """The plan the policy would make for the cluster now (used by the CLI too)."""
    state = state_of(world or read_cluster(), policy_spec)
    return state, planner.plan(state.hosts, state.vms, state.constraints)


# ------------------------------------------------------------------------------------------
# Node and BareMetalNode actions
# ------------------------------------------------------------------------------------------


def cordon(node: str, plan: str) -> None:
    kube.core().patch_node(node, {"spec": {"unschedulable": True}, "metadata": {"annotations": {ci.CORDONED_BY: plan}}})


def uncordon(node: str) -> None:
    try:
        kube.core().patch_node(node, {"spec": {"unschedulable": None}, "metadata": {"annotations": {ci.CORDONED_BY: None}}})
    except ApiException as exc:
        if exc.status != 404:
            raise


def set_online(bmn: str, online: bool) -> None:
    kube.custom().patch_cluster_custom_object(GROUP, VERSION, BMNS, bmn, {"spec": {"online": online}})


# ------------------------------------------------------------------------------------------
# ConsolidationPolicy
# ------------------------------------------------------------------------------------------


def _active_policy(policies: list[dict]) -> str:
    alive = [p for p in policies if not p["metadata"].get("deletionTimestamp")]
    ordered = sorted(alive, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
    return ordered[0]["metadata"]["name"] if ordered else ""


def _write_policy(body: dict, status: dict) -> None:
    old = body.get("status") or {}
    changed = {k: v for k, v in status.items() if old.get(k) != v}
    if changed:
        kube.patch_status(API_VERSION, POLICIES, body["metadata"]["name"], changed)
    if status.get("phase") and status.get("phase") != old.get("phase"):
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        _post(body, "Warning" if status["phase"] in ("Conflict", "Error") else "Normal", ready.get("reason", status["phase"]),
              f"{old.get('phase') or 'new'} -> {status['phase']}: {ready.get('message', '')}")


def _set_plan_phase(plan: dict, phase: PlanPhase, message: str, reason: str) -> None:
    generation = plan["metadata"].get("generation", 0)
    st = plan.get("status") or {}
    conds = set_condition(st.get("conditions"), "Ready", phase == PlanPhase.SUCCEEDED, reason, message, generation)
    patch = {"phase": phase.value, "message": message, "conditions": conds, "observedGeneration": generation}
    if phase in FINAL_PHASES:
        patch["completedAt"] = now_iso()
    kube.patch_status(API_VERSION, PLANS, plan["metadata"]["name"], patch)
    _post(plan, "Warning" if phase == PlanPhase.FAILED else "Normal", reason, f"{phase.value}: {message}")


def _uncordon_leftovers(state: ci.ClusterState, open_plans: set[str]) -> list[str]:
    """Hosts consolidation cordoned that are on and Ready, while no plan of theirs runs."""
    done = []
    for name, info in state.info.items():
        host = next(h for h in state.hosts if h.name == name)
        if info.cordoned_by and info.cordoned_by not in open_plans and info.ready and host.powered_on:
            uncordon(name)
            done.append(name)
    return done


def policy_cycle(name: str, logger: logging.Logger | logging.LoggerAdapter = log) -> float:
    """One planning cycle; returns seconds until the next."""
    body = kube.get(API_VERSION, POLICIES, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return WAIT_PASS
    spec = body.get("spec") or {}
    generation = body["metadata"].get("generation", 0)
    interval = float(spec.get("intervalSeconds", 300))
    old = body.get("status") or {}
    conds = old.get("conditions")
    status: dict = {"observedGeneration": generation}

    active = _active_policy(_list_custom(GROUP, VERSION, POLICIES))
    if active != name:
        status.update(phase="Conflict", conditions=set_condition(
            conds, "Ready", False, "Conflict", f"ConsolidationPolicy {active!r} is the active one (the oldest); "
                                               "delete one of them: only one policy may act", generation))
        _write_policy(body, status)
        return interval
    if spec.get("suspend"):
        status.update(phase="Suspended", conditions=set_condition(conds, "Ready", True, "Suspended",
                                                                 "spec.suspend is true: no planning", generation))
        _write_policy(body, status)
        return interval

    plans = _list_custom(GROUP, VERSION, PLANS, f"{POLICY_LABEL}={name}")
    open_plans = [p for p in plans if (p.get("status") or {}).get("phase") not in {ph.value for ph in FINAL_PHASES}]
    running = [p for p in open_plans if (p.get("spec") or {}).get("approved")]
    if running:
        plan_name = running[0]["metadata"]["name"]
        status.update(phase="Active", currentPlan=plan_name, conditions=set_condition(
            conds, "Ready", True, "PlanRunning", f"Plan {plan_name} is running; planning resumes when it ends", generation))
        _write_policy(body, status)
        return min(interval, WAIT_PASS)

    try:
        world = read_cluster()
        state = state_of(world, spec)
        result = planner.plan(state.hosts, state.vms, state.constraints)
    except (ApiException, ValueError) as err:
        message = f"could not plan: {getattr(err, 'reason', None) or err}"
        status.update(phase="Error", conditions=set_condition(conds, "Ready", False, "PlanningFailed", message, generation))
        _write_policy(body, status)
        logger.warning("%s", message)
        return min(interval, 30.0)
    _uncordon_leftovers(state, {p["metadata"]["name"] for p in open_plans})

    status.update(lastEvaluation=now_iso(), lastMode=result.mode.value, lastReason=result.reason,
                  lastMessage=result.message[:1024], cluster=state.summary())
    waiting = [p for p in open_plans if not (p.get("spec") or {}).get("approved")]
    new_actions = ci.plan_actions(result)
    keep = None
    with _plan_lock:
        for p in waiting:
            if keep is None and new_actions and ci.same_actions((p.get("spec") or {}).get("actions") or [], new_actions):
                keep = p
                continue
            fresh = kube.get(API_VERSION, PLANS, p["metadata"]["name"])
            if fresh and not (fresh.get("spec") or {}).get("approved") and \
                    (fresh.get("status") or {}).get("phase") not in {ph.value for ph in FINAL_PHASES}:
                _set_plan_phase(fresh, PlanPhase.SUPERSEDED, "the planner proposes something else now", "Superseded")
        if keep is not None:
            current = keep["metadata"]["name"]
            if spec.get("mode") == "auto":  # the policy switched to auto while it waited
                kube.custom().patch_cluster_custom_object(GROUP, VERSION, PLANS, current, {"spec": {"approved": True}})
        elif result.is_empty:
            current = ""
        else:
            current = _create_plan(body, result, approved=spec.get("mode", "approve") == "auto")
            status["lastPlan"] = current
            status["plansCreated"] = int(old.get("plansCreated", 0)) + 1
            logger.info("plan %s: %s", current, result.message)
    status["currentPlan"] = current
    if current:
        reason, message = ("PlanRunning", f"Plan {current} runs: {result.message}") if spec.get("mode") == "auto" else \
            ("AwaitingApproval", f"Plan {current} waits for approval (set spec.approved: true on it): {result.message}")
    else:
        reason, message = result.reason or "NothingToDo", result.message
    status.update(phase="Active", conditions=set_condition(conds, "Ready", True, reason, message[:1024], generation))
    _write_policy(body, status)
    return interval if not current else min(interval, WAIT_PASS)


def _create_plan(policy: dict, result: planner.Plan, approved: bool) -> str:
    base = f"{policy['metadata']['name'][:200]}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}"
    body = {
        "apiVersion": API_VERSION,
        "kind": "ConsolidationPlan",
        "metadata": {
            "name": base,
            "labels": {POLICY_LABEL: policy["metadata"]["name"]},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "ConsolidationPolicy", "name": policy["metadata"]["name"],
                                 "uid": policy["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": ci.plan_spec(result, policy["metadata"]["name"], approved),
    }
    for attempt in range(5):
        if attempt:
            body["metadata"]["name"] = f"{base}-{attempt}"
        try:
            kube.custom().create_cluster_custom_object(GROUP, VERSION, PLANS, body)
            return body["metadata"]["name"]
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise kopf.TemporaryError("could not find a free plan name", delay=5)


@kopf.on.event(GROUP, VERSION, POLICIES)
def policy_changed(name, type, body, **_) -> None:
    """A spec change wakes the policy's daemon (interval, mode, suspend...)."""
    key = ("policy", name)
    if type == "DELETED":
        _wake.pop(key, None)
    elif key in _wake and body.get("metadata", {}).get("generation") != (body.get("status") or {}).get("observedGeneration"):
        _wake[key].set()


@kopf.daemon(GROUP, VERSION, POLICIES, cancellation_timeout=10.0)
async def policy_daemon(name, stopped, logger, **_) -> None:
    event = _event_for("policy", name)
    while not stopped:
        event.clear()
        try:
            delay = await asyncio.to_thread(policy_cycle, name, logger)
        except ApiException as exc:
            logger.warning("consolidation cycle: API error %s; retrying", exc.status)
            delay = 5.0
        try:
            await asyncio.wait_for(event.wait(), timeout=delay)
        except TimeoutError:
            pass


# ------------------------------------------------------------------------------------------
# ConsolidationPlan
# ------------------------------------------------------------------------------------------


class _Pass:
    """What one execution pass sees and changes."""

    def __init__(self, plan: dict, policy_spec: dict):
        self.plan = plan
        self.name = plan["metadata"]["name"]
        self.spec = plan.get("spec") or {}
        self.actions: list[dict] = self.spec.get("actions") or []
        st = plan.get("status") or {}
        self.statuses: list[dict] = [dict(s) for s in st.get("actions") or []]
        if len(self.statuses) != len(self.actions):
            self.statuses = [{"index": i, "state": ActionState.PENDING.value} for i in range(len(self.actions))]
        self.policy = policy_spec
        self.world = read_cluster()
        self.nodes = {n["metadata"]["name"]: n for n in self.world["nodes"]}
        self.bmns = {b["metadata"]["name"]: b for b in self.world["bmns"]}
        self.vmis = {ci.vm_key(v["metadata"]["namespace"], v["metadata"]["name"]): v for v in self.world["vmis"]}
        self.migrations = _list_custom(KUBEVIRT_GROUP, KUBEVIRT_VERSION, "virtualmachineinstancemigrations")
        self.events: list[tuple[str, str, str]] = []

    # -- lookups --
    def bmn_of(self, host: str) -> dict | None:
        node = self.nodes.get(host)
        label = ((node or {}).get("metadata", {}).get("labels") or {}).get(ci.BMN_LABEL)
        if label and label in self.bmns:
            return self.bmns[label]
        for b in self.bmns.values():
            if ((b.get("status") or {}).get("nodeName") or b["metadata"]["name"]) == host:
                return b
        return None

    def migration(self, vm: str, name: str) -> dict | None:
        namespace, _ = ci.split_vm_key(vm)
        for m in self.migrations:
            if m["metadata"]["name"] == name and m["metadata"]["namespace"] == namespace:
                return m
        return None

    def set(self, i: int, state: ActionState, message: str = "", **extra) -> None:
        s = self.statuses[i]
        if s.get("state") != state.value:
            if state == ActionState.RUNNING:
                s["startedAt"] = now_iso()
            elif state != ActionState.PENDING:
                s["finishedAt"] = now_iso()
                s.setdefault("startedAt", s["finishedAt"])
        s["state"] = state.value
        if message:
            s["message"] = message[:1024]
        s.update(extra)
        if state == ActionState.FAILED:
            self.events.append(("Warning", "ActionFailed", f"{_describe(self.actions[i])}: {message}"))

    def state(self, i: int) -> str:
        return self.statuses[i].get("state", ActionState.PENDING.value)


def _describe(a: dict) -> str:
    if a["type"] == "Migrate":
        return f"Migrate {a['vm']} from {a['source']} to {a['host']}"
    if a["type"] == "Place":
        return f"Place {a['vm']} on {a['host']}"
    return f"{a['type']} {a['host']}"


_DONE = (ActionState.SUCCEEDED.value, ActionState.SKIPPED.value)


def _progress(p: _Pass, i: int) -> None:
    """Follow a Running action."""
    a, s = p.actions[i], p.statuses[i]
    age = _age(s.get("startedAt", ""))
    if a["type"] == "PowerOn":
        bmn = p.bmn_of(a["host"])
        node = p.nodes.get(a["host"])
        if bmn and (bmn.get("status") or {}).get("poweredOn") is True and node is not None and ci.node_ready(node):
            uncordon(a["host"])
            p.set(i, ActionState.SUCCEEDED, "powered on (BMC) and the Node is Ready; uncordoned")
        elif age > p.policy.get("powerTimeoutSeconds", 600):
            p.set(i, ActionState.FAILED, f"host {a['host']} was not powered on and Ready within "
                                         f"{p.policy.get('powerTimeoutSeconds', 600)}s")
    elif a["type"] == "PowerOff":
        _power_off(p, i, age)
    elif a["type"] == "Place":
        vmi = p.vmis.get(a["vm"])
        node = ((vmi or {}).get("status") or {}).get("nodeName")
        if vmi is None:
            p.set(i, ActionState.SKIPPED, "the VM is gone")
        elif node:
            p.set(i, ActionState.SUCCEEDED, f"runs on {node}")
        elif age > PLACE_GRACE:
            p.set(i, ActionState.SKIPPED, f"not placed within {PLACE_GRACE:.0f}s (the scheduler may have given the room "
                                          "to another VM); the next cycle looks again")
    elif a["type"] == "Migrate":
        mig = p.migration(a["vm"], s.get("migration", ""))
        if mig is None:
            p.set(i, ActionState.FAILED, f"migration {s.get('migration')} disappeared before it finished")
            return
        phase = (mig.get("status") or {}).get("phase", "")
        if phase == "Succeeded":
            vmi = p.vmis.get(a["vm"])
            where = ((vmi or {}).get("status") or {}).get("nodeName", "")
            p.set(i, ActionState.SUCCEEDED, f"migrated; runs on {where or a['host']}")
        elif phase == "Failed":
            why = ((mig.get("status") or {}).get("migrationState") or {}).get("failureReason") or "KubeVirt reported it Failed"
            p.set(i, ActionState.FAILED, f"migration {mig['metadata']['name']} failed: {why}")
        elif age > p.policy.get("migrationTimeoutSeconds", 600):
            namespace, _ = ci.split_vm_key(a["vm"])
            why = _target_pod_message(namespace, mig["metadata"]["name"])
            kube.delete(f"{KUBEVIRT_GROUP}/{KUBEVIRT_VERSION}", "virtualmachineinstancemigrations", mig["metadata"]["name"], namespace)
            p.set(i, ActionState.FAILED, f"migration {mig['metadata']['name']} did not finish within "
                                         f"{p.policy.get('migrationTimeoutSeconds', 600)}s (phase {phase or 'none'}"
                                         f"{'; ' + why if why else ''}); cancelled")


def _power_off(p: _Pass, i: int, age: float) -> None:
    """PowerOff, one look: never while a VMI runs on the host; wait for launcher Pods
    that are still being torn down after their migration; then spec.online false and
    wait for the BMC to say off."""
    host = p.actions[i]["host"]
    timeout = p.policy.get("powerTimeoutSeconds", 600)
    bmn = p.bmn_of(host)
    if bmn is None:
        p.set(i, ActionState.FAILED, f"host {host} has no BareMetalNode to power it off")
        return
    bname = bmn["metadata"]["name"]
    if (bmn.get("spec") or {}).get("online", False):
        running = ci.vms_on_host(p.world["vmis"], [], host)
        if running:
            p.set(i, ActionState.FAILED, f"host {host} still runs {len(running)} VMs ({', '.join(running[:5])}); "
                                         "not powered off")
            return
        leaving = ci.vms_on_host([], p.world["pods"], host)
        if leaving:
            if age > timeout:
                p.set(i, ActionState.FAILED, f"launcher Pods of {', '.join(leaving[:5])} did not leave host {host} "
                                             f"within {timeout}s; not powered off")
            else:
                p.set(i, ActionState.RUNNING, f"waiting for {len(leaving)} launcher Pods to leave the host")
            return
        set_online(bname, False)
        p.set(i, ActionState.RUNNING, f"spec.online cleared on BareMetalNode {bname}; waiting for the BMC")
    elif (bmn.get("status") or {}).get("poweredOn") is False:
        p.set(i, ActionState.SUCCEEDED, f"powered off through BareMetalNode {bname} (BMC)")
    elif age > timeout:
        p.set(i, ActionState.FAILED, f"host {host} was not powered off within {timeout}s")


def _target_pod_message(namespace: str, migration: str) -> str:
    for pod in kube.list_pods(namespace, f"kubevirt.io/migration-target={migration}"):
        msg = ci.pod_unschedulable(pod)
        if msg:
            return f"target Pod unschedulable: {msg}"
    return ""


def _start(p: _Pass, i: int, in_flight: list[str]) -> bool:
    """Start a Pending action of the current wave; False when it must wait (limits)."""
    a = p.actions[i]
    host = a["host"]
    if a["type"] == "PowerOn":
        bmn = p.bmn_of(host)
        if bmn is None:
            p.set(i, ActionState.FAILED, f"host {host} has no BareMetalNode to power it on")
            return True
        set_online(bmn["metadata"]["name"], True)
        p.set(i, ActionState.RUNNING, f"spec.online set on BareMetalNode {bmn['metadata']['name']}")
    elif a["type"] == "Place":
        p.set(i, ActionState.RUNNING, "waiting for the scheduler to place it")
    elif a["type"] == "PowerOff":
        p.set(i, ActionState.RUNNING, "checking that no VM is left on the host")
        _power_off(p, i, 0.0)
    elif a["type"] == "Migrate":
        vmi = p.vmis.get(a["vm"])
        where = ((vmi or {}).get("status") or {}).get("nodeName", "")
        name = ci.migration_name(p.name, i, a["vm"])
        existing = p.migration(a["vm"], name)
        if existing is not None:  # made before a restart
            p.set(i, ActionState.RUNNING, f"migration {name} to {host}", migration=name)
            return True
        if vmi is None:
            p.set(i, ActionState.SKIPPED, "the VM is gone")
            return True
        if where == host:
            p.set(i, ActionState.SUCCEEDED, f"already on {host}")
            return True
        if where != a["source"]:
            p.set(i, ActionState.SKIPPED, f"the VM moved to {where or 'no node'} in the meantime")
            return True
        why = ci._vmi_pinned(vmi)
        if why:
            p.set(i, ActionState.FAILED, f"the VM cannot be migrated now: {why}")
            return True
        target = p.nodes.get(host)
        if target is None or not ci.node_ready(target) or (target.get("spec") or {}).get("unschedulable"):
            p.set(i, ActionState.FAILED, f"target host {host} is not Ready or is cordoned")
            return True
        if not ci.migrations_to_start([(i, a["source"])], in_flight, int(p.policy.get("parallelMigrationsPerCluster", 5)),
                                      int(p.policy.get("parallelOutboundMigrationsPerNode", 2))):
            return False
        server = ((vmi["metadata"].get("labels") or {}).get(ci.SERVER_LABEL))
        mig = ci.migration_object(p.name, i, a["vm"], host, server)
        try:
            kube.custom().create_namespaced_custom_object(KUBEVIRT_GROUP, KUBEVIRT_VERSION, mig["metadata"]["namespace"],
                                                          "virtualmachineinstancemigrations", mig)
        except ApiException as exc:
            if exc.status != 409:
                raise
        in_flight.append(a["source"])
        p.set(i, ActionState.RUNNING, f"migration {name} to {host}", migration=name)
    return True


def execute_pass(name: str, logger: logging.Logger | logging.LoggerAdapter = log) -> float | None:
    """One look at a plan; returns seconds until the next, None when it is finished."""
    plan = kube.get(API_VERSION, PLANS, name)
    if plan is None or plan["metadata"].get("deletionTimestamp"):
        return None
    spec, st = plan.get("spec") or {}, plan.get("status") or {}
    phase = st.get("phase", "")
    if phase in {ph.value for ph in FINAL_PHASES}:
        return None
    generation = plan["metadata"].get("generation", 0)
    policy = kube.get(API_VERSION, POLICIES, spec.get("policy", ""))
    policy_spec = (policy or {}).get("spec") or {}
    with _plan_lock:
        plan = kube.get(API_VERSION, PLANS, name) or plan
        st = plan.get("status") or {}
        phase = st.get("phase", "")
        spec = plan.get("spec") or {}
        if phase in {ph.value for ph in FINAL_PHASES}:
            return None
        if not phase:
            statuses = [{"index": i, "state": ActionState.PENDING.value} for i in range(len(spec.get("actions") or []))]
            kube.patch_status(API_VERSION, PLANS, name, {"actions": statuses, "observedGeneration": generation})
            phase = PlanPhase.RECOMMENDED.value
            if spec.get("approved"):
                _set_plan_phase(plan, PlanPhase.RECOMMENDED, f"approved: {spec.get('summary', '')}", "Approved")
            else:
                _set_plan_phase(plan, PlanPhase.RECOMMENDED, f"{spec.get('summary', '')}; waiting for approval "
                                "(set spec.approved: true)", "AwaitingApproval")
            plan = kube.get(API_VERSION, PLANS, name) or plan
        if phase == PlanPhase.RECOMMENDED.value:
            if spec.get("cancel"):
                _set_plan_phase(plan, PlanPhase.CANCELLED, "cancelled before it ran", "Cancelled")
                return None
            if not spec.get("approved"):
                return WAIT_PASS
            kube.patch_status(API_VERSION, PLANS, name, {"startedAt": now_iso()})
            _set_plan_phase(plan, PlanPhase.EXECUTING, f"running: {spec.get('summary', '')}", "Executing")
            plan = kube.get(API_VERSION, PLANS, name) or plan
    return _execute(plan, policy_spec, logger)


def _execute(plan: dict, policy_spec: dict, logger) -> float | None:
    p = _Pass(plan, policy_spec)
    name = p.name
    st = plan.get("status") or {}
    # Cordon every host the plan empties (once; again after a crash before it was done).
    stopping = bool((plan.get("spec") or {}).get("cancel")) or any(s.get("state") == ActionState.FAILED.value for s in p.statuses)
    for host in hosts_to_cordon(p.actions) if not stopping else ():
        node = p.nodes.get(host)
        if node is not None and ((node.get("metadata") or {}).get("annotations") or {}).get(ci.CORDONED_BY) != name:
            cordon(host, name)
            node.setdefault("metadata", {}).setdefault("annotations", {})[ci.CORDONED_BY] = name

    for i in range(len(p.actions)):
        if p.state(i) == ActionState.RUNNING.value:
            _progress(p, i)

    stopping = bool((plan.get("spec") or {}).get("cancel")) or any(s.get("state") == ActionState.FAILED.value for s in p.statuses)
    if not stopping:
        pending = [i for i in range(len(p.actions)) if p.state(i) == ActionState.PENDING.value]
        if pending:
            wave = min(int(p.actions[i].get("wave", 0)) for i in pending)
            earlier_done = all(p.state(i) in _DONE for i in range(len(p.actions)) if int(p.actions[i].get("wave", 0)) < wave)
            if earlier_done:
                in_flight = [((m.get("status") or {}).get("migrationState") or {}).get("sourceNode") or
                             _source_of(p, m) for m in p.migrations if ci.migration_in_flight(m)]
                for i in pending:
                    if int(p.actions[i].get("wave", 0)) != wave:
                        continue
                    if not _start(p, i, in_flight) and p.actions[i]["type"] == "Migrate":
                        continue  # a limit: try the next one (another source host may have room)
                    if p.state(i) == ActionState.FAILED.value:
                        break

    running = [i for i in range(len(p.actions)) if p.state(i) == ActionState.RUNNING.value]
    failed = [i for i in range(len(p.actions)) if p.state(i) == ActionState.FAILED.value]
    stopping = stopping or bool(failed)
    final: tuple[PlanPhase, str, str] | None = None
    if stopping and not running:
        for i in range(len(p.actions)):
            if p.state(i) == ActionState.PENDING.value:
                p.set(i, ActionState.SKIPPED, "the plan stopped before this action")
        released = _release_cordons(p)
        cancelled = bool((plan.get("spec") or {}).get("cancel")) and not failed
        if cancelled:
            final = (PlanPhase.CANCELLED, "Cancelled", "cancelled: nothing new started"
                     + (f"; uncordoned {', '.join(released)}" if released else ""))
        else:
            first = p.actions[failed[0]]
            final = (PlanPhase.FAILED, "ActionFailed", f"{_describe(first)} failed: {p.statuses[failed[0]].get('message', '')}; "
                     f"the plan stopped safely ({sum(1 for s in p.statuses if s['state'] == 'Skipped')} actions skipped"
                     + (f", uncordoned {', '.join(released)}" if released else "") + ")")
    elif not running and all(p.state(i) in _DONE for i in range(len(p.actions))):
        released = _release_cordons(p)
        off = sum(1 for i, a in enumerate(p.actions) if a["type"] == "PowerOff" and p.state(i) == "Succeeded")
        on = sum(1 for i, a in enumerate(p.actions) if a["type"] == "PowerOn" and p.state(i) == "Succeeded")
        moved = sum(1 for i, a in enumerate(p.actions) if a["type"] == "Migrate" and p.state(i) == "Succeeded")
        final = (PlanPhase.SUCCEEDED, "Completed", f"done: {moved} VMs migrated, {off} hosts powered off, {on} hosts powered on"
                 + (f"; uncordoned {', '.join(released)}" if released else ""))

    counts = {k: sum(1 for s in p.statuses if s["state"] == v)
              for k, v in (("succeeded", "Succeeded"), ("failed", "Failed"), ("skipped", "Skipped"))}
    patch = {"actions": p.statuses, **counts}
    if final is None:
        patch["message"] = (f"{counts['succeeded']}/{len(p.actions)} actions done, {len(running)} running"
                            + ("; stopping after a failure" if stopping else ""))
    if any((st.get(k) != v) for k, v in patch.items()):
        kube.patch_status(API_VERSION, PLANS, name, patch)
    for type_, reason, message in p.events:
        _post(plan, type_, reason, message)
    if final is not None:
        _set_plan_phase(kube.get(API_VERSION, PLANS, name) or plan, final[0], final[2], final[1])
        logger.info("plan %s %s: %s", name, final[0].value, final[2])
        return None
    return EXECUTE_PASS


def _source_of(p: _Pass, mig: dict) -> str:
    vm = ci.vm_key(mig["metadata"]["namespace"], (mig.get("spec") or {}).get("vmiName", ""))
    return ((p.vmis.get(vm) or {}).get("status") or {}).get("nodeName", "")


def hosts_to_cordon(actions: list[dict]) -> list[str]:
    """The hosts a plan empties: those it powers off, and migration sources that
    receive no VM (a reserve host left on empty). A host that hands VMs on and
    takes others in (a reshaping plan) stays schedulable: its arrivals need it."""
    targets = {a["host"] for a in actions if a["type"] == "Migrate"}
    sources = {a["source"] for a in actions if a["type"] == "Migrate"}
    return sorted((sources - targets) | {a["host"] for a in actions if a["type"] == "PowerOff"})


def _release_cordons(p: _Pass) -> list[str]:
    """Uncordon the hosts this plan cordoned that are still powered on."""
    out = []
    off = {p.actions[i]["host"] for i in range(len(p.actions))
           if p.actions[i]["type"] == "PowerOff" and p.state(i) == ActionState.SUCCEEDED.value}
    for host, node in p.nodes.items():
        if ((node.get("metadata") or {}).get("annotations") or {}).get(ci.CORDONED_BY) == p.name and host not in off:
            uncordon(host)
            out.append(host)
    return sorted(out)


@kopf.on.event(GROUP, VERSION, PLANS)
def plan_changed(name, type, body, **_) -> None:
    """Approval or cancellation wakes the plan's daemon."""
    key = ("plan", name)
    if type == "DELETED":
        _wake.pop(key, None)
    elif key in _wake and ((body.get("spec") or {}).get("approved") or (body.get("spec") or {}).get("cancel")):
        _wake[key].set()


@kopf.daemon(GROUP, VERSION, PLANS, cancellation_timeout=10.0)
async def plan_daemon(name, stopped, logger, **_) -> None:
    event = _event_for("plan", name)
    while not stopped:
        event.clear()
        try:
            delay = await asyncio.to_thread(execute_pass, name, logger)
        except ApiException as exc:
            logger.warning("plan %s: API error %s; retrying", name, exc.status)
            delay = 5.0
        if delay is None:
            _wake.pop(("plan", name), None)
            return
        try:
            await asyncio.wait_for(event.wait(), timeout=delay)
        except TimeoutError:
            pass

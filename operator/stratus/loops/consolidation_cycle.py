"""The ConsolidationPolicy planning cycle: one loop per policy, every ``intervalSeconds``.

A cycle reads the policy, steps aside when another policy is the active one (the
oldest) or while a plan of its own runs, otherwise reads the cluster
(``drivers.hosts.read_cluster``), translates it (``core.consolidation.inputs``), asks the
planner, uncordons hosts a finished plan left cordoned, and records a non-empty plan as
a ConsolidationPlan owned by the policy (approved at once in ``auto`` mode). A waiting
plan is kept while the planner proposes the same actions and superseded otherwise.
The policy's status says what the last cycle saw and decided. ``plan_for`` is the same
computation for ``stratus consolidate plan``.
"""

from __future__ import annotations

import datetime
import functools
import logging

import kopf
from kubernetes.client.rest import ApiException

from ..api.consolidationplan import FINAL_PHASES, PlanPhase
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import consolidation as planner
from ..core.conditions import now as now_iso
from ..core.conditions import set_condition
from ..core.consolidation import inputs as ci
from ..drivers import hosts, kube
from .consolidation_executor import PLANS, POLICIES, WAIT_PASS, WAKEUPS, plan_lock, post_event, set_plan_phase
from .wakeups import repeat

log = logging.getLogger(__name__)

POLICY_LABEL = "stratus.dev/consolidation-policy"
FINAL = {ph.value for ph in FINAL_PHASES}


def state_of(world: dict[str, list[dict]], policy_spec: dict) -> ci.ClusterState:
    return ci.cluster_state(world["nodes"], world["bmns"], world["vmis"], world["pods"], policy_spec)


def plan_for(policy_spec: dict, world: dict | None = None) -> tuple[ci.ClusterState, planner.Plan]:
    """The plan the policy would make for the cluster now (used by the CLI too)."""
    state = state_of(world or hosts.read_cluster(), policy_spec)
    return state, planner.plan(state.hosts, state.vms, state.constraints)


def active_policy(policies: list[dict]) -> str:
    """The policy that acts: the oldest that is not being deleted ("" for none)."""
    alive = [p for p in policies if not p["metadata"].get("deletionTimestamp")]
    ordered = sorted(alive, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
    return ordered[0]["metadata"]["name"] if ordered else ""


def list_policies() -> list[dict]:
    return hosts.list_custom(GROUP, VERSION, POLICIES)


def _write_policy(body: dict, status: dict) -> None:
    old = body.get("status") or {}
    changed = {k: v for k, v in status.items() if old.get(k) != v}
    if changed:
        kube.patch_status(API_VERSION, POLICIES, body["metadata"]["name"], changed)
    if status.get("phase") and status.get("phase") != old.get("phase"):
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        post_event(body, "Warning" if status["phase"] in ("Conflict", "Error") else "Normal", ready.get("reason", status["phase"]),
                   f"{old.get('phase') or 'new'} -> {status['phase']}: {ready.get('message', '')}")


def _uncordon_leftovers(state: ci.ClusterState, open_plans: set[str]) -> list[str]:
    """Hosts consolidation cordoned that are on and Ready, while no plan of theirs runs."""
    done = []
    for name, info in state.info.items():
        host = next(h for h in state.hosts if h.name == name)
        if info.cordoned_by and info.cordoned_by not in open_plans and info.ready and host.powered_on:
            hosts.uncordon(name)
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

    active = active_policy(list_policies())
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

    plans = hosts.list_custom(GROUP, VERSION, PLANS, f"{POLICY_LABEL}={name}")
    open_plans = [p for p in plans if (p.get("status") or {}).get("phase") not in FINAL]
    running = [p for p in open_plans if (p.get("spec") or {}).get("approved")]
    if running:
        plan_name = running[0]["metadata"]["name"]
        status.update(phase="Active", currentPlan=plan_name, conditions=set_condition(
            conds, "Ready", True, "PlanRunning", f"Plan {plan_name} is running; planning resumes when it ends", generation))
        _write_policy(body, status)
        return min(interval, WAIT_PASS)

    try:
        world = hosts.read_cluster()
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
    with plan_lock:
        for p in waiting:
            if keep is None and new_actions and ci.same_actions((p.get("spec") or {}).get("actions") or [], new_actions):
                keep = p
                continue
            fresh = kube.get(API_VERSION, PLANS, p["metadata"]["name"])
            if fresh and not (fresh.get("spec") or {}).get("approved") and (fresh.get("status") or {}).get("phase") not in FINAL:
                set_plan_phase(fresh, PlanPhase.SUPERSEDED, "the planner proposes something else now", "Superseded")
        if keep is not None:
            current = keep["metadata"]["name"]
            if spec.get("mode") == "auto":  # the policy switched to auto while it waited
                approve(current)
        elif result.is_empty:
            current = ""
        else:
            current = create_plan(body, result, approved=spec.get("mode", "approve") == "auto")
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


def approve(plan: str) -> None:
    kube.custom().patch_cluster_custom_object(GROUP, VERSION, PLANS, plan, {"spec": {"approved": True}})


def create_plan(policy: dict, result: planner.Plan, approved: bool) -> str:
    """Record the plan as a ConsolidationPlan owned by the policy; returns its name."""
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


async def run(name: str, stopped, logger) -> None:
    """The policy's daemon: a cycle, then sleep until the next is due or a spec change."""
    await repeat(WAKEUPS, ("policy", name), functools.partial(policy_cycle, name, logger), stopped, logger,
                 "consolidation cycle")

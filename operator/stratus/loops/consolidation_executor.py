"""The ConsolidationPlan executor: one loop per plan, from Recommended to a final phase.

Each pass reads the plan and its policy, moves a new plan to Recommended (and an
approved one to Executing), then reads the world (``drivers.hosts``), runs one pass of
``core.consolidation.executor`` with the real host actions, writes the status patch it
returns, posts its events and, when the plan ended, its final phase. A pass returns
the seconds until the next (``EXECUTE_PASS`` while it executes, ``WAIT_PASS`` while it
waits for approval) or None when the plan is finished; an approval or a cancellation
wakes the loop at once (``WAKEUPS``). The policy's planning cycle
(``loops.consolidation_cycle``) shares ``plan_lock``, so it never supersedes a plan
this loop is starting. The rules themselves are in ``controllers/consolidation.py``.
"""

from __future__ import annotations

import datetime
import functools
import logging
import threading

import kopf
from ..api.consolidationplan import FINAL_PHASES, ActionState, PlanPhase
from ..api.registry import API_VERSION
from ..core.conditions import now as now_iso
from ..core.conditions import set_condition
from ..core.consolidation import executor as ex
from ..core.consolidation import inputs as ci
from ..drivers import hosts, kube
from .wakeups import Wakeups, repeat

log = logging.getLogger(__name__)

POLICIES = "consolidationpolicies"
PLANS = "consolidationplans"
#: Seconds between passes of an executing plan, and of a waiting one.
EXECUTE_PASS = 2.0
WAIT_PASS = 10.0
FINAL = {ph.value for ph in FINAL_PHASES}

#: Held while a plan's phase moves, by this loop and by the policy's cycle.
plan_lock = threading.Lock()
#: Keys ("plan", name) and ("policy", name).
WAKEUPS = Wakeups()


def post_event(body: dict, type_: str, reason: str, message: str) -> None:
    try:
        kopf.event(body, type=type_, reason=reason, message=message[:1024])
    except Exception as exc:  # noqa: BLE001 - an event is best effort (e.g. outside a kopf context)
        log.debug("could not post event %s: %s", reason, type(exc).__name__)


def set_plan_phase(plan: dict, phase: PlanPhase, message: str, reason: str) -> None:
    generation = plan["metadata"].get("generation", 0)
    st = plan.get("status") or {}
    conds = set_condition(st.get("conditions"), "Ready", phase == PlanPhase.SUCCEEDED, reason, message, generation)
    patch = {"phase": phase.value, "message": message, "conditions": conds, "observedGeneration": generation}
    if phase in FINAL_PHASES:
        patch["completedAt"] = now_iso()
    kube.patch_status(API_VERSION, PLANS, plan["metadata"]["name"], patch)
    post_event(plan, "Warning" if phase == PlanPhase.FAILED else "Normal", reason, f"{phase.value}: {message}")


class ClusterHostActions:
    """``core.consolidation.executor.HostActions`` on the real cluster."""

    cordon = staticmethod(hosts.cordon)
    uncordon = staticmethod(hosts.uncordon)
    set_online = staticmethod(hosts.set_online)
    create_migration = staticmethod(hosts.create_migration)

    @staticmethod
    def delete_migration(name: str, namespace: str) -> None:
        hosts.delete_migration(name, namespace)

    @staticmethod
    def target_pod_message(namespace: str, migration: str) -> str:
        for pod in kube.list_pods(namespace, f"kubevirt.io/migration-target={migration}"):
            msg = ci.pod_unschedulable(pod)
            if msg:
                return f"target Pod unschedulable: {msg}"
        return ""


def execute_pass(name: str, logger: logging.Logger | logging.LoggerAdapter = log) -> float | None:
    """One look at a plan; returns seconds until the next, None when it is finished."""
    plan = kube.get(API_VERSION, PLANS, name)
    if plan is None or plan["metadata"].get("deletionTimestamp"):
        return None
    spec, st = plan.get("spec") or {}, plan.get("status") or {}
    phase = st.get("phase", "")
    if phase in FINAL:
        return None
    generation = plan["metadata"].get("generation", 0)
    policy = kube.get(API_VERSION, POLICIES, spec.get("policy", ""))
    policy_spec = (policy or {}).get("spec") or {}
    with plan_lock:
        plan = kube.get(API_VERSION, PLANS, name) or plan
        st = plan.get("status") or {}
        phase = st.get("phase", "")
        spec = plan.get("spec") or {}
        if phase in FINAL:
            return None
        if not phase:
            statuses = [{"index": i, "state": ActionState.PENDING.value} for i in range(len(spec.get("actions") or []))]
            kube.patch_status(API_VERSION, PLANS, name, {"actions": statuses, "observedGeneration": generation})
            phase = PlanPhase.RECOMMENDED.value
            if spec.get("approved"):
                set_plan_phase(plan, PlanPhase.RECOMMENDED, f"approved: {spec.get('summary', '')}", "Approved")
            else:
                set_plan_phase(plan, PlanPhase.RECOMMENDED, f"{spec.get('summary', '')}; waiting for approval "
                               "(set spec.approved: true)", "AwaitingApproval")
            plan = kube.get(API_VERSION, PLANS, name) or plan
        if phase == PlanPhase.RECOMMENDED.value:
            if spec.get("cancel"):
                set_plan_phase(plan, PlanPhase.CANCELLED, "cancelled before it ran", "Cancelled")
                return None
            if not spec.get("approved"):
                return WAIT_PASS
            kube.patch_status(API_VERSION, PLANS, name, {"startedAt": now_iso()})
            set_plan_phase(plan, PlanPhase.EXECUTING, f"running: {spec.get('summary', '')}", "Executing")
            plan = kube.get(API_VERSION, PLANS, name) or plan
    return _execute(plan, policy_spec, logger)


def _execute(plan: dict, policy_spec: dict, logger) -> float | None:
    p = ex.Pass(plan, policy_spec, hosts.read_cluster(), hosts.list_migrations(), datetime.datetime.now(datetime.timezone.utc))
    outcome = ex.run(p, ClusterHostActions())
    if outcome.patch is not None:
        kube.patch_status(API_VERSION, PLANS, p.name, outcome.patch)
    for type_, reason, message in outcome.events:
        post_event(plan, type_, reason, message)
    if outcome.final is not None:
        phase, reason, message = outcome.final
        set_plan_phase(kube.get(API_VERSION, PLANS, p.name) or plan, phase, message, reason)
        logger.info("plan %s %s: %s", p.name, phase.value, message)
        return None
    return EXECUTE_PASS


async def run(name: str, stopped, logger) -> None:
    """The plan's daemon: passes until the plan is finished or the daemon is stopped."""
    await repeat(WAKEUPS, ("plan", name), functools.partial(execute_pass, name, logger), stopped, logger, f"plan {name}")

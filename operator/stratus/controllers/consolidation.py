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

Where it lives.
    These handlers parse the body and hand over: the planning cycle is
    ``loops.consolidation_cycle``, the executor ``loops.consolidation_executor``, the
    decisions of an execution pass ``core.consolidation.executor`` (table-tested), and
    the cluster reads and host actions ``drivers.hosts``.
"""

from __future__ import annotations

import kopf

from ..api.consolidationplan import ConsolidationPlan
from ..api.consolidationpolicy import ConsolidationPolicy
from ..api.registry import GROUP, VERSION
from ..drivers import kube
from ..loops import consolidation_cycle, consolidation_executor
from ..loops.consolidation_executor import PLANS, POLICIES, WAKEUPS


@kopf.on.event(GROUP, VERSION, POLICIES)
def policy_changed(name, type, body, **_) -> None:
    """A spec change wakes the policy's daemon (interval, mode, suspend...)."""
    key = ("policy", name)
    if type == "DELETED":
        WAKEUPS.forget(key)
        return
    ConsolidationPolicy.model_validate(kube.plain(body))
    if body["metadata"].get("generation") != (body.get("status") or {}).get("observedGeneration"):
        WAKEUPS.wake_if_sleeping(key)


@kopf.daemon(GROUP, VERSION, POLICIES, cancellation_timeout=10.0)
async def policy_daemon(name, body, stopped, logger, **_) -> None:
    ConsolidationPolicy.model_validate(kube.plain(body))
    await consolidation_cycle.run(name, stopped, logger)


@kopf.on.event(GROUP, VERSION, PLANS)
def plan_changed(name, type, body, **_) -> None:
    """Approval or cancellation wakes the plan's daemon."""
    key = ("plan", name)
    if type == "DELETED":
        WAKEUPS.forget(key)
        return
    plan = ConsolidationPlan.model_validate(kube.plain(body))
    if plan.spec.approved or plan.spec.cancel:
        WAKEUPS.wake_if_sleeping(key)


@kopf.daemon(GROUP, VERSION, PLANS, cancellation_timeout=10.0)
async def plan_daemon(name, body, stopped, logger, **_) -> None:
    ConsolidationPlan.model_validate(kube.plain(body))
    await consolidation_executor.run(name, stopped, logger)

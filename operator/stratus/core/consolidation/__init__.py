"""Node consolidation planning: which hosts to power on, which VMs to migrate in
what order, which hosts to power off. Pure: no I/O, no clock, no randomness.

Public API::

    plan(hosts, vms, constraints, mode=None) -> Plan
    check_plan(hosts, vms, constraints, plan) -> list[Violation]
    apply_plan(hosts, vms, plan) -> (hosts, vms)
    lower_bound(hosts, vms, constraints) -> int

The controller (not here) turns a ``Plan`` into BMC power calls and KubeVirt
migrations, executing ``plan.steps`` wave by wave. Design decisions are written
in each module's docstring: ``model`` (inputs, outputs, host roles),
``planner`` (modes, scale-down and scale-up, the no-churn construction),
``packing`` (how VMs are packed into free room), ``ordering`` (safe move
order), ``exact`` (tiny clusters), ``checker`` (the independent replay).
"""

from .checker import apply_plan, check_plan
from .model import (
    Action,
    AntiAffinityGroup,
    Constraints,
    Figures,
    Host,
    Mode,
    Objective,
    Plan,
    Step,
    Trigger,
    VM,
    Violation,
)
from .planner import lower_bound, plan

__all__ = [
    "Action",
    "AntiAffinityGroup",
    "Constraints",
    "Figures",
    "Host",
    "Mode",
    "Objective",
    "Plan",
    "Step",
    "Trigger",
    "VM",
    "Violation",
    "apply_plan",
    "check_plan",
    "lower_bound",
    "plan",
]

"""ConsolidationPlan: one plan of the consolidation controller, with its actions, its
figures and its state (Watcher's action plan).

Made by the controller, never by hand: `spec` is the proposal as the planner made it
(mode, reason, actions in waves, figures) and cannot change, except `approved` and
`cancel`; `status` tracks each action and the plan as a whole.

Phases (`status.phase`)::

    Recommended --(spec.approved: true)--> Executing --> Succeeded
         |                                     |------> Failed     (an action failed; why in the message)
         |                                     `------> Cancelled  (spec.cancel: true; in-flight migrations finish)
         `--> Superseded  (a newer plan replaced it before approval)

In `auto` mode plans are created approved and go straight to Executing.

Actions (`spec.actions`, run wave by wave; a wave starts when the one before is done):

    PowerOn   host      set the host's BareMetalNode online, wait until the BMC says on
                        and the Node is Ready, then uncordon the Node
    Place     host, vm  a pending VM is expected to land on the host (the scheduler
                        places it; done once the VM runs anywhere, skipped after a
                        minute: the scheduler may give the room to another VM)
    Migrate   host, vm, source
                        cordon the source, create a VirtualMachineInstanceMigration to
                        the host (spec.addedNodeSelector), wait for it
    PowerOff  host      check that no VM is left on the host, set its BareMetalNode
                        offline, wait until the BMC says off

`vm` is `<namespace>/<name>` of the VirtualMachineInstance.
"""

from __future__ import annotations

import enum
import typing as t

from kube_custom_resource import CustomResource, Scope
from pydantic import Field

from .common import BaseModel, StatusBase, printer
from .registry import VERSION


class ActionType(str, enum.Enum):
    POWER_ON = "PowerOn"
    PLACE = "Place"
    MIGRATE = "Migrate"
    POWER_OFF = "PowerOff"


class PlanPhase(str, enum.Enum):
    RECOMMENDED = "Recommended"
    EXECUTING = "Executing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    SUPERSEDED = "Superseded"


#: Phases a plan never leaves.
FINAL_PHASES = frozenset({PlanPhase.SUCCEEDED, PlanPhase.FAILED, PlanPhase.CANCELLED, PlanPhase.SUPERSEDED})


class ActionState(str, enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class PlanAction(BaseModel):
    type: ActionType = Field(..., description="PowerOn, Place, Migrate or PowerOff.")
    host: str = Field(..., max_length=253, description="The host (Node) the action is about; for Migrate and Place, the target.")
    vm: str = Field("", max_length=317, description="namespace/name of the VirtualMachineInstance (Migrate, Place).")
    source: str = Field("", max_length=253, description="The host the VM leaves (Migrate).")
    wave: int = Field(0, ge=0, description="Actions of one wave are independent; waves run in order.")


class PlanFigures(BaseModel):
    """The planner's figures (integers; utilisation in per-mille)."""

    hosts_on_before: int = 0
    hosts_on_after: int = 0
    hosts_in_use_before: int = 0
    hosts_in_use_after: int = 0
    lower_bound_hosts: int = 0
    migrations: int = 0
    migrated_mib: int = 0
    placements: int = 0
    powered_on: int = 0
    powered_off: int = 0
    unplaced: int = 0
    utilisation_before_permille: int = 0
    utilisation_after_permille: int = 0
    watts_before: int = Field(0, description="Estimated draw of the hosts on before the plan (watts).")
    watts_after: int = Field(0, description="Estimated draw after the plan (watts).")
    energy_saved_wh_per_day: int = Field(0, description="(wattsBefore - wattsAfter) x 24 hours, in Wh per day.")


class UnplacedVM(BaseModel):
    vm: str = Field(..., max_length=317, description="namespace/name of the pending VirtualMachineInstance.")
    reason: str = Field("", max_length=1024, description="Why it fits nowhere: TooLarge (larger than any host's usable room) or NoRoom.")


class ConsolidationPlanSpec(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self.actions == oldSelf.actions", "message": "spec.actions cannot be changed; the plan is as the planner made it"},
                {"rule": "!oldSelf.approved || self.approved", "message": "spec.approved cannot be withdrawn; set spec.cancel instead"},
            ]
        },
    }

    policy: str = Field(..., max_length=253, description="The ConsolidationPolicy that made the plan.")
    mode: str = Field("", max_length=32, description="ScaleUp or ScaleDown.")
    reason: str = Field("", max_length=128, description="Why the planner chose the mode (CamelCase).")
    summary: str = Field("", max_length=4096, description="The planner's one-line summary.")
    truncated: bool = Field(False, description="The migration budget stopped consolidation early; the next cycle continues.")
    unplaced: list[t.Annotated[str, Field(max_length=317)]] = Field(
        default_factory=list, description="Pending VMs that fit on no host, even with every standby host on."
    )
    unplaced_reasons: list[UnplacedVM] = Field(
        default_factory=list, max_length=1000, description="Why each pending VM in unplaced fits nowhere (the first 1,000)."
    )
    figures: PlanFigures = Field(default_factory=PlanFigures, description="The planner's figures.")
    actions: list[PlanAction] = Field(default_factory=list, description="What the plan does, in waves.")
    approved: bool = Field(False, description="Set to true to run a Recommended plan (approve mode).")
    cancel: bool = Field(False, description="Set to true to stop the plan: nothing new starts; running migrations finish.")


class ActionStatus(BaseModel):
    index: int = Field(..., ge=0, description="Position in spec.actions.")
    state: ActionState = Field(ActionState.PENDING, description="Pending, Running, Succeeded, Failed or Skipped.")
    migration: str = Field("", description="The VirtualMachineInstanceMigration (Migrate).")
    message: str = Field("", description="What happened.")
    started_at: str = Field("", description="When it started (RFC 3339).")
    finished_at: str = Field("", description="When it ended (RFC 3339).")


class ConsolidationPlanStatus(StatusBase):
    """See the module docstring for phases."""

    actions: list[ActionStatus] = Field(default_factory=list, description="The state of each action.")
    succeeded: int = Field(0, description="Actions that succeeded.")
    failed: int = Field(0, description="Actions that failed.")
    skipped: int = Field(0, description="Actions skipped (nothing to do any more, or the plan stopped).")
    started_at: str = Field("", description="When execution started.")
    completed_at: str = Field("", description="When the plan reached a final phase.")
    message: str = Field("", description="A human summary of where the plan is (why it failed, if it did).")


class ConsolidationPlan(
    CustomResource,
    version=VERSION,
    scope=Scope.CLUSTER,
    short_names=["cplan"],
    subresources={"status": {}},
    printer_columns=[
        printer("Policy", ".spec.policy"),
        printer("Mode", ".spec.mode"),
        printer("Migrations", ".spec.figures.migrations", "integer"),
        printer("Power Off", ".spec.figures.poweredOff", "integer"),
        printer("Power On", ".spec.figures.poweredOn", "integer"),
        printer("Approved", ".spec.approved", "boolean"),
        printer("Done", ".status.succeeded", "integer"),
        printer("Message", ".status.message", priority=1),
        printer("Phase", ".status.phase", description="Where the plan is"),
    ],
):
    """A consolidation plan: power on, migrate, power off, as actions in waves."""

    spec: ConsolidationPlanSpec
    status: ConsolidationPlanStatus = Field(default_factory=ConsolidationPlanStatus)


def sample(name: str = "default-1", policy: str = "default", **spec: t.Any) -> dict:
    """A ConsolidationPlan manifest for tests and docs (the controller makes real ones)."""
    from .registry import API_VERSION

    return {"apiVersion": API_VERSION, "kind": "ConsolidationPlan", "metadata": {"name": name},
            "spec": {"policy": policy, "mode": "ScaleDown", "actions": [], **spec}}

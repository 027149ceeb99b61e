"""ConsolidationPolicy: how the node-consolidation controller runs (the Ironic/Watcher
"server consolidation" scenario).

Cluster-scoped: hosts and the VMs of every namespace are one pool. Every
`intervalSeconds` the controller reads the cluster (hosts = Nodes labelled
`kubevirt.io/schedulable=true`, their BareMetalNodes, the VMIs), asks the planner
(`stratus.core.consolidation`) for a plan and records it as a `ConsolidationPlan`
owned by the policy. In `approve` mode the plan waits until someone sets
`spec.approved: true` on it (Watcher's action plans); in `auto` it runs at once.

Decisions:

- One policy acts. Two policies would fight over the same hosts, so the oldest one
  (creation time, then name) is the active one; any other reports `Ready=False`,
  reason `Conflict`, and does nothing.
- Which hosts consolidation may power off and on: hosts whose BareMetalNode has
  `role: hypervisor` and matches `standbyPool` (an empty selector matches every
  hypervisor BareMetalNode). A host without a BareMetalNode, or one outside the
  pool, is always on and never powered off.
- Percentages are integers (no floats in spec).
- When to act (`trigger`): `savings` (the default) consolidates whenever the best
  plan pays for itself: at most `maxMigrationsPerHost` migrations per host it
  powers off (objective `hosts`), or at least `minWattsPerMigration` watts saved
  per migration (objective `power`). Karpenter's users asked for a utilisation
  threshold and were told a plan should pay for itself instead; a watermark holds
  at 55 percent even where a fifth of the hosts could go. `watermarks` keeps the
  old rule (consolidate only below `lowWatermarkPercent`). The high watermark
  applies either way: above it standby hosts are powered on, and no scale-down
  leaves utilisation above it.
- What to minimise (`objective`): hosts on, or estimated watts. Watts come from
  `power`: a per-shape table (matched on the BareMetalNode's hardware inventory,
  else the Node's allocatable, by CPU count and, if given, memory) with idle and
  peak watts, linear in between by CPU requested; unmatched hosts use the
  defaults. Watts are integers (no floats in spec).
- KubeVirt's migration limits (`parallelMigrationsPerCluster`, default 5, and
  `parallelOutboundMigrationsPerNode`, default 2) are mirrored here so the controller
  never queues more than KubeVirt would run; set them to what the KubeVirt CR says.
"""

from __future__ import annotations

import enum
import typing as t

from kube_custom_resource import CustomResource, Scope
from pydantic import Field

from .common import READY_COLUMN, BaseModel, StatusBase, printer
from .registry import VERSION


class PolicyMode(str, enum.Enum):
    AUTO = "auto"
    APPROVE = "approve"


class SelectorOperator(str, enum.Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(BaseModel):
    key: str = Field(..., min_length=1, max_length=317, description="The label key.")
    operator: SelectorOperator = Field(..., description="In, NotIn, Exists or DoesNotExist.")
    values: list[t.Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=64, description="Values for In and NotIn."
    )


class LabelSelector(BaseModel):
    """A Kubernetes label selector (all requirements must match; empty matches all)."""

    match_labels: dict[str, t.Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, description="Labels that must be present with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Set-based requirements."
    )


class Trigger(str, enum.Enum):
    SAVINGS = "savings"
    WATERMARKS = "watermarks"


class Objective(str, enum.Enum):
    HOSTS = "hosts"
    POWER = "power"


class PowerShape(BaseModel):
    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self.peakWatts >= self.idleWatts",
                 "message": "spec.power.shapes[].peakWatts must be at least idleWatts"},
            ]
        },
    }

    cpu_cores: int = Field(..., ge=1, le=4096, description="Hosts with this many CPUs (hardware inventory, else allocatable rounded up).")
    memory_gib: int = Field(0, ge=0, le=1048576, description="And this much memory in GiB, rounded (0: any).")
    idle_watts: int = Field(..., ge=0, le=100000, description="Draw when on with nothing requested.")
    peak_watts: int = Field(..., ge=0, le=100000, description="Draw with every CPU requested.")


class PowerModel(BaseModel):
    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self.defaultPeakWatts >= self.defaultIdleWatts",
                 "message": "spec.power.defaultPeakWatts must be at least defaultIdleWatts"},
            ]
        },
    }

    default_idle_watts: int = Field(100, ge=0, le=100000, description="Idle draw of a host no shape matches.")
    default_peak_watts: int = Field(300, ge=0, le=100000, description="Peak draw of a host no shape matches.")
    shapes: list[PowerShape] = Field(default_factory=list, max_length=64,
                                     description="Idle and peak watts per host shape; the first match wins.")


class ConsolidationPolicySpec(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.lowWatermarkPercent <= self.highWatermarkPercent",
                    "message": "spec.lowWatermarkPercent must not exceed spec.highWatermarkPercent",
                    "fieldPath": ".lowWatermarkPercent",
                },
            ]
        },
    }

    mode: PolicyMode = Field(
        PolicyMode.APPROVE, description="approve: plans wait for spec.approved on the plan; auto: plans run at once."
    )
    suspend: bool = Field(False, description="Stop planning (a running plan finishes).")
    interval_seconds: int = Field(300, ge=5, le=86400, description="Seconds between planning cycles.")
    trigger: Trigger = Field(
        Trigger.SAVINGS,
        description="savings: consolidate whenever the best plan pays for itself; watermarks: only below lowWatermarkPercent.",
    )
    objective: Objective = Field(Objective.HOSTS, description="What a scale-down minimises: hosts on, or estimated power.")
    max_migrations_per_host: int = Field(
        20, ge=0, le=10000,
        description="Savings trigger, objective hosts: a plan acts only if it needs at most this many migrations per host it powers off.",
    )
    min_watts_per_migration: int = Field(
        10, ge=0, le=100000,
        description="Savings trigger, objective power: a plan acts only if it saves at least this many watts per migration.",
    )
    power: PowerModel = Field(default_factory=PowerModel, description="Estimated host power: idle and peak watts.")
    low_watermark_percent: int = Field(
        50, ge=0, le=100,
        description="Trigger watermarks: below this utilisation (of the larger of CPU and memory) hosts are freed.",
    )
    high_watermark_percent: int = Field(
        90, ge=0, le=100,
        description="Above this utilisation standby hosts are powered on; no scale-down leaves utilisation above it.",
    )
    headroom_percent: int = Field(10, ge=0, le=99, description="Share of each host's capacity the planner keeps free.")
    max_migrations_per_cycle: int = Field(
        20, ge=0, le=10000, description="The migration budget of one plan (0: never migrate)."
    )
    min_free_hosts: int = Field(0, ge=0, le=1000, description="Empty hosts kept powered on as a spare.")
    standby_pool: LabelSelector = Field(
        default_factory=LabelSelector,
        description="BareMetalNodes (role hypervisor) that consolidation may power off and on; empty: all of them.",
    )
    parallel_migrations_per_cluster: int = Field(
        5, ge=1, le=100, description="At most this many migrations at once, cluster-wide (KubeVirt's limit)."
    )
    parallel_outbound_migrations_per_node: int = Field(
        2, ge=1, le=20, description="At most this many migrations leaving one node at once (KubeVirt's limit)."
    )
    migration_timeout_seconds: int = Field(
        600, ge=10, le=86400, description="A migration not done after this long is cancelled and fails the plan."
    )
    power_timeout_seconds: int = Field(
        600, ge=10, le=86400, description="A host that has not reached the asked power state (and, powered on, Ready) after this long fails the plan."
    )


class Utilisation(BaseModel):
    hosts: int = Field(0, description="Hosts (schedulable KubeVirt Nodes) seen.")
    hosts_on: int = Field(0, description="Hosts powered on.")
    hosts_standby: int = Field(0, description="Hosts off in the standby pool (may be powered on).")
    vms: int = Field(0, description="VMs running.")
    pending_vms: int = Field(0, description="VMs whose launcher Pod fits on no node.")
    pinned_vms: int = Field(0, description="VMs that cannot be live-migrated.")
    utilisation_percent: int = Field(0, description="Demand over usable capacity of the hosts in service (larger of CPU and memory).")


class ConsolidationPolicyStatus(StatusBase):
    """phase: Active, Suspended, Conflict (another policy acts) or Error."""

    last_evaluation: str = Field("", description="When the cluster was last planned for (RFC 3339).")
    last_mode: str = Field("", description="The planner's mode at the last evaluation: ScaleUp, ScaleDown or Hold.")
    last_reason: str = Field("", description="Why the planner chose that mode.")
    last_message: str = Field("", description="The planner's summary of the last evaluation.")
    current_plan: str = Field("", description="The plan that is waiting for approval or running.")
    last_plan: str = Field("", description="The last plan created.")
    cluster: Utilisation | None = Field(None, description="The cluster as the last evaluation saw it.")
    plans_created: int = Field(0, description="Plans created by this policy.")


class ConsolidationPolicy(
    CustomResource,
    version=VERSION,
    scope=Scope.CLUSTER,
    plural_name="consolidationpolicies",
    short_names=["cpol"],
    subresources={"status": {}},
    printer_columns=[
        printer("Mode", ".spec.mode"),
        printer("Interval", ".spec.intervalSeconds", "integer"),
        printer("Hosts On", ".status.cluster.hostsOn", "integer"),
        printer("Standby", ".status.cluster.hostsStandby", "integer"),
        printer("Util%", ".status.cluster.utilisationPercent", "integer"),
        printer("Plan", ".status.currentPlan"),
        printer("Last", ".status.lastMode", priority=1),
        printer("Phase", ".status.phase", description="What the policy is doing"),
        READY_COLUMN,
    ],
):
    """How and when hosts are consolidated (VMs migrated, idle hosts powered off) and
    standby hosts powered on."""

    spec: ConsolidationPolicySpec = Field(default_factory=ConsolidationPolicySpec)
    status: ConsolidationPolicyStatus = Field(default_factory=ConsolidationPolicyStatus)


def sample(name: str = "default", **spec: t.Any) -> dict:
    """A ConsolidationPolicy manifest for tests and docs."""
    from .registry import API_VERSION

    return {"apiVersion": API_VERSION, "kind": "ConsolidationPolicy", "metadata": {"name": name},
            "spec": {"mode": "approve", "intervalSeconds": 300, **spec}}

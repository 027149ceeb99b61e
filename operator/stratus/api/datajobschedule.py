"""DataJobSchedule: a DataJob made on a cron schedule (Kubeflow's ScheduledSparkApplication,
Kubernetes' CronJob).

At each time ``spec.schedule`` (5-field cron, UTC) names, a DataJob ``<name>-<minutes since
the epoch>`` is made from ``spec.template``, owned by the schedule; the name is fixed by the
scheduled minute, so a run is never made twice (an operator restart included). Missed times
are not made up one by one: only the latest counts. ``concurrencyPolicy``: Allow (runs may
overlap), Forbid (skip a time while a run is active; the default), Replace (kill the active
run, start the new one). Finished runs beyond the history limits are deleted, oldest first.
Phases: Scheduled, Suspended, Error.
"""

from __future__ import annotations

import enum

from kube_custom_resource import CustomResource
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, StatusBase, printer
from .datajob import DataJobSpec
from .registry import VERSION


class ConcurrencyPolicy(str, enum.Enum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class JobTemplate(DataJobSpec):
    """A DataJob spec (its fields may change between runs)."""

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"x-kubernetes-validations": [
            {"rule": "!has(self.application.key) || !self.application.key.endsWith('.jar') || has(self.mainClass)",
             "message": "spec.template.mainClass is required for a JAR application"},
        ]},
    }


class DataJobScheduleSpec(BaseModel):
    schedule: str = Field(..., min_length=9, max_length=128, description="When to run: a 5-field cron expression in UTC, e.g. '0 3 * * *'.")
    concurrency_policy: ConcurrencyPolicy = Field(ConcurrencyPolicy.FORBID, description="Allow, Forbid (skip while a run is active) or Replace.")
    suspend: bool = Field(False, description="Make no new runs while true.")
    successful_runs_history_limit: int = Field(3, ge=0, le=100, description="Succeeded runs to keep.")
    failed_runs_history_limit: int = Field(1, ge=0, le=100, description="Failed or killed runs to keep.")
    template: JobTemplate = Field(..., description="The DataJob spec of every run.")


class DataJobScheduleStatus(StatusBase):
    last_schedule_time: str = Field("", description="The scheduled time of the latest run made (RFC 3339).")
    next_schedule_time: str = Field("", description="The next time a run is due (RFC 3339).")
    last_run: str = Field("", description="The latest run (a DataJob).")
    active: list[str] = Field(default_factory=list, description="Runs not finished yet.")
    skipped: int = Field(0, description="Times skipped because a run was still active (Forbid).")


class DataJobSchedule(
    CustomResource,
    version=VERSION,
    short_names=["djs"],
    subresources={"status": {}},
    printer_columns=[
        printer("Schedule", ".spec.schedule"),
        printer("Suspend", ".spec.suspend", "boolean"),
        printer("Last", ".status.lastScheduleTime"),
        printer("Next", ".status.nextScheduleTime"),
        PHASE_COLUMN,
        READY_COLUMN,
    ],
):
    """A DataJob run on a cron schedule."""

    spec: DataJobScheduleSpec
    status: DataJobScheduleStatus = Field(default_factory=DataJobScheduleStatus)

"""DataJobSchedule: DataJobs made on a cron schedule (see api/datajobschedule.py).

On a timer (STRATUS_DATA_POLL seconds): the latest due time after ``lastScheduleTime`` (or
the schedule's creation), :func:`stratus.core.dataprocessing.decide_schedule` over the runs
that exist, then create the due run (its name fixed by the scheduled minute: creating it twice
is a 409), delete what the policy and the history limits say, and write status.
"""

from __future__ import annotations

import datetime
import os

import kopf
from kubernetes.client.rest import ApiException

from ..api.datajobschedule import DataJobSchedule
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import dataprocessing as dp
from ..core.conditions import set_condition
from ..drivers import kube
from .status import write_status

POLL = float(os.environ.get("STRATUS_DATA_POLL", "3"))
PLURAL = "datajobschedules"


def _ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def sync(body: dict, now: float | None = None) -> dict:
    body = kube.plain(body)
    meta, spec = body["metadata"], body["spec"]
    name, ns, generation = meta["name"], meta["namespace"], meta.get("generation", 0)
    old = body.get("status") or {}
    DataJobSchedule.model_validate(body)
    now = now if now is not None else datetime.datetime.now(datetime.timezone.utc).timestamp()
    try:
        dp.check_schedule(spec["schedule"])
    except dp.Invalid as exc:
        status = {"phase": "Error", "observedGeneration": generation,
                  "conditions": set_condition(old.get("conditions"), "Ready", False, exc.reason, exc.message, generation)}
        write_status(body, PLURAL, status, error_phase="Error")
        return status
    since = _ts(old["lastScheduleTime"]) if old.get("lastScheduleTime") else _ts(meta["creationTimestamp"])
    due, nxt = dp.schedule_times(spec["schedule"], since, now)
    runs = [r for r in kube.custom().list_namespaced_custom_object(GROUP, VERSION, ns, "datajobs",
                                                                    label_selector=f"{dp.SCHEDULE_LABEL}={name}")["items"]]
    decision = dp.decide_schedule(name=name, due=due, runs=runs, policy=spec.get("concurrencyPolicy", "Forbid"),
                                  suspend=bool(spec.get("suspend")), keep_succeeded=spec.get("successfulRunsHistoryLimit", 3),
                                  keep_failed=spec.get("failedRunsHistoryLimit", 1))
    for run in decision.delete:
        kube.delete(API_VERSION, "datajobs", run, ns)
    status: dict = {"observedGeneration": generation, "nextScheduleTime": _iso(nxt)}
    if decision.create:
        job = {"apiVersion": API_VERSION, "kind": "DataJob",
               "metadata": {"name": decision.create, "namespace": ns, "labels": {dp.SCHEDULE_LABEL: name},
                            "annotations": {dp.SCHEDULED_TIME_ANNOTATION: _iso(due)},
                            "ownerReferences": [dp.owner_reference(body)]},
               "spec": spec["template"]}
        try:
            kube.custom().create_namespaced_custom_object(GROUP, VERSION, ns, "datajobs", job)
        except ApiException as exc:
            if exc.status != 409:
                raise
        status["lastRun"] = decision.create
    if due is not None and not spec.get("suspend"):
        status["lastScheduleTime"] = _iso(due)
    if decision.skipped:
        status["skipped"] = int(old.get("skipped") or 0) + 1
    gone = set(decision.delete)
    status["active"] = sorted({r["metadata"]["name"] for r in runs
                               if (r.get("status") or {}).get("phase") not in dp.FINAL_JOB_PHASES and r["metadata"]["name"] not in gone}
                              | ({decision.create} if decision.create else set()))
    suspended = bool(spec.get("suspend"))
    status["phase"] = "Suspended" if suspended else "Scheduled"
    status["conditions"] = set_condition(old.get("conditions"), "Ready", not suspended, "Suspended" if suspended else "Scheduled",
                                         f"next run at {status['nextScheduleTime']}" if not suspended else "spec.suspend is true", generation)
    write_status(body, PLURAL, status, error_phase="Error")
    return status


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile_data_job_schedule(body, **_) -> None:
    sync(body)


@kopf.timer(GROUP, VERSION, PLURAL, interval=POLL, initial_delay=POLL)
def tick_data_job_schedule(body, **_) -> None:
    if body["metadata"].get("deletionTimestamp"):
        return
    sync(body)

"""DataJob: a driver Pod per attempt, submitting the application to the DataCluster's master.

Level-based, on create/update/resume and on a timer until the job ends: the cluster (must be
Active or Scaling), the Buckets it names (Bound, in this namespace), the inline program's
ConfigMap, then :func:`stratus.core.dataprocessing.decide_job` over the driver Pods that exist.
A driver Pod is named by job and attempt, so an operator restart finds the running attempt
again (from its Pod) and never submits twice; the application id is read from the master by
the application's deterministic name. The end comes from the driver's exit code and its
termination message (the output's tail with the exception line).
"""

from __future__ import annotations

import datetime
import os

import kopf

from ..api.datajob import DataJob
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import dataprocessing as dp
from ..core.conditions import now, set_condition
from ..drivers import kube, spark
from . import bucket as bucket_ctl
from .status import write_status

POLL = float(os.environ.get("STRATUS_DATA_POLL", "3"))
PLURAL = "datajobs"


class Waiting(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _write(body: dict, status: dict) -> dict:
    return write_status(body, PLURAL, status, error_phase=dp.JobPhase.FAILED, events_on_reason=False)


def _buckets(namespace: str, spec: dict) -> tuple[list[dict], dict[str, str]]:
    found, names = [], {}
    for ref in dp.referenced_buckets(spec):
        b = kube.get(API_VERSION, "buckets", ref, namespace)
        if b is None:
            raise Waiting("BucketNotFound", f"Bucket {ref!r} (named in spec.inputs, spec.outputs or spec.application) does not exist in this namespace; create it or fix the name")
        st = b.get("status") or {}
        if st.get("phase") != "Bound" or not st.get("secretName") or not st.get("bucketName"):
            raise Waiting("BucketNotReady", f"Bucket {ref!r} is not Bound with credentials yet (phase {st.get('phase') or 'new'})")
        found.append(b)
        names[ref] = st["bucketName"]
    return found, names


def _check_application(spec: dict, buckets: list[dict]) -> None:
    """An application object in a Bucket must exist before the first submission."""
    app = spec["application"]
    if not app.get("bucket"):
        return
    bucket = next(b for b in buckets if b["metadata"]["name"] == app["bucket"])
    try:
        _, store = bucket_ctl.store_for_class(bucket["spec"]["bucketClassName"])
        info = store.stat_object(bucket["status"]["bucketName"], app["key"])
    except Exception as exc:  # noqa: BLE001 - an unreachable store is waited on, not a crash
        raise Waiting("ApplicationUnverifiable", f"could not look up spec.application.key in Bucket {app['bucket']!r}: {type(exc).__name__}") from None
    if info is None:
        raise Waiting("ApplicationNotFound", f"spec.application.key {app['key']!r} does not exist in Bucket {app['bucket']!r}; upload it or fix the key")


def _seconds_since(ts: str) -> float:
    t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return (datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()


def sync(body: dict) -> dict:
    body = kube.plain(body)
    meta, spec = body["metadata"], body["spec"]
    name, ns, generation = meta["name"], meta["namespace"], meta.get("generation", 0)
    old = body.get("status") or {}
    conditions = old.get("conditions")
    DataJob.model_validate(body)
    phase = old.get("phase") or dp.JobPhase.PENDING
    if phase in dp.FINAL_JOB_PHASES:
        return old
    status: dict = {"observedGeneration": generation}
    cluster = kube.get(API_VERSION, "dataclusters", spec["clusterName"], ns)
    cstatus = (cluster or {}).get("status") or {}
    cluster_ready = cstatus.get("phase") in (dp.Phase.ACTIVE, dp.Phase.SCALING) and bool(cstatus.get("masterUrl"))
    pods = kube.list_pods(ns, f"{dp.JOB_LABEL}={name}")
    attempts = {int(p["metadata"]["labels"].get(dp.ATTEMPT_LABEL, "0")): p for p in pods}
    try:
        if cluster is None:
            raise Waiting("ClusterNotFound", f"spec.clusterName: DataCluster {spec['clusterName']!r} does not exist in this namespace; create it or fix the name")
        buckets, bucket_names = _buckets(ns, spec)
        if not attempts:
            _check_application(spec, buckets)
    except Waiting as exc:
        if not attempts:
            status.update(phase=dp.JobPhase.PENDING, conditions=set_condition(conditions, "Ready", False, exc.reason, exc.message, generation))
            _write(body, status)
            raise kopf.TemporaryError(exc.message, delay=POLL) from None
        buckets, bucket_names = [], {}
    if spec["application"].get("inline"):
        kube.apply_core(dp.app_config_map(body))

    start = old.get("startTime") or ""
    timeout = spec.get("timeoutSeconds")
    decision = dp.decide_job(
        phase=phase, attempts=attempts, retries=spec.get("retries", 0),
        kill=dp.KILL_ANNOTATION in (meta.get("annotations") or {}),
        timed_out=bool(start and timeout and _seconds_since(start) > timeout),
        cluster_ready=cluster_ready)
    for pod_name in decision.delete_pods:
        kube.delete("v1", "pods", pod_name, ns, propagation="Background")
    attempt = max(attempts) if attempts else 0
    if decision.create_attempt is not None:
        if not buckets and dp.referenced_buckets(spec):
            buckets, bucket_names = _buckets(ns, spec)
        attempt = decision.create_attempt
        image = (cluster["spec"].get("image") or dp.DEFAULT_IMAGE.format(version=cluster["spec"]["version"]))
        pod = dp.driver_pod(body, attempt, cstatus["masterUrl"], image, buckets, bucket_names)
        kube.create(pod)  # None: this attempt's pod is there already
        start = start or now()
        decision.phase = dp.JobPhase.RUNNING
    status.update(phase=decision.phase, attempt=attempt, startTime=start,
                  driverPod=dp.driver_pod_name(name, attempt) if attempt else "")
    if attempt and cstatus.get("webUi"):
        app = dp.find_application(spark.master_json(cstatus["webUi"]), dp.app_name(ns, name, attempt))
        if app:
            status["applicationId"] = app.get("id", "")
    if decision.phase in dp.FINAL_JOB_PHASES:
        status["completionTime"] = now()
        status["reason"] = decision.message if decision.phase != dp.JobPhase.SUCCEEDED else ""
        if attempt in attempts:
            status["driverLogTail"] = dp.log_tail(dp.pod_exit(attempts[attempt])[1])
    ready = decision.phase == dp.JobPhase.SUCCEEDED
    message = decision.message or {dp.JobPhase.RUNNING: f"attempt {attempt} is running on {spec['clusterName']}",
                                   dp.JobPhase.PENDING: f"waiting for DataCluster {spec['clusterName']} to be Active"}.get(decision.phase, "")
    status["conditions"] = set_condition(conditions, "Ready", ready, decision.reason or decision.phase.title(), message, generation)
    _write(body, status)
    return status


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile_data_job(body, **_) -> None:
    sync(body)


@kopf.timer(GROUP, VERSION, PLURAL, interval=POLL, initial_delay=POLL,
            when=lambda status, **_: (status or {}).get("phase") not in dp.FINAL_JOB_PHASES)
def refresh_data_job(body, **_) -> None:
    if body["metadata"].get("deletionTimestamp"):
        return
    sync(body)

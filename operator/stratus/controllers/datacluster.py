"""DataCluster: Spark master and worker Pods per node group, status from the real master.

Level-based, on create/update/resume and on a timer (STRATUS_DATA_POLL seconds, 3): check the
spec (core.dataprocessing), read the groups' Flavors, keep the master Service and Pods
0..count-1 of every group (higher indices go first when scaling down; workers are made once
the master has an address and remade if it moved), read the master's ``/json`` and write
status: per-group ready/desired (a worker is ready when the master has it ALIVE), submit
address, web UI, phase, conditions. Stopping deletes the Pods and keeps the Service.

Deletion (finalizer): the Pods are deleted and the DataCluster goes once none is left, so
every Spark process it started has stopped.
"""

from __future__ import annotations

import json
import os

import kopf
from kubernetes.client.rest import ApiException

from ..api.datacluster import DataCluster
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import dataprocessing as dp
from ..core.conditions import set_condition
from ..drivers import kube, spark
from .status import write_status

POLL = float(os.environ.get("STRATUS_DATA_POLL", "3"))
PLURAL = "dataclusters"


def _write(body: dict, status: dict) -> dict:
    return write_status(body, PLURAL, status, error_phase=dp.Phase.ERROR, events_on_reason=True)


def _pods(namespace: str, name: str) -> list[dict]:
    return kube.list_pods(namespace, f"{dp.CLUSTER_LABEL}={name},{dp.GROUP_LABEL}")


def _create_pod(pod: dict, refused: list[str]) -> None:
    """Create (a 409 means it is there); a quota refusal is collected for the Ready condition."""
    try:
        kube.create(pod)  # None: it is there already
    except ApiException as exc:
        if exc.status == 403 and "exceeded quota" in (exc.body or ""):
            try:
                message = json.loads(exc.body).get("message", "")
            except ValueError:
                message = "exceeded quota"
            refused.append(f"{pod['metadata']['name']}: {message}")
        else:
            raise


def _delete_pod(namespace: str, name: str) -> None:
    kube.delete("v1", "pods", name, namespace, propagation="Background")


def _sizes(spec: dict) -> dict[str, dp.Size]:
    sizes = {}
    for i, g in enumerate(spec["nodeGroups"]):
        flavor = kube.get(API_VERSION, "flavors", g["flavor"])
        if flavor is None:
            raise dp.Invalid("FlavorNotFound", f"spec.nodeGroups[{i}].flavor: Flavor {g['flavor']!r} does not exist; create it or name an existing one (kubectl get flavors)")
        sizes[g["name"]] = dp.size_of(flavor["spec"], spec.get("daemonMemory", "512Mi"))
    return sizes


def sync(body: dict) -> dict:
    """One level-based pass; returns the status written (for the timer and tests)."""
    body = kube.plain(body)
    meta, spec = body["metadata"], body["spec"]
    name, ns, generation = meta["name"], meta["namespace"], meta.get("generation", 0)
    old = body.get("status") or {}
    conditions = old.get("conditions")
    DataCluster.model_validate(body)
    pods = _pods(ns, name)
    try:
        dp.check_cluster(spec)
        sizes = _sizes(spec)
    except dp.Invalid as exc:
        status = {"phase": dp.Phase.ERROR, "observedGeneration": generation,
                  "conditions": set_condition(conditions, "Ready", False, exc.reason, exc.message, generation)}
        _write(body, status)
        if exc.reason == "FlavorNotFound":
            raise kopf.TemporaryError(exc.message, delay=POLL * 3) from None
        return status

    groups = spec["nodeGroups"]
    master_group = next(g for g in groups if g["role"] == dp.MASTER)
    by_group: dict[str, list[dict]] = {}
    for p in pods:
        by_group.setdefault(p["metadata"]["labels"].get(dp.GROUP_LABEL, ""), []).append(p)
    known = {g["name"] for g in groups}
    for group_name, group_pods in by_group.items():  # a removed group's pods
        if group_name not in known:
            for p in group_pods:
                _delete_pod(ns, p["metadata"]["name"])

    stopped = bool(spec.get("stopped"))
    refused: list[str] = []
    master_pod = None
    url = web = None
    master_json = None
    if stopped:
        for p in pods:
            _delete_pod(ns, p["metadata"]["name"])
    else:
        kube.apply_core(dp.master_service(body, master_group["name"]))
        plan = dp.plan_group(by_group.get(master_group["name"], []), 1)
        for pod_name in plan.delete:
            _delete_pod(ns, pod_name)
        for i in plan.create:
            _create_pod(dp.node_pod(body, master_group, i, sizes[master_group["name"]]), refused)
        master_pod = next((p for p in by_group.get(master_group["name"], [])
                           if dp.pod_index(p["metadata"]["name"]) == 0 and not p["metadata"].get("deletionTimestamp")), None)
        url, web = dp.master_url(master_pod, name, ns), dp.web_ui(master_pod)
        master_json = spark.master_json(web) if web else None
        if url:
            for g in groups:
                if g["role"] != dp.WORKER:
                    continue
                plan = dp.plan_group(by_group.get(g["name"], []), g["count"], url)
                for pod_name in plan.delete:
                    _delete_pod(ns, pod_name)
                for i in plan.create:
                    _create_pod(dp.node_pod(body, g, i, sizes[g["name"]], url), refused)

    alive = dp.alive_workers(master_json)
    answers = bool(master_json and master_json.get("status") == "ALIVE")
    desired = {g["name"]: (0 if stopped else g["count"]) for g in groups}
    ready: dict[str, int] = {}
    for g in groups:
        live = [p for p in by_group.get(g["name"], []) if not p["metadata"].get("deletionTimestamp")]
        if g["role"] == dp.MASTER:
            ready[g["name"]] = 1 if answers and not stopped else 0
        else:
            ready[g["name"]] = sum(1 for p in live if dp.pod_index(p["metadata"]["name"]) < g["count"] and dp.worker_registered(p, alive))
    # Surplus registrations (a worker being removed) keep the cluster Scaling until they go.
    extra = len(alive) - sum(ready[g["name"]] for g in groups if g["role"] == dp.WORKER)
    phase = dp.decide_phase(
        deleting=bool(meta.get("deletionTimestamp")), invalid=False, stopped=stopped,
        master_running=master_pod is not None and bool(dp.master_url(master_pod, name, ns)),
        master_answers=answers, ready=ready if extra <= 0 else {**ready, "": -1}, desired=desired,
        pods_running=all(len(by_group.get(g["name"], [])) >= desired[g["name"]] for g in groups),
        was_active=old.get("phase") in (dp.Phase.ACTIVE, dp.Phase.SCALING))
    workers_ready = sum(ready[g["name"]] for g in groups if g["role"] == dp.WORKER)
    workers_desired = sum(desired[g["name"]] for g in groups if g["role"] == dp.WORKER)
    if phase == dp.Phase.ACTIVE:
        conditions = set_condition(conditions, "Ready", True, "Active", f"master answers; {workers_ready} of {workers_desired} workers registered", generation)
    elif refused:
        conditions = set_condition(conditions, "Ready", False, "QuotaExceeded", f"the project's quota refused nodes; lower a group's count or raise the quota: {'; '.join(refused)[:900]}", generation)
    elif phase == dp.Phase.STOPPED:
        conditions = set_condition(conditions, "Ready", False, "Stopped", "spec.stopped is true; set it to false to start the cluster", generation)
    else:
        conditions = set_condition(conditions, "Ready", False, phase, f"{phase}: master {'answers' if answers else 'not answering yet'}; {workers_ready} of {workers_desired} workers registered", generation)
    conditions = set_condition(conditions, "MasterReady", answers, "MasterAlive" if answers else "MasterNotAnswering",
                               f"the master's web UI {'answers' if answers else 'does not answer yet'}", generation)
    status = {
        "phase": phase, "observedGeneration": generation, "conditions": conditions,
        "masterUrl": url or "", "webUi": web or "",
        "nodeGroups": [{"name": g["name"], "role": g["role"], "desired": desired[g["name"]], "ready": ready[g["name"]]} for g in groups],
        "workers": f"{workers_ready}/{workers_desired}",
        "cores": int((master_json or {}).get("cores") or 0),
        "nodes": sum(ready.values()),
    }
    _write(body, status)
    return status


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile_data_cluster(body, **_) -> None:
    sync(body)


@kopf.timer(GROUP, VERSION, PLURAL, interval=POLL, initial_delay=POLL)
def refresh_data_cluster(body, **_) -> None:
    if body["metadata"].get("deletionTimestamp"):
        return
    sync(body)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete_data_cluster(body, name, namespace, **_) -> None:
    pods = _pods(namespace, name)
    if old_phase := (body.get("status") or {}).get("phase"):
        if old_phase != dp.Phase.DELETING:
            kube.patch_status(API_VERSION, PLURAL, name, {"phase": dp.Phase.DELETING}, namespace)
    for p in pods:
        if not p["metadata"].get("deletionTimestamp"):
            _delete_pod(namespace, p["metadata"]["name"])
    if pods:
        raise kopf.TemporaryError(f"waiting for {len(pods)} Spark pods to stop", delay=2)

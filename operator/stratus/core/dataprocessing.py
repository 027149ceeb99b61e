"""Data processing (Sahara): pure logic for DataCluster and DataJob. No I/O.

A DataCluster is a Spark standalone cluster made of node groups (Stackable's role groups):
one master group of one Pod, any number of worker groups of ``count`` Pods each, sized by a
Flavor. A DataJob runs as a driver Pod that submits the application to the cluster's master
in client mode (``stratus spark driver``), so the driver outlives an operator restart and is
found again by its name rather than submitted twice.

This module builds the desired child objects, checks configuration against the keys Spark
daemons know, turns the master's ``/json`` answer into per-group readiness, and decides
phases. The controllers apply what it returns; drivers/spark.py talks to the master.
"""

from __future__ import annotations

import dataclasses
import json
import re

from .endpoints import PORTS_ANNOTATION, pod_endpoint
from .quantity import parse_bytes

#: Frameworks and versions this operator runs (published in the CRD's enum and the README).
FRAMEWORKS: dict[str, tuple[str, ...]] = {"spark": ("4.3.0",)}
#: The image a real cluster runs: Spark with the stratus package (`stratus spark master|worker|driver`).
DEFAULT_IMAGE = "stratus-spark:{version}"

ENGINE_LABEL = "stratus.dev/engine"
CLUSTER_LABEL = "stratus.dev/datacluster"
GROUP_LABEL = "stratus.dev/nodegroup"
JOB_LABEL = "stratus.dev/datajob"
ATTEMPT_LABEL = "stratus.dev/attempt"
MASTER_URL_ANNOTATION = "stratus.dev/master-url"
EXIT_ANNOTATION = "stratus.dev/local-exit"
TERMINATION_ANNOTATION = "stratus.dev/local-termination-message"
KILL_ANNOTATION = "stratus.dev/kill"

MASTER_PORT, MASTER_UI_PORT = 7077, 8080
WORKER_PORT, WORKER_UI_PORT = 7078, 8081

#: Spark daemon settings a DataCluster may set, and the roles whose daemons read them.
#: Cluster-wide config may hold any of them (each goes to the roles it concerns); a node
#: group's config only those of its role. Anything else is refused with the key named.
MASTER, WORKER = "master", "worker"
DAEMON_KEYS: dict[str, frozenset[str]] = {
    "spark.deploy.spreadOut": frozenset({MASTER}),
    "spark.deploy.defaultCores": frozenset({MASTER}),
    "spark.deploy.maxExecutorRetries": frozenset({MASTER}),
    "spark.deploy.retainedApplications": frozenset({MASTER}),
    "spark.deploy.retainedDrivers": frozenset({MASTER}),
    "spark.dead.worker.persistence": frozenset({MASTER}),
    "spark.master.rest.enabled": frozenset({MASTER}),
    "spark.worker.timeout": frozenset({MASTER}),
    "spark.worker.cleanup.enabled": frozenset({WORKER}),
    "spark.worker.cleanup.interval": frozenset({WORKER}),
    "spark.worker.cleanup.appDataTtl": frozenset({WORKER}),
    "spark.worker.ui.retainedExecutors": frozenset({WORKER}),
    "spark.worker.ui.retainedDrivers": frozenset({WORKER}),
    "spark.decommission.enabled": frozenset({WORKER}),
    "spark.storage.decommission.enabled": frozenset({WORKER}),
    "spark.network.timeout": frozenset({MASTER, WORKER}),
    "spark.rpc.askTimeout": frozenset({MASTER, WORKER}),
    "spark.ui.reverseProxy": frozenset({MASTER, WORKER}),
}
CONFIG_VALUE = re.compile(r"^[^\s\"'\\]{1,256}$")


class Phase:
    VALIDATING = "Validating"
    SPAWNING = "Spawning"
    CONFIGURING = "Configuring"
    STARTING = "Starting"
    ACTIVE = "Active"
    SCALING = "Scaling"
    STOPPED = "Stopped"
    ERROR = "Error"
    DELETING = "Deleting"


class JobPhase:
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    KILLED = "KILLED"


FINAL_JOB_PHASES = frozenset({JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.KILLED})


class Invalid(Exception):
    """Spec the API server could not refuse; ``reason`` is CamelCase, the message names the field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


# ---------------------------------------------------------------------------- validation


def check_config(config: dict[str, str] | None, field: str, role: str | None = None) -> None:
    """Refuse unknown keys (naming the key and the field), keys of another role, odd values."""
    for key, value in (config or {}).items():
        roles = DAEMON_KEYS.get(key)
        if roles is None:
            raise Invalid("UnknownConfigKey", f"{field}[{key!r}] is not a Spark daemon setting Stratus knows; known keys: {', '.join(sorted(DAEMON_KEYS))}")
        if role is not None and role not in roles:
            raise Invalid("ConfigKeyNotForRole", f"{field}[{key!r}] is read by {'/'.join(sorted(roles))} daemons, not by the {role} group; move it to spec.config or that group")
        if not CONFIG_VALUE.match(str(value)):
            raise Invalid("InvalidConfigValue", f"{field}[{key!r}] must be 1-256 characters without spaces or quotes")


def check_cluster(spec: dict) -> None:
    """What the schema cannot say about a DataCluster spec."""
    versions = FRAMEWORKS.get(spec.get("framework", ""))
    if versions is None:
        raise Invalid("UnknownFramework", f"spec.framework {spec.get('framework')!r} is not offered; use one of {', '.join(FRAMEWORKS)}")
    if spec.get("version") not in versions:
        raise Invalid("UnsupportedVersion", f"spec.version {spec.get('version')!r} is not offered for {spec['framework']}; use one of {', '.join(versions)}")
    check_config(spec.get("config"), "spec.config")
    groups = spec.get("nodeGroups") or []
    masters = [g for g in groups if g.get("role") == MASTER]
    if len(masters) != 1 or masters[0].get("count", 1) != 1:
        raise Invalid("InvalidTopology", "spec.nodeGroups must have exactly one master group with count 1")
    for i, g in enumerate(groups):
        check_config(g.get("config"), f"spec.nodeGroups[{i}].config", g.get("role"))


# ---------------------------------------------------------------------------- sizes


def mebibytes(quantity: str) -> int:
    return parse_bytes(quantity) // (1024 * 1024)


@dataclasses.dataclass(frozen=True)
class Size:
    """What a node of a group offers: whole CPUs and memory for executors, and the daemon's heap."""

    cpus: int
    memory_mb: int
    daemon_mb: int

    @property
    def worker_memory_mb(self) -> int:
        return max(256, self.memory_mb - self.daemon_mb)


def size_of(flavor_spec: dict, daemon_memory: str) -> Size:
    return Size(int(flavor_spec["vcpus"]), mebibytes(flavor_spec["ram"]), mebibytes(daemon_memory))


# ---------------------------------------------------------------------------- builders


def java_opts(config: dict[str, str]) -> str:
    return " ".join(f"-D{k}={v}" for k, v in sorted(config.items()))


def role_config(cluster_config: dict[str, str] | None, group_config: dict[str, str] | None, role: str) -> dict[str, str]:
    """The settings a daemon of ``role`` gets: cluster-wide ones that concern it, then its group's."""
    out = {k: v for k, v in (cluster_config or {}).items() if role in DAEMON_KEYS.get(k, ())}
    out.update(group_config or {})
    return out


def owner_reference(obj: dict) -> dict:
    meta = obj["metadata"]
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def cluster_labels(cluster_name: str, group: str | None = None) -> dict[str, str]:
    labels = {CLUSTER_LABEL: cluster_name}
    if group:
        labels[GROUP_LABEL] = group
    return labels


def master_service_name(cluster_name: str) -> str:
    return f"{cluster_name}-master"


def pod_name(cluster_name: str, group: str, index: int) -> str:
    return f"{cluster_name}-{group}-{index}"


def pod_index(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def master_service(cluster: dict, master_group: str) -> dict:
    name, ns = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": master_service_name(name), "namespace": ns, "labels": cluster_labels(name),
                     "ownerReferences": [owner_reference(cluster)]},
        "spec": {"selector": cluster_labels(name, master_group),
                 "ports": [{"name": "spark", "port": MASTER_PORT, "targetPort": "spark"},
                           {"name": "ui", "port": MASTER_UI_PORT, "targetPort": "ui"}]},
    }


def _resources(size: Size) -> dict:
    res = {"cpu": str(size.cpus), "memory": f"{size.memory_mb}Mi"}
    return {"requests": res, "limits": res}


def _affinity(cluster_name: str, group: str, anti_affinity: str | None) -> dict | None:
    if not anti_affinity:
        return None
    term = {"labelSelector": {"matchLabels": cluster_labels(cluster_name, group)}, "topologyKey": "kubernetes.io/hostname"}
    if anti_affinity == "Required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]}}


def node_pod(cluster: dict, group: dict, index: int, size: Size, master_url: str | None = None) -> dict:
    """A master or worker Pod of a node group. Its container runs ``stratus spark master|worker``
    in the Spark image; the local pod runner runs the same command as a process."""
    name, ns = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    spec = cluster["spec"]
    role = group["role"]
    conf = role_config(spec.get("config"), group.get("config"), role)
    env = [
        {"name": "SPARK_DAEMON_MEMORY", "value": f"{size.daemon_mb}m"},
        {"name": "SPARK_NO_DAEMONIZE", "value": "1"},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "SPARK_LOCAL_DIRS", "value": "/var/lib/spark/local"},
    ]
    if role == MASTER:
        env.append({"name": "SPARK_MASTER_OPTS", "value": java_opts(conf)})
        ports = [{"name": "spark", "containerPort": MASTER_PORT}, {"name": "ui", "containerPort": MASTER_UI_PORT}]
    else:
        env += [{"name": "SPARK_WORKER_OPTS", "value": java_opts(conf)},
                {"name": "SPARK_WORKER_CORES", "value": str(size.cpus)},
                {"name": "SPARK_WORKER_MEMORY", "value": f"{size.worker_memory_mb}m"},
                {"name": "SPARK_WORKER_DIR", "value": "/var/lib/spark/work"},
                {"name": "STRATUS_SPARK_MASTER", "value": master_url or ""}]
        ports = [{"name": "spark", "containerPort": WORKER_PORT}, {"name": "ui", "containerPort": WORKER_UI_PORT}]
    labels = {**cluster_labels(name, group["name"]), ENGINE_LABEL: f"spark-{role}"}
    annotations = {MASTER_URL_ANNOTATION: master_url} if master_url else {}
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name(name, group["name"], index), "namespace": ns, "labels": labels,
                     "annotations": annotations, "ownerReferences": [owner_reference(cluster)]},
        "spec": {
            "restartPolicy": "Always",
            "containers": [{
                "name": "spark", "image": spec.get("image") or DEFAULT_IMAGE.format(version=spec["version"]),
                "command": ["stratus", "spark", role], "env": env, "ports": ports,
                "resources": _resources(size),
                "volumeMounts": [{"name": "spark", "mountPath": "/var/lib/spark"}],
            }],
            "volumes": [{"name": "spark", "emptyDir": {}}],
        },
    }
    affinity = _affinity(name, group["name"], group.get("antiAffinity"))
    if affinity:
        pod["spec"]["affinity"] = affinity
    return pod


def master_url(master_pod: dict | None, cluster_name: str, namespace: str) -> str | None:
    """The submit address: the master's loopback endpoint when a local runner runs it, the
    master Service's DNS name on a real cluster; None while the master has no address."""
    if master_pod is None:
        return None
    annotations = (master_pod.get("metadata") or {}).get("annotations") or {}
    if PORTS_ANNOTATION in annotations:
        ep = pod_endpoint(master_pod, "spark")
        return f"spark://{ep[0]}:{ep[1]}" if ep else None
    if not (master_pod.get("status") or {}).get("podIP"):
        return None
    return f"spark://{master_service_name(cluster_name)}.{namespace}.svc:{MASTER_PORT}"


def web_ui(master_pod: dict | None) -> str | None:
    ep = pod_endpoint(master_pod, "ui") if master_pod else None
    return f"http://{ep[0]}:{ep[1]}" if ep else None


@dataclasses.dataclass
class PodPlan:
    """What to do with a group's pods: create these indices, delete these names."""

    create: list[int]
    delete: list[str]


def plan_group(existing: list[dict], count: int, master_url_now: str | None = None) -> PodPlan:
    """Pods 0..count-1 should exist; higher indices go first when scaling down. A worker whose
    master URL is stale (the master restarted on a new address) is replaced."""
    by_index = {pod_index(p["metadata"]["name"]): p for p in existing if not p["metadata"].get("deletionTimestamp")}
    delete = [p["metadata"]["name"] for i, p in sorted(by_index.items(), reverse=True) if i >= count or i < 0]
    if master_url_now is not None:
        for i, p in by_index.items():
            if 0 <= i < count and ((p["metadata"].get("annotations") or {}).get(MASTER_URL_ANNOTATION) or None) != master_url_now:
                delete.append(p["metadata"]["name"])
    stale = set(delete)
    create = [i for i in range(count) if i not in by_index or by_index[i]["metadata"]["name"] in stale]
    terminating = {pod_index(p["metadata"]["name"]) for p in existing if p["metadata"].get("deletionTimestamp")}
    return PodPlan(create=[i for i in create if i not in terminating], delete=delete)


# ---------------------------------------------------------------------------- observing


def alive_workers(master_json: dict | None) -> set[tuple[str, int]]:
    """(host, port) of the workers the master has ALIVE."""
    out = set()
    for w in (master_json or {}).get("workers") or []:
        if w.get("state") == "ALIVE":
            out.add((str(w.get("host")), int(w.get("port", 0))))
    return out


def worker_registered(pod: dict, alive: set[tuple[str, int]]) -> bool:
    ep = pod_endpoint(pod, "spark")
    return ep is not None and ep in alive


def decide_phase(*, deleting: bool, invalid: bool, stopped: bool, master_running: bool, master_answers: bool,
                 ready: dict[str, int], desired: dict[str, int], pods_running: bool, was_active: bool) -> str:
    """Sahara's cluster phases from what is observed (see the table in the tests)."""
    if deleting:
        return Phase.DELETING
    if invalid:
        return Phase.ERROR
    if stopped:
        return Phase.STOPPED
    if ready == desired and master_answers:
        return Phase.ACTIVE
    if was_active:
        return Phase.SCALING
    if not master_running or not pods_running:
        return Phase.SPAWNING
    if not master_answers:
        return Phase.CONFIGURING
    return Phase.STARTING


# ---------------------------------------------------------------------------- jobs


def app_name(namespace: str, job: str, attempt: int) -> str:
    """Deterministic, so the operator finds the application on the master by name."""
    return f"{namespace}.{job}.{attempt}"


def driver_pod_name(job: str, attempt: int) -> str:
    return f"{job}-driver-{attempt}"


def app_config_map_name(job: str) -> str:
    return f"{job}-app"


APP_MOUNT = "/opt/stratus/app"


def s3a_url(bucket_name: str, path: str = "") -> str:
    return f"s3a://{bucket_name}/{path.lstrip('/')}"


def data_sources(spec: dict, bucket_names: dict[str, str]) -> dict[str, str]:
    """Name -> s3a URL of every input and output."""
    return {d["name"]: s3a_url(bucket_names[d["bucket"]], d.get("path", "")) for d in (spec.get("inputs") or []) + (spec.get("outputs") or [])}


def substitute(args: list[str], sources: dict[str, str]) -> list[str]:
    """Sahara's data-source substitution: ``{name}`` in an argument becomes that source's URL."""
    out = []
    for a in args:
        for name, url in sources.items():
            a = a.replace("{" + name + "}", url)
        out.append(a)
    return out


def referenced_buckets(spec: dict) -> list[str]:
    names = [d["bucket"] for d in (spec.get("inputs") or []) + (spec.get("outputs") or [])]
    app = spec.get("application") or {}
    if app.get("bucket"):
        names.append(app["bucket"])
    return sorted(set(names))


def driver_pod(job: dict, attempt: int, master: str, image: str, buckets: list[dict], bucket_names: dict[str, str]) -> dict:
    """The driver Pod of one attempt. ``buckets`` are the Bound Buckets the job uses (their
    Secret and ConfigMap are referenced, never copied: credentials reach the process as env
    resolved by the kubelet, and only a 0600 properties file of the process holds them)."""
    meta, spec = job["metadata"], job["spec"]
    name, ns = meta["name"], meta["namespace"]
    app = spec["application"]
    sources = data_sources(spec, bucket_names)
    if app.get("inline"):
        resource = f"{APP_MOUNT}/{app.get('fileName') or 'main.py'}"
    else:
        resource = s3a_url(bucket_names[app["bucket"]], app["key"])
    driver, executor = spec.get("driver") or {}, spec.get("executor") or {}
    conf = dict(spec.get("conf") or {})
    conf.update({f"spark.stratus.source.{k}": v for k, v in sources.items()})
    env = [
        {"name": "STRATUS_SPARK_MASTER", "value": master},
        {"name": "STRATUS_SPARK_APP_NAME", "value": app_name(ns, name, attempt)},
        {"name": "STRATUS_SPARK_RESOURCE", "value": resource},
        {"name": "STRATUS_SPARK_MAIN_CLASS", "value": spec.get("mainClass") or ""},
        {"name": "STRATUS_SPARK_CONF", "value": json.dumps(conf, sort_keys=True)},
        {"name": "STRATUS_SPARK_DRIVER_MEMORY", "value": f"{mebibytes(driver.get('memory', '512Mi'))}m"},
        {"name": "STRATUS_SPARK_EXECUTOR_MEMORY", "value": f"{mebibytes(executor.get('memory', '512Mi'))}m"},
        {"name": "STRATUS_SPARK_EXECUTOR_CORES", "value": str(executor.get("cores", 1))},
        {"name": "STRATUS_SPARK_EXECUTORS", "value": str(executor.get("instances", 1))},
        {"name": "STRATUS_SPARK_BUCKETS", "value": str(len(buckets))},
    ]
    for i, b in enumerate(buckets):
        secret, cm = b["status"]["secretName"], b["status"]["configMapName"]
        env += [
            {"name": f"STRATUS_BUCKET_{i}_NAME", "valueFrom": {"configMapKeyRef": {"name": cm, "key": "BUCKET_NAME"}}},
            {"name": f"STRATUS_BUCKET_{i}_ENDPOINT", "valueFrom": {"configMapKeyRef": {"name": cm, "key": "AWS_ENDPOINT_URL"}}},
            {"name": f"STRATUS_BUCKET_{i}_REGION", "valueFrom": {"configMapKeyRef": {"name": cm, "key": "AWS_REGION"}}},
            {"name": f"STRATUS_BUCKET_{i}_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "AWS_ACCESS_KEY_ID"}}},
            {"name": f"STRATUS_BUCKET_{i}_SECRET_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "AWS_SECRET_ACCESS_KEY"}}},
        ]
    container = {
        "name": "driver", "image": image, "command": ["stratus", "spark", "driver", "--"],
        "args": substitute(list(spec.get("args") or []), sources), "env": env,
        "ports": [{"name": "ui", "containerPort": 4040}],
        "resources": {"requests": {"cpu": "1", "memory": f"{mebibytes(driver.get('memory', '512Mi')) + 384}Mi"}},
    }
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": driver_pod_name(name, attempt), "namespace": ns,
                     "labels": {JOB_LABEL: name, ATTEMPT_LABEL: str(attempt), ENGINE_LABEL: "spark-driver",
                                CLUSTER_LABEL: spec["clusterName"]},
                     "ownerReferences": [owner_reference(job)]},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }
    if app.get("inline"):
        container["volumeMounts"] = [{"name": "app", "mountPath": APP_MOUNT, "readOnly": True}]
        pod["spec"]["volumes"] = [{"name": "app", "configMap": {"name": app_config_map_name(name)}}]
    return pod


def app_config_map(job: dict) -> dict:
    meta, app = job["metadata"], job["spec"]["application"]
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": app_config_map_name(meta["name"]), "namespace": meta["namespace"],
                         "labels": {JOB_LABEL: meta["name"]}, "ownerReferences": [owner_reference(job)]},
            "data": {app.get("fileName") or "main.py": app["inline"]}}


def pod_exit(pod: dict) -> tuple[int | None, str]:
    """(exit code or None while running, termination message) of a pod's first container:
    from the local runner's annotations, else from the kubelet's container status."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if EXIT_ANNOTATION in annotations:
        try:
            return int(annotations[EXIT_ANNOTATION]), annotations.get(TERMINATION_ANNOTATION, "")
        except ValueError:
            return -1, ""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return int(term.get("exitCode", -1)), term.get("message") or ""
    if (pod.get("status") or {}).get("phase") == "Failed":
        return -1, ""
    return None, ""


def failure_reason(message: str) -> str:
    """The line that says why a driver failed: the last Python exception or Java exception line."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b", ln) or re.match(r"^[\w.]+(Error|Exception): ", ln):
            return ln[:1024]
    return (lines[-1] if lines else "the driver exited without a message")[:1024]


@dataclasses.dataclass
class JobDecision:
    phase: str
    create_attempt: int | None = None
    delete_pods: tuple[str, ...] = ()
    reason: str = ""
    message: str = ""


def decide_job(*, phase: str, attempts: dict[int, dict], retries: int, kill: bool, timed_out: bool,
               cluster_ready: bool) -> JobDecision:
    """The next step of a DataJob from its driver pods (attempt -> pod). A final phase stays."""
    if phase in FINAL_JOB_PHASES:
        return JobDecision(phase)
    live = [p["metadata"]["name"] for a, p in attempts.items() if pod_exit(p)[0] is None and not p["metadata"].get("deletionTimestamp")]
    if kill:
        return JobDecision(JobPhase.KILLED, delete_pods=tuple(live), reason="Killed", message="killed by the stratus.dev/kill annotation")
    if timed_out:
        return JobDecision(JobPhase.FAILED, delete_pods=tuple(live), reason="DeadlineExceeded", message="spec.timeoutSeconds passed before the job ended")
    if not attempts:
        if not cluster_ready:
            return JobDecision(JobPhase.PENDING, reason="ClusterNotReady")
        return JobDecision(JobPhase.PENDING, create_attempt=1, reason="Submitting")
    last = max(attempts)
    code, message = pod_exit(attempts[last])
    if code is None:
        return JobDecision(JobPhase.RUNNING, reason="Running")
    if code == 0:
        return JobDecision(JobPhase.SUCCEEDED, reason="Succeeded", message="the driver exited with 0")
    reason = failure_reason(message)
    if last <= retries:
        if not cluster_ready:
            return JobDecision(JobPhase.RUNNING, reason="RetryWaiting", message=reason)
        return JobDecision(JobPhase.RUNNING, create_attempt=last + 1, reason="Retrying", message=reason)
    return JobDecision(JobPhase.FAILED, reason="ApplicationFailed", message=reason)


def find_application(master_json: dict | None, name: str) -> dict | None:
    """The application of that name on the master (running first, then completed)."""
    for key in ("activeapps", "completedapps"):
        for app in (master_json or {}).get(key) or []:
            if app.get("name") == name:
                return app
    return None


def log_tail(message: str, lines: int = 20) -> str:
    return "\n".join(message.splitlines()[-lines:])[-4000:]


# ---------------------------------------------------------------------------- schedules

SCHEDULE_LABEL = "stratus.dev/datajobschedule"
SCHEDULED_TIME_ANNOTATION = "stratus.dev/scheduled-time"


def check_schedule(expression: str) -> None:
    from croniter import croniter

    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise Invalid("InvalidSchedule", f"spec.schedule {expression!r} is not a cron expression of 5 fields (minute hour day month weekday), e.g. '*/5 * * * *'")


def schedule_times(expression: str, after: float, until: float) -> tuple[float | None, float]:
    """(the latest scheduled time in (after, until] or None, the next one after until). Missed
    runs are not made up one by one: only the latest counts, as CronJob does."""
    from croniter import croniter

    it = croniter(expression, after)
    latest = None
    t = it.get_next(float)
    while t <= until:
        latest = t
        t = it.get_next(float)
    return latest, t


def run_name(schedule: str, at: float) -> str:
    """Deterministic per scheduled minute, so a run is never made twice."""
    return f"{schedule}-{int(at) // 60}"


@dataclasses.dataclass
class ScheduleDecision:
    create: str | None = None  # the run to create (for the scheduled time)
    delete: tuple[str, ...] = ()
    skipped: bool = False  # a run was due but Forbid kept it from starting


def decide_schedule(*, name: str, due: float | None, runs: list[dict], policy: str, suspend: bool,
                    keep_succeeded: int, keep_failed: int) -> ScheduleDecision:
    """What to do with a schedule's runs (DataJob dicts with metadata and status)."""
    active = [r for r in runs if (r.get("status") or {}).get("phase") not in FINAL_JOB_PHASES]
    decision = ScheduleDecision()
    delete: list[str] = []
    if due is not None and not suspend:
        wanted = run_name(name, due)
        if not any(r["metadata"]["name"] == wanted for r in runs):
            others = [r["metadata"]["name"] for r in active]
            if policy == "Forbid" and others:
                decision.skipped = True
            else:
                if policy == "Replace":
                    delete += others
                decision.create = wanted
    by_age = sorted(runs, key=lambda r: r["metadata"].get("creationTimestamp") or "", reverse=True)
    for phase_set, keep in (({JobPhase.SUCCEEDED}, keep_succeeded), ({JobPhase.FAILED, JobPhase.KILLED}, keep_failed)):
        done = [r["metadata"]["name"] for r in by_age if (r.get("status") or {}).get("phase") in phase_set]
        delete += done[keep:]
    decision.delete = tuple(dict.fromkeys(delete))
    return decision

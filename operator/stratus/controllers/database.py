"""Database: level-based, on every change and every STRATUS_DATABASE_INTERVAL seconds (3).

Each pass (one at a time per Database):
  1. parse the body; what the schema cannot refuse (a grant naming an undeclared database,
     a parameter outside the list) is Ready=False InvalidSpec naming the field;
  2. Secrets: `<db>-superuser` (generated once), one per declarative user without a
     passwordSecret (`<db>-user-<name>`), the connection Secret `<db>`;
  3. dependencies: Flavor (CPU/memory), VolumeType (storage class), backup Bucket (Bound),
     restore source (a completed DatabaseBackup, or the source's WAL up to the target);
  4. instances: PVC + Pod per instance; the first is the primary, the others stream from it;
     a primary whose engine exited is restarted on its volume (1 instance) or replaced by
     the most advanced replica (several), the old one deleted with its PVC and re-cloned;
  5. engine SQL once per spec generation and primary: databases, users, grants, parameters;
  6. status: phase, primary, version, instances, window, conditions Ready/ReplicationHealthy.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import os
import secrets as pysecrets
import threading
import time

import kopf
from kubernetes.client.rest import ApiException

from ..api.database import Database
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import database as core
from ..core.conditions import set_condition
from ..core.endpoints import pod_endpoint
from ..drivers import database as engines
from ..drivers import kube
from ..drivers import kubevirt as kv
from .status import write_status

INTERVAL = float(os.environ.get("STRATUS_DATABASE_INTERVAL", "3"))
#: An engine that exited (local: the pod runner's annotation; a cluster: pod phase Failed).
EXIT_ANNOTATION = "stratus.dev/local-exit"

_locks: dict[tuple[str, str], threading.Lock] = collections.defaultdict(threading.Lock)
_applied: dict[tuple[str, str], str] = {}
#: Last probes, read by the metrics exporter: (namespace, name) -> {pod: Probe}.
PROBES: dict[tuple[str, str], dict] = {}


class Wait(Exception):
    def __init__(self, reason: str, message: str, phase: str = "BUILD") -> None:
        super().__init__(message)
        self.reason, self.message, self.phase = reason, message, phase


# -- small reads ------------------------------------------------------------------------------


def _secret_data(namespace: str, name: str) -> dict[str, str] | None:
    return kube.secret_data(name, namespace)


def _password() -> str:
    return pysecrets.token_urlsafe(24)


def _ensure_generated(db: dict, name: str, kind: str, keys: tuple[str, ...], extra: dict | None = None) -> dict[str, str]:
    """A Secret whose listed keys are generated once and then kept."""
    ns = db["metadata"]["namespace"]
    data = _secret_data(ns, name) or {}
    want = {k: data.get(k) or _password() for k in keys}
    want.update(extra or {})
    if any(data.get(k) != v for k, v in want.items()):
        kube.apply_core(core.secret(db, name, {**data, **want}, kind))
    return want


def _failed(pod: dict) -> bool:
    ann = (pod["metadata"].get("annotations") or {})
    return (pod.get("status") or {}).get("phase") == "Failed" or EXIT_ANNOTATION in ann


def _ordinal(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _storage_class(volume_type: str | None) -> str | None:
    if volume_type:
        vt = kube.get(API_VERSION, "volumetypes", volume_type)
        if vt is None:
            raise Wait("VolumeTypeNotFound", f"spec.storage.volumeType: VolumeType {volume_type!r} does not exist; "
                                             "create it or name an existing one (kubectl get volumetypes)", "ERROR")
        return vt["spec"]["storageClassName"]
    defaults = sorted((vt for vt in kv.list_custom(API_VERSION, "volumetypes") if vt["spec"].get("default")),
                      key=lambda vt: vt["metadata"]["name"])
    return defaults[0]["spec"]["storageClassName"] if defaults else None


def _flavor(name: str | None) -> tuple[str | None, str | None]:
    if not name:
        return None, None
    fl = kube.get(API_VERSION, "flavors", name)
    if fl is None:
        raise Wait("FlavorNotFound", f"spec.flavor: Flavor {name!r} does not exist; create it or name an existing one "
                                     "(kubectl get flavors)", "ERROR")
    return str(fl["spec"]["vcpus"]), fl["spec"]["ram"]


def _bucket_target(namespace: str, bucket: str, server: str, field: str) -> core.BackupTarget:
    b = kube.get(API_VERSION, "buckets", bucket, namespace)
    if b is None:
        raise Wait("BucketNotFound", f"{field}: Bucket {bucket!r} does not exist in namespace {namespace}; "
                                     "create it (a Bucket of this project)", "ERROR")
    st = b.get("status") or {}
    if st.get("phase") != "Bound" or not st.get("bucketName"):
        raise Wait("BucketNotReady", f"{field}: Bucket {bucket!r} is not Bound yet")
    return core.BackupTarget(bucket, st["bucketName"], server)


def backups_of(namespace: str, database: str) -> list[dict]:
    return [b for b in kv.list_custom(API_VERSION, "databasebackups", namespace) if b["spec"].get("database") == database]


# -- restore ----------------------------------------------------------------------------------


def _restore_source(db: dict) -> tuple[core.RestoreSource, str]:
    ns, spec = db["metadata"]["namespace"], db["spec"]
    r = spec["restore"]
    if r.get("backup"):
        b = kube.get(API_VERSION, "databasebackups", r["backup"], ns)
        if b is None:
            raise Wait("BackupNotFound", f"spec.restore.backup: DatabaseBackup {r['backup']!r} does not exist", "ERROR")
        st = b.get("status") or {}
        if st.get("phase") != "Completed":
            raise Wait("BackupNotCompleted", f"spec.restore.backup: DatabaseBackup {r['backup']!r} is {st.get('phase') or 'Pending'}, not Completed")
        if st.get("engine") != spec["engine"]:
            raise Wait("EngineMismatch", f"spec.restore.backup: {r['backup']!r} is a {st.get('engine')} backup; spec.engine is {spec['engine']}", "ERROR")
        target = _bucket_target(ns, st["bucket"], st["serverName"], "spec.restore.backup")
        return core.RestoreSource(target, st["backupId"], None), f"DatabaseBackup {r['backup']}"
    source = r["database"]
    backups = [b for b in backups_of(ns, source) if (b.get("status") or {}).get("phase") == "Completed"]
    statuses = [b["status"] for b in backups]
    last_archived = None
    src = kube.get(API_VERSION, "databases", source, ns)
    if src is not None and r.get("targetTime"):
        last_archived = _flush_wal(src, r["targetTime"])
    window = core.recoverable_window(statuses, last_archived)
    target_time = r.get("targetTime")
    if target_time:
        problem = core.target_problem(window, target_time)
        if problem:
            raise Wait("TargetOutsideWindow", problem, "ERROR")
        base = core.backup_for_target(statuses, target_time)
    else:
        if not statuses:
            raise Wait("NoBackup", f"spec.restore.database: Database {source!r} has no completed DatabaseBackup; take one first", "ERROR")
        base = max(statuses, key=lambda s: s["endTime"])
    target = _bucket_target(ns, base["bucket"], base["serverName"], "spec.restore.database")
    return core.RestoreSource(target, base["backupId"], target_time), f"Database {source} at {target_time or 'latest'}"


def _flush_wal(src: dict, target_time: str) -> str | None:
    """Make the source archive the WAL that covers ``target_time``: commit a transaction
    (recovery stops at the first commit after the target, so one must exist), switch to a
    new segment and wait (up to 60 s) until the archiver has shipped it. Returns the last
    archive time."""
    ns, name = src["metadata"]["namespace"], src["metadata"]["name"]
    primary = _primary_pod(kube.list_pods(ns, f"{core.LABEL}={name}"))
    if primary is None:
        return None
    ep = pod_endpoint(primary, core.ENGINES["postgresql"].port_name)
    pw = (_secret_data(ns, core.superuser_secret_name(name)) or {}).get("password", "")
    if ep is None:
        return None
    try:
        wal = engines.pg_switch_wal(*ep, pw)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            archived = engines.pg_archived_wal(*ep, pw)
            if archived and archived >= wal:
                break
            time.sleep(0.5)
        return engines.pg_probe(*ep, pw).last_archived
    except Exception:  # noqa: BLE001 - the source may be gone; its backups still count
        return None


# -- instances -------------------------------------------------------------------------------


def _primary_pod(pods: list[dict]) -> dict | None:
    for p in pods:
        if (p["metadata"].get("labels") or {}).get(core.ROLE_LABEL) == "primary" and not p["metadata"].get("deletionTimestamp"):
            return p
    return None


def _relabel(pod: dict, role: str) -> None:
    kube.core().patch_namespaced_pod(pod["metadata"]["name"], pod["metadata"]["namespace"],
                                     {"metadata": {"labels": {core.ROLE_LABEL: role}}})


def _delete_instance(namespace: str, name: str) -> None:
    """An instance's Pod and its PVC (a replaced primary, a failed or surplus replica)."""
    kube.delete("v1", "pods", name, namespace, grace_period=0, propagation="Background")
    kube.delete("v1", "persistentvolumeclaims", name, namespace, propagation="Background")


def _probe(engine: str, pod: dict, password: str) -> engines.Probe:
    ep = pod_endpoint(pod, core.ENGINES[engine].port_name)
    if ep is None:
        return engines.Probe(False, error="NoAddress")
    return (engines.pg_probe if engine == "postgresql" else engines.my_probe)(*ep, password)


def sync(db: dict, logger) -> dict:
    meta, spec = db["metadata"], db["spec"]
    ns, name = meta["namespace"], meta["name"]
    engine = core.ENGINES[spec["engine"]]
    generation = meta.get("generation", 0)
    old = db.get("status") or {}
    status: dict = {"observedGeneration": generation, "serverName": core.server_name(db),
                    "serviceName": name, "secretName": name}
    conditions = old.get("conditions") or []

    problems = core.parameter_problems(engine.name, core.parameters_of(spec)) + core.grant_problems(spec)
    if problems:
        raise Wait("InvalidSpec", "; ".join(problems), "ERROR")

    su = _ensure_generated(db, core.superuser_secret_name(name), "superuser", ("password", "replicationPassword"))
    passwords: dict[str, str] = {}
    for u in spec.get("users") or []:
        ref = u.get("passwordSecret")
        if ref:
            data = _secret_data(ns, ref["name"]) or {}
            if not data.get(ref.get("key", "password")):
                raise Wait("PasswordSecretNotFound", f"spec.users[{u['name']}].passwordSecret: Secret {ref['name']!r} "
                                                     f"with key {ref.get('key', 'password')!r} does not exist; create it", "ERROR")
            passwords[u["name"]] = data[ref.get("key", "password")]
        else:
            passwords[u["name"]] = _ensure_generated(db, core.user_secret_name(name, u["name"]), "user", ("password",))["password"]

    cpu, memory = _flavor(spec.get("flavor"))
    storage_class = _storage_class((spec.get("storage") or {}).get("volumeType"))
    archive = _bucket_target(ns, spec["backup"]["bucket"], core.server_name(db), "spec.backup.bucket") if spec.get("backup") else None

    kube.apply_core(core.service(db))
    every_pod = kube.list_pods(ns, f"{core.LABEL}={name}")
    pods = [p for p in every_pod if not p["metadata"].get("deletionTimestamp")]
    primary = _primary_pod(pods)
    restoring = bool(spec.get("restore")) and not old.get("restoredFrom")

    # 4a. the primary when no instance runs: on the volume that holds the data, else a new
    #     volume (initialised, or restored)
    if primary is None and not pods:
        if every_pod:
            raise Wait("Restarting", "waiting for the previous instance's Pod to go")
        claims = sorted((c for c in _claims(ns, name) if not c["metadata"].get("deletionTimestamp")),
                        key=lambda c: _ordinal(c["metadata"]["name"]))
        restore = None
        if spec.get("restore") and not old.get("restoredFrom"):  # (again, if a restore attempt died)
            restore, label = _restore_source(db)
            logger.info("restoring %s/%s from %s", ns, name, label)
        if claims:
            ordinal = _ordinal(claims[0]["metadata"]["name"])
        else:
            ordinal = 1 + max([_ordinal(c["metadata"]["name"]) for c in _claims(ns, name)] or [0])
            kube.apply_core(core.claim(db, ordinal, storage_class))
        pod = core.instance_pod(db, ordinal, "primary", cpu=cpu, memory=memory, archive=archive, restore=restore)
        kube.apply_core(pod)
        pods = [pod]
        primary = pod

    probes = {p["metadata"]["name"]: _probe(engine.name, p, su["password"]) if not _failed(p) else engines.Probe(False, error="Exited")
              for p in pods}
    PROBES[(ns, name)] = probes

    # 4b. a primary whose engine exited (or that is gone while replicas remain)
    if primary is None or _failed(primary):
        replicas = [p for p in pods if p is not primary and probes[p["metadata"]["name"]].ready]
        if engine.name == "postgresql" and replicas:
            best = max(replicas, key=lambda p: probes[p["metadata"]["name"]].lsn or 0)
            ep = pod_endpoint(best, engine.port_name)
            old_name = primary["metadata"]["name"] if primary else "(none)"
            logger.warning("primary %s exited; promoting %s", old_name, best["metadata"]["name"])
            engines.pg_promote(*ep, su["password"])
            _relabel(best, "primary")
            if primary is not None:
                _delete_instance(ns, old_name)
            kopf.event(db, type="Warning", reason="Failover", message=f"primary {old_name} exited; {best['metadata']['name']} promoted")
            _applied.pop((ns, name), None)
            raise Wait("FailingOver", f"{best['metadata']['name']} promoted; the old primary is re-cloned as a replica")
        if primary is None:
            raise Wait("NoPrimary", "no primary and no replica ready to promote; waiting for one")
        # one instance (or no replica ready): restart it on its own volume
        logger.warning("primary %s exited; restarting it", primary["metadata"]["name"])
        kube.core().delete_namespaced_pod(primary["metadata"]["name"], ns, grace_period_seconds=0)
        raise Wait("Restarting", f"the engine of {primary['metadata']['name']} exited; restarting it on its volume")

    pprobe = probes.get(primary["metadata"]["name"]) if primary else None
    primary_ready = bool(pprobe and pprobe.ready and not pprobe.in_recovery)
    if primary_ready and spec.get("restore") and not old.get("restoredFrom"):
        status["restoredFrom"] = _describe_restore(spec["restore"])
        restoring = False

    # 4c. replicas: create missing ones from a ready primary; re-point the others
    live = [p for p in pods if not _failed(p)]
    if primary_ready and engine.name == "postgresql":
        pep = pod_endpoint(primary, engine.port_name)
        for p in live:
            if p is primary or not probes[p["metadata"]["name"]].ready:
                continue
            try:
                engines.pg_follow(*pod_endpoint(p, engine.port_name), su["password"], pep, p["metadata"]["name"])
            except Exception as exc:  # noqa: BLE001
                logger.warning("could not re-point %s: %s", p["metadata"]["name"], type(exc).__name__)
        for p in pods:
            if p is not primary and _failed(p):
                _delete_instance(ns, p["metadata"]["name"])
        missing = spec.get("instances", 1) - len(live)
        if missing > 0:
            ordinal = 1 + max([_ordinal(c["metadata"]["name"]) for c in _claims(ns, name)] + [_ordinal(p["metadata"]["name"]) for p in pods] or [0])
            kube.apply_core(core.claim(db, ordinal, storage_class))
            kube.apply_core(core.instance_pod(db, ordinal, "replica", cpu=cpu, memory=memory, archive=archive, primary=pep))
        for p in sorted(live, key=lambda p: _ordinal(p["metadata"]["name"]), reverse=True)[:max(0, -missing)]:
            if p is not primary:
                _delete_instance(ns, p["metadata"]["name"])

    # 5. engine SQL
    if primary_ready:
        pep = pod_endpoint(primary, engine.port_name)
        key = hashlib.sha256(repr((generation, primary["metadata"]["uid"] if "uid" in primary["metadata"] else primary["metadata"]["name"],
                                   sorted(passwords.items()))).encode()).hexdigest()
        if _applied.get((ns, name)) != key:
            plans = core.user_plans(spec)
            dbs = [d["name"] for d in spec.get("databases") or []]
            params = core.parameters_of(spec)
            if engine.name == "postgresql":
                engines.pg_ensure(*pep, su["password"], dbs, plans, passwords, params)
            else:
                engines.my_ensure(*pep, su["password"], dbs, plans, passwords, params,
                                  {p for p in params if engine.parameters.get(p)})
            _applied[(ns, name)] = key
        # connection Secrets: the primary's address as the operator reaches it
        host, port = pep
        if not (primary["metadata"].get("annotations") or {}).get("stratus.dev/local-ports"):
            host, port = f"{name}.{ns}.svc", engine.port
        _write_connection(db, engine.superuser, su["password"], host, port, "")
        for u in spec.get("users") or []:
            if not u.get("passwordSecret"):
                first = (u.get("grants") or [{}])[0].get("database", "")
                _write_connection(db, u["name"], passwords[u["name"]], host, port, first,
                                  secret_name=core.user_secret_name(name, u["name"]))

    # 6. status
    status["primary"] = primary["metadata"]["name"] if primary else ""
    status["engineVersion"] = pprobe.version if pprobe and pprobe.version else old.get("engineVersion", "")
    status["instances"] = [{"name": p["metadata"]["name"], "role": (p["metadata"].get("labels") or {}).get(core.ROLE_LABEL, ""),
                            "ready": probes[p["metadata"]["name"]].ready,
                            **({"lagBytes": _lag(pprobe, p)} if p is not primary and pprobe and _lag(pprobe, p) is not None else {})}
                           for p in sorted(pods, key=lambda p: _ordinal(p["metadata"]["name"]))]
    mine = [b.get("status") or {} for b in backups_of(ns, name)]
    done = sorted((b for b in mine if b.get("phase") == "Completed" and b.get("serverName") == core.server_name(db)),
                  key=lambda b: b.get("endTime", ""))
    if done:
        last = [b for b in backups_of(ns, name) if (b.get("status") or {}).get("endTime") == done[-1].get("endTime")]
        status["lastBackup"] = last[0]["metadata"]["name"] if last else ""
        status["lastBackupTime"] = done[-1].get("endTime", "")
    window = core.recoverable_window(done, pprobe.last_archived if pprobe else None) if engine.name == "postgresql" else (
        (done[0]["endTime"], done[-1]["endTime"]) if done else None)
    if window:
        status["recoverableWindow"] = {"earliest": window[0], "latest": window[1]}
    backing_up = any(b.get("phase") == "Running" for b in mine)
    status["phase"] = core.phase(invalid=False, primary_ready=primary_ready, restoring=restoring,
                                 backing_up=backing_up, failed=False)
    if primary_ready:
        pending = pprobe.pending_restart if pprobe else []
        msg = f"{engine.name} {status['engineVersion']} accepting connections on {status['primary']}"
        if pending:
            msg += f"; parameters waiting for a restart: {', '.join(pending)}"
        conditions = set_condition(conditions, "Ready", True, "ParametersPendingRestart" if pending else "Accepting", msg, generation)
    else:
        why = pprobe.error if pprobe else "no primary yet"
        conditions = set_condition(conditions, "Ready", False, "Restoring" if restoring else "Starting",
                                   f"waiting for the primary to accept connections ({why})", generation)
    want = spec.get("instances", 1)
    streaming = [r for r in (pprobe.replicas if pprobe else []) if r.get("state") == "streaming"]
    if want == 1:
        conditions = set_condition(conditions, "ReplicationHealthy", True, "SingleInstance", "one instance, nothing to replicate", generation)
    elif len(streaming) >= want - 1:
        conditions = set_condition(conditions, "ReplicationHealthy", True, "Streaming", f"{len(streaming)} replica(s) streaming", generation)
    else:
        conditions = set_condition(conditions, "ReplicationHealthy", False, "ReplicasMissing",
                                   f"{len(streaming)} of {want - 1} replica(s) streaming", generation)
    if primary_ready and (spec.get("backup") or {}).get("schedule"):
        _scheduled_backups(db, logger)
    status["conditions"] = conditions
    return status


SCHEDULED_LABEL = "stratus.dev/scheduled"


def _scheduled_backups(db: dict, logger) -> None:
    """Owe a DatabaseBackup for the latest slot of spec.backup.schedule; prune beyond
    spec.backup.retention. Names are derived from the slot, so a repeat is a no-op."""
    meta, backup = db["metadata"], db["spec"]["backup"]
    ns, name = meta["namespace"], meta["name"]
    problem = core.schedule_problem(backup["schedule"])
    if problem:
        raise Wait("InvalidSchedule", problem, "ERROR")
    now = datetime.datetime.now(datetime.timezone.utc)
    slot = core.due_slot(backup["schedule"], now, core.parse_time(meta["creationTimestamp"]))
    if slot is not None:
        bname = core.scheduled_backup_name(name, slot)
        if kube.get(API_VERSION, "databasebackups", bname, ns) is None:
            try:
                kube.custom().create_namespaced_custom_object(GROUP, VERSION, ns, "databasebackups", {
                    "apiVersion": API_VERSION, "kind": "DatabaseBackup",
                    "metadata": {"name": bname, "labels": {core.LABEL: name, SCHEDULED_LABEL: "true"}},
                    "spec": {"database": name}})
                logger.info("scheduled backup %s/%s", ns, bname)
            except ApiException as exc:
                if exc.status != 409:
                    raise
    if backup.get("retention"):
        mine = kv.list_custom(API_VERSION, "databasebackups", ns, label_selector=f"{core.LABEL}={name},{SCHEDULED_LABEL}=true")
        for old in core.backups_to_prune(mine, backup["retention"]):
            logger.info("retention %s: deleting backup %s/%s", backup["retention"], ns, old)
            kube.delete(API_VERSION, "databasebackups", old, ns)


def _lag(pprobe, pod) -> int | None:
    for r in pprobe.replicas:
        if r["name"] == pod["metadata"]["name"]:
            return r["lagBytes"]
    return None


def _describe_restore(r: dict) -> str:
    if r.get("backup"):
        return f"DatabaseBackup {r['backup']}"
    return f"Database {r['database']} at {r.get('targetTime') or 'latest'}"


def _claims(namespace: str, name: str) -> list[dict]:
    out = kube.core().list_namespaced_persistent_volume_claim(namespace, label_selector=f"{core.LABEL}={name}")
    return [kube.api_client().sanitize_for_serialization(c) for c in out.items]


def _write_connection(db: dict, user: str, password: str, host: str, port: int, database: str, secret_name: str | None = None) -> None:
    name = secret_name or db["metadata"]["name"]
    data = core.connection_data(db["spec"]["engine"], user, password, host, port, database)
    current = _secret_data(db["metadata"]["namespace"], name) or {}
    if any(current.get(k) != v for k, v in data.items()):
        kube.apply_core(core.secret(db, name, {**current, **data}, "connection" if secret_name is None else "user"))


# -- handlers ----------------------------------------------------------------------------------


def reconcile(namespace: str, name: str, logger) -> str:
    with _locks[(namespace, name)]:
        body = kube.get(API_VERSION, "databases", name, namespace)
        if body is None or body["metadata"].get("deletionTimestamp"):
            _applied.pop((namespace, name), None)
            PROBES.pop((namespace, name), None)
            return "gone"
        Database.model_validate(body)
        try:
            status = sync(body, logger)
        except Wait as w:
            old = body.get("status") or {}
            status = {"observedGeneration": body["metadata"].get("generation", 0), "phase": w.phase if w.phase == "ERROR" else (old.get("phase") or "BUILD"),
                      "conditions": set_condition(old.get("conditions"), "Ready", False, w.reason, w.message,
                                                  body["metadata"].get("generation", 0))}
            if w.phase != "ERROR" and old.get("phase") not in (None, "", "ERROR"):
                status["phase"] = old["phase"] if old["phase"] != "ACTIVE" else "BUILD"
        write_status(body, "databases", status, error_phase="ERROR", events_on_reason=True)
        return status.get("phase", "")


@kopf.on.create(GROUP, VERSION, "databases")
@kopf.on.update(GROUP, VERSION, "databases", field="spec")
@kopf.on.resume(GROUP, VERSION, "databases")
def database_changed(namespace, name, logger, **_) -> None:
    reconcile(namespace, name, logger)


@kopf.timer(GROUP, VERSION, "databases", interval=INTERVAL, initial_delay=INTERVAL)
def database_tick(namespace, name, logger, **_) -> None:
    reconcile(namespace, name, logger)

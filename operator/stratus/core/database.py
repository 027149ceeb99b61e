"""Databases (Trove): the engine catalog, parameter rules, the desired children of a
Database (PVCs, Pods, Service, Secrets), the recoverable window and the phase. Pure: no I/O.

A Database runs as Pods the operator manages itself (CloudNativePG's design, not a
StatefulSet): instance ``n`` is the Pod ``<db>-<n>`` on the PVC ``<db>-<n>``, and its one
container runs the instance manager (``stratus instance <engine>``, stratus.instance) that
initialises the data directory, clones a replica from the primary, restores from a backup,
then supervises the engine and answers the operator on a small control port. The label
``stratus.dev/role`` (primary/replica) is what the Service selects, so a failover moves the
Service by relabelling.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json

from .compute import owner_reference

LABEL = "stratus.dev/database"
ROLE_LABEL = "stratus.dev/role"
INSTANCE_LABEL = "stratus.dev/instance"
ENGINE_LABEL = "stratus.dev/engine"
DATA_PATH = "/var/lib/stratus/data"
CONTROL_PORT = 8000
#: What an instance requests when the Database names no Flavor.
DEFAULT_REQUESTS = {"cpu": "100m", "memory": "256Mi"}
#: Where barman-cloud keeps a PostgreSQL server's base backups and WAL inside a Bucket.
BACKUP_PREFIX = "stratus-databases"


@dataclasses.dataclass(frozen=True)
class Engine:
    name: str
    versions: tuple[str, ...]
    default_version: str
    port: int
    port_name: str
    superuser: str
    #: Parameters a user may set -> True when a change needs a restart.
    parameters: dict[str, bool]
    #: Parameters Stratus itself manages (refused with that reason).
    managed: frozenset[str]


POSTGRESQL_PARAMETERS = {
    # restart needed (context postmaster)
    "max_connections": True, "shared_buffers": True, "max_worker_processes": True, "max_wal_senders": True,
    "max_replication_slots": True, "max_prepared_transactions": True, "max_locks_per_transaction": True,
    "huge_pages": True, "shared_preload_libraries": True, "wal_buffers": True, "max_parallel_workers": False,
    # reload or per session (contexts sighup, superuser, user)
    "work_mem": False, "maintenance_work_mem": False, "effective_cache_size": False, "random_page_cost": False,
    "seq_page_cost": False, "effective_io_concurrency": False, "default_statistics_target": False,
    "checkpoint_timeout": False, "checkpoint_completion_target": False, "max_wal_size": False, "min_wal_size": False,
    "wal_compression": False, "synchronous_commit": False, "statement_timeout": False,
    "lock_timeout": False, "idle_in_transaction_session_timeout": False, "deadlock_timeout": False,
    "log_min_duration_statement": False, "log_statement": False, "log_connections": False, "log_disconnections": False,
    "log_lock_waits": False, "log_temp_files": False, "log_checkpoints": False, "log_autovacuum_min_duration": False,
    "autovacuum": False, "autovacuum_naptime": False, "autovacuum_vacuum_scale_factor": False,
    "autovacuum_analyze_scale_factor": False, "autovacuum_max_workers": True, "default_transaction_isolation": False,
    "timezone": False, "datestyle": False, "client_encoding": False, "search_path": False,
    "max_parallel_workers_per_gather": False, "temp_buffers": False, "jit": False, "track_io_timing": False,
    "archive_timeout": False, "wal_keep_size": False, "hot_standby_feedback": False, "tcp_keepalives_idle": False,
}
POSTGRESQL_MANAGED = frozenset({
    "port", "listen_addresses", "data_directory", "hba_file", "ident_file", "config_file", "archive_mode",
    "archive_command", "restore_command", "primary_conninfo", "primary_slot_name", "wal_level", "hot_standby",
    "unix_socket_directories", "ssl", "recovery_target_time", "cluster_name",
})
MARIADB_PARAMETERS = {
    "max_connections": False, "innodb_buffer_pool_size": False, "innodb_log_file_size": True,
    "innodb_flush_log_at_trx_commit": False, "innodb_file_per_table": False, "innodb_io_capacity": False,
    "innodb_lock_wait_timeout": False, "sync_binlog": False, "binlog_format": False, "expire_logs_days": False,
    "wait_timeout": False, "interactive_timeout": False, "max_allowed_packet": False, "sort_buffer_size": False,
    "join_buffer_size": False, "tmp_table_size": False, "max_heap_table_size": False, "table_open_cache": False,
    "thread_cache_size": False, "long_query_time": False, "slow_query_log": False, "sql_mode": False,
    "character_set_server": False, "collation_server": False, "time_zone": False, "transaction_isolation": False,
    "lower_case_table_names": True, "performance_schema": True, "query_cache_size": False, "query_cache_type": False,
}
MARIADB_MANAGED = frozenset({"port", "bind_address", "datadir", "socket", "user", "log_bin", "server_id", "skip_networking"})

ENGINES: dict[str, Engine] = {
    "postgresql": Engine("postgresql", ("15",), "15", 5432, "postgresql", "postgres", POSTGRESQL_PARAMETERS, POSTGRESQL_MANAGED),
    "mariadb": Engine("mariadb", ("10.11",), "10.11", 3306, "mysql", "root", MARIADB_PARAMETERS, MARIADB_MANAGED),
}


def engine_catalog() -> list[dict]:
    """What the operator publishes (the Catalog's status): engines, versions, default."""
    return [{"engine": e.name, "versions": list(e.versions), "defaultVersion": e.default_version,
             "port": e.port, "parameters": sorted(e.parameters)} for e in ENGINES.values()]


def parameters_of(spec: dict) -> dict[str, str]:
    """spec.parameters (a list of name/value) as a mapping."""
    return {p["name"]: p["value"] for p in spec.get("parameters") or []}


def version_of(spec: dict) -> str:
    engine = ENGINES[spec["engine"]]
    return spec.get("version") or engine.default_version


# -- validation the API server cannot do -----------------------------------------------------


def parameter_problems(engine_name: str, parameters: dict[str, str]) -> list[str]:
    """Messages naming each parameter the engine refuses (unknown, managed)."""
    engine = ENGINES[engine_name]
    out = []
    for name in sorted(parameters or {}):
        key = name.lower()
        if key in engine.managed:
            out.append(f"spec.parameters.{name} is managed by Stratus and cannot be set")
        elif key not in engine.parameters:
            out.append(f"spec.parameters.{name} is not a settable {engine_name} parameter; "
                       f"see the Catalog's databaseEngines for the list")
    return out


def restart_parameters(engine_name: str, changed: dict[str, str]) -> list[str]:
    engine = ENGINES[engine_name]
    return sorted(n for n in changed if engine.parameters.get(n.lower()))


def sql_identifier_ok(name: str) -> bool:
    """Database and user names: letters, digits and underscore, starting with a letter (also
    enforced by the schema); quoted anyway by the drivers."""
    return bool(name) and name[0].isalpha() and all(c.isalnum() or c == "_" for c in name) and len(name) <= 63


# -- names ------------------------------------------------------------------------------------


def instance_name(db: str, ordinal: int) -> str:
    return f"{db}-{ordinal}"


def superuser_secret_name(db: str) -> str:
    return f"{db}-superuser"


def user_secret_name(db: str, user: str) -> str:
    return f"{db}-user-{user.replace('_', '-').lower()}"


def server_name(db: dict) -> str:
    """The name a Database's WAL and base backups carry inside its Bucket: unique per
    object (a re-created Database of the same name gets a new one)."""
    meta = db["metadata"]
    return f"{meta['namespace']}.{meta['name']}.{meta['uid'][:8]}"


# -- children ---------------------------------------------------------------------------------


def _labels(db: dict, ordinal: int | None = None, role: str | None = None) -> dict:
    labels = {LABEL: db["metadata"]["name"], ENGINE_LABEL: db["spec"]["engine"]}
    if ordinal is not None:
        labels[INSTANCE_LABEL] = instance_name(db["metadata"]["name"], ordinal)
    if role:
        labels[ROLE_LABEL] = role
    return labels


def claim(db: dict, ordinal: int, storage_class: str | None) -> dict:
    meta = db["metadata"]
    spec: dict = {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                  "resources": {"requests": {"storage": db["spec"]["storage"]["size"]}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": instance_name(meta["name"], ordinal), "namespace": meta["namespace"],
                         "labels": _labels(db, ordinal), "ownerReferences": [owner_reference(db)]},
            "spec": spec}


@dataclasses.dataclass
class BackupTarget:
    """Where WAL and backups go (or come from): a Bucket's Secret and ConfigMap."""

    bucket: str          # the Bucket object (its Secret and ConfigMap have this name)
    bucket_name: str     # the S3 bucket
    server: str          # the server name inside it


def _bucket_env(prefix: str, target: BackupTarget) -> list[dict]:
    def cm(key):
        return {"configMapKeyRef": {"name": target.bucket, "key": key}}

    def sec(key):
        return {"secretKeyRef": {"name": target.bucket, "key": key}}

    return [
        {"name": f"{prefix}_ENDPOINT", "valueFrom": cm("AWS_ENDPOINT_URL")},
        {"name": f"{prefix}_REGION", "valueFrom": cm("AWS_REGION")},
        {"name": f"{prefix}_ACCESS_KEY_ID", "valueFrom": sec("AWS_ACCESS_KEY_ID")},
        {"name": f"{prefix}_SECRET_ACCESS_KEY", "valueFrom": sec("AWS_SECRET_ACCESS_KEY")},
        {"name": f"{prefix}_DESTINATION", "value": f"s3://{target.bucket_name}/{BACKUP_PREFIX}"},
        {"name": f"{prefix}_SERVER", "value": target.server},
    ]


@dataclasses.dataclass
class RestoreSource:
    target: BackupTarget
    backup_id: str              # the engine tool's backup id
    target_time: str | None     # RFC 3339, PostgreSQL PITR


def instance_pod(db: dict, ordinal: int, role: str, *, cpu: str | None, memory: str | None,
                 archive: BackupTarget | None, restore: RestoreSource | None = None,
                 primary: tuple[str, int] | None = None) -> dict:
    """The Pod of one instance. ``primary`` (host, port) makes it a streaming replica cloned
    from there; ``restore`` makes the first instance start from a backup."""
    meta, spec = db["metadata"], db["spec"]
    engine = ENGINES[spec["engine"]]
    name = instance_name(meta["name"], ordinal)
    args = ["instance", engine.name, "--data", DATA_PATH, "--port", str(engine.port),
            "--control-port", str(CONTROL_PORT), "--version", version_of(spec)]
    for key, value in sorted(parameters_of(spec).items()):
        args += ["--set", f"{key}={value}"]
    env = [
        {"name": "STRATUS_SUPERUSER_PASSWORD",
         "valueFrom": {"secretKeyRef": {"name": superuser_secret_name(meta["name"]), "key": "password"}}},
        {"name": "STRATUS_REPLICATION_PASSWORD",
         "valueFrom": {"secretKeyRef": {"name": superuser_secret_name(meta["name"]), "key": "replicationPassword"}}},
        {"name": "STRATUS_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if archive:
        env += _bucket_env("STRATUS_ARCHIVE", archive)
    if restore and role == "primary":
        env += _bucket_env("STRATUS_RESTORE", restore.target)
        env.append({"name": "STRATUS_RESTORE_BACKUP_ID", "value": restore.backup_id})
        if restore.target_time:
            env.append({"name": "STRATUS_RESTORE_TARGET_TIME", "value": restore.target_time})
    if primary:
        args += ["--primary", f"{primary[0]}:{primary[1]}"]
    if cpu or memory:
        req = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
        resources = {"requests": req, "limits": dict(req)}
    else:  # no flavor: a small request, so a project's CPU/memory quota admits (and counts) the Pod
        resources = {"requests": dict(DEFAULT_REQUESTS)}
    container = {
        "name": engine.name, "image": f"stratus/{engine.name}:{version_of(spec)}",
        "command": ["stratus"], "args": args, "env": env,
        "ports": [{"name": engine.port_name, "containerPort": engine.port},
                  {"name": "control", "containerPort": CONTROL_PORT}],
        "volumeMounts": [{"name": "data", "mountPath": DATA_PATH}],
        "resources": resources,
    }
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": _labels(db, ordinal, role),
                     "annotations": {"stratus.dev/spec-hash": pod_hash(args, env)},
                     "ownerReferences": [owner_reference(db)]},
        "spec": {
            "containers": [container], "restartPolicy": "Never", "hostname": name,
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": name}}],
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 30,
        },
    }


def pod_hash(args: list, env: list) -> str:
    return hashlib.sha256(json.dumps([args, env], sort_keys=True).encode()).hexdigest()[:16]


def service(db: dict) -> dict:
    """The Service named like the Database, selecting the current primary."""
    meta = db["metadata"]
    engine = ENGINES[db["spec"]["engine"]]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": _labels(db),
                     "ownerReferences": [owner_reference(db)]},
        "spec": {"selector": {LABEL: meta["name"], ROLE_LABEL: "primary"},
                 "ports": [{"name": engine.port_name, "port": engine.port, "targetPort": engine.port_name}]},
    }


def uri(engine_name: str, user: str, password: str, host: str, port: int, database: str = "") -> str:
    from urllib.parse import quote

    scheme = "postgresql" if engine_name == "postgresql" else "mysql"
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(database, safe='')}"


def connection_data(engine_name: str, user: str, password: str, host: str, port: int, database: str = "") -> dict:
    data = {"host": host, "port": str(port), "user": user, "username": user, "password": password,
            "uri": uri(engine_name, user, password, host, port, database), "engine": engine_name}
    if database:
        data["database"] = database
    return data


def secret(db: dict, name: str, data: dict, kind: str) -> dict:
    meta = db["metadata"]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": meta["namespace"],
                         "labels": {**_labels(db), "stratus.dev/secret": kind},
                         "ownerReferences": [owner_reference(db)]},
            "stringData": data}


# -- declarative users and databases ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Grant:
    database: str
    privileges: str   # ReadWrite | ReadOnly


@dataclasses.dataclass(frozen=True)
class UserPlan:
    name: str
    grants: tuple[Grant, ...]


def user_plans(spec: dict) -> list[UserPlan]:
    return [UserPlan(u["name"], tuple(Grant(g["database"], g.get("privileges", "ReadWrite")) for g in u.get("grants") or []))
            for u in spec.get("users") or []]


def grant_problems(spec: dict) -> list[str]:
    dbs = {d["name"] for d in spec.get("databases") or []}
    out = []
    for i, u in enumerate(spec.get("users") or []):
        for g in u.get("grants") or []:
            if g["database"] not in dbs:
                out.append(f"spec.users[{i}].grants names database {g['database']!r}, which is not in spec.databases; add it there")
    return out


# -- backups, the recoverable window, restore --------------------------------------------------


def parse_time(s: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


def format_time(t: datetime.datetime) -> str:
    return t.astimezone(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def recoverable_window(backups: list[dict], last_archived: str | None) -> tuple[str, str] | None:
    """(earliest, latest) a Database can be restored to: from the end of its oldest
    successful backup to the last WAL archived (or the newest backup's end when nothing was
    archived since). ``backups`` are DatabaseBackup statuses."""
    ends = sorted(parse_time(b["endTime"]) for b in backups if b.get("phase") == "Completed" and b.get("endTime"))
    if not ends:
        return None
    latest = ends[-1]
    if last_archived:
        latest = max(latest, parse_time(last_archived))
    return format_time(ends[0]), format_time(latest)


def backup_for_target(backups: list[dict], target: str) -> dict | None:
    """The newest completed backup that ended at or before ``target`` (its base for PITR)."""
    t = parse_time(target)
    done = [b for b in backups if b.get("phase") == "Completed" and b.get("endTime") and parse_time(b["endTime"]) <= t]
    return max(done, key=lambda b: parse_time(b["endTime"])) if done else None


def target_problem(window: tuple[str, str] | None, target: str) -> str | None:
    if window is None:
        return "spec.restore.targetTime: the source has no completed backup yet; take a DatabaseBackup first"
    t = parse_time(target)
    if t < parse_time(window[0]) or t > parse_time(window[1]):
        return (f"spec.restore.targetTime {target} is outside the recoverable window "
                f"{window[0]} .. {window[1]}; pick a time inside it")
    return None


# -- scheduled backups ------------------------------------------------------------------------


def schedule_problem(expr: str) -> str | None:
    from croniter import croniter

    if not croniter.is_valid(expr):
        return f"spec.backup.schedule {expr!r} is not a cron expression; write five fields (minute hour day month weekday)"
    return None


def due_slot(expr: str, now: datetime.datetime, since: datetime.datetime) -> datetime.datetime | None:
    """The latest scheduled time at or before ``now``, if it is after ``since`` (the
    Database's creation): the slot a scheduled backup is owed for."""
    from croniter import croniter

    slot = croniter(expr, now + datetime.timedelta(microseconds=1)).get_prev(datetime.datetime)
    return slot if slot > since else None


def scheduled_backup_name(db: str, slot: datetime.datetime) -> str:
    return f"{db}-{slot.astimezone(datetime.timezone.utc):%Y%m%d%H%M%S}"


def backups_to_prune(backups: list[dict], retention: int) -> list[str]:
    """Names of scheduled DatabaseBackups beyond ``retention`` completed ones (oldest first
    go); running ones are never pruned, failed ones go once a newer one completed."""
    done = sorted((b for b in backups if (b.get("status") or {}).get("phase") == "Completed"),
                  key=lambda b: b["status"].get("endTime", ""), reverse=True)
    keep = done[:retention]
    newest_kept = keep[-1]["status"].get("endTime", "") if len(keep) == retention else ""
    out = [b["metadata"]["name"] for b in done[retention:]]
    if newest_kept:
        out += [b["metadata"]["name"] for b in backups if (b.get("status") or {}).get("phase") == "Failed"
                and b["metadata"].get("creationTimestamp", "") < newest_kept]
    return sorted(out)


# -- phase -------------------------------------------------------------------------------------


def phase(*, invalid: bool, primary_ready: bool, restoring: bool, backing_up: bool, failed: bool) -> str:
    """Trove's instance states from what the operator observed."""
    if invalid or failed:
        return "ERROR"
    if restoring and not primary_ready:
        return "RESTORE"
    if not primary_ready:
        return "BUILD"
    if backing_up:
        return "BACKUP"
    return "ACTIVE"

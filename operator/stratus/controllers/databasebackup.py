"""DatabaseBackup: ask the primary's instance manager to take a backup into the Database's
Bucket, poll it, record what it reports. Idempotent: the backup's id is derived from the
object (name + uid), so a repeated request (after an operator restart) finds the same
backup, and an instance manager that restarted mid-backup gets the request again.
"""

from __future__ import annotations

import os

import kopf

from ..api.databasebackup import DatabaseBackup
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import database as core
from ..core.conditions import set_condition
from ..core.endpoints import pod_endpoint
from ..drivers import database as engines
from ..drivers import kube
from .database import _primary_pod
from .status import write_status

INTERVAL = float(os.environ.get("STRATUS_DATABASE_INTERVAL", "3"))
TERMINAL = ("Completed", "Failed")


def backup_id(body: dict) -> str:
    return f"{body['metadata']['name']}-{body['metadata']['uid'][:8]}"


def sync_backup(body: dict) -> dict:
    meta, spec = body["metadata"], body["spec"]
    ns, gen = meta["namespace"], meta.get("generation", 0)
    old = body.get("status") or {}
    status: dict = {"observedGeneration": gen}

    def waiting(reason: str, message: str, phase: str = "Pending") -> dict:
        status.update(phase=phase, conditions=set_condition(old.get("conditions"), "Ready", False, reason, message, gen))
        return status

    db = kube.get(API_VERSION, "databases", spec["database"], ns)
    if db is None:
        return waiting("DatabaseNotFound", f"spec.database: Database {spec['database']!r} does not exist in {ns}")
    if not (db["spec"].get("backup") or {}).get("bucket"):
        return waiting("NoBackupBucket", f"Database {spec['database']!r} has no spec.backup.bucket; set it to a Bucket of this project")
    engine = core.ENGINES[db["spec"]["engine"]]
    primary = _primary_pod(kube.list_pods(ns, f"{core.LABEL}={spec['database']}"))
    ep = pod_endpoint(primary, "control") if primary else None
    if ep is None or (db.get("status") or {}).get("phase") not in ("ACTIVE", "BACKUP"):
        return waiting("DatabaseNotReady", f"Database {spec['database']!r} is not ACTIVE yet")
    bid = backup_id(body)
    try:
        st = engines.control(*ep, "GET", f"/backups/{bid}")
        if st.get("phase") in (None, "Unknown"):
            st = engines.control(*ep, "POST", "/backups", {"id": bid})
    except OSError as exc:
        return waiting("InstanceUnreachable", f"the primary's instance manager did not answer ({type(exc).__name__}); retrying")
    if st.get("phase") == "Busy":
        return waiting("AnotherBackupRunning", "another backup of this Database is running; this one starts after it")
    status.update(engine=engine.name, bucket=db["spec"]["backup"]["bucket"], serverName=core.server_name(db),
                  beginTime=st.get("beginTime", ""))
    if st["phase"] == "Running":
        status.update(phase="Running", conditions=set_condition(old.get("conditions"), "Ready", False, "Running",
                                                                 f"backing up {spec['database']} from {primary['metadata']['name']}", gen))
        return status
    if st["phase"] == "Failed":
        status.update(phase="Failed", conditions=set_condition(old.get("conditions"), "Ready", False, "BackupFailed",
                                                                st.get("message", "the engine's backup tool failed"), gen))
        return status
    status.update(phase="Completed", backupId=st["backupId"], endTime=st["endTime"], durationSeconds=st.get("durationSeconds"),
                  sizeBytes=st.get("sizeBytes"), checksum=st.get("checksum", ""), engineVersion=st.get("engineVersion", ""),
                  conditions=set_condition(old.get("conditions"), "Ready", True, "Completed",
                                           f"{st.get('sizeBytes')} bytes in Bucket {db['spec']['backup']['bucket']}", gen))
    return status


def reconcile_backup(namespace: str, name: str) -> None:
    body = kube.get(API_VERSION, "databasebackups", name, namespace)
    if body is None or (body.get("status") or {}).get("phase") in TERMINAL:
        return
    DatabaseBackup.model_validate(body)
    write_status(body, "databasebackups", sync_backup(body), error_phase="Failed")


@kopf.on.create(GROUP, VERSION, "databasebackups")
@kopf.on.resume(GROUP, VERSION, "databasebackups")
def backup_created(namespace, name, **_) -> None:
    reconcile_backup(namespace, name)


@kopf.on.delete(GROUP, VERSION, "databasebackups")
def backup_deleted(body, namespace, name, logger, **_) -> None:
    """Deleting a DatabaseBackup (by hand, or by a schedule's retention) deletes its data
    from the Bucket. Best effort: a Bucket already gone leaves nothing to delete."""
    st = body.get("status") or {}
    if st.get("phase") != "Completed" or not st.get("bucket") or not st.get("backupId"):
        return
    bucket = kube.get(API_VERSION, "buckets", st["bucket"], namespace)
    bst = (bucket or {}).get("status") or {}
    secret = _secret(namespace, st["bucket"])
    if not bst.get("bucketName") or not secret.get("AWS_ACCESS_KEY_ID"):
        logger.info("backup %s/%s: Bucket %s is gone; nothing to delete", namespace, name, st["bucket"])
        return
    try:
        engines.delete_backup(st.get("engine", ""), bst.get("endpoint", ""), bst.get("region") or "us-east-1",
                              secret["AWS_ACCESS_KEY_ID"], secret.get("AWS_SECRET_ACCESS_KEY", ""), bst["bucketName"],
                              core.BACKUP_PREFIX, st["serverName"], st["backupId"])
    except Exception as exc:  # noqa: BLE001 - the object goes anyway; the event says what stayed
        kopf.event(body, type="Warning", reason="BackupDataKept",
                   message=f"could not delete the backup's data from Bucket {st['bucket']}: {type(exc).__name__}")


def _secret(namespace: str, name: str) -> dict[str, str]:
    return kube.secret_data(name, namespace) or {}


@kopf.timer(GROUP, VERSION, "databasebackups", interval=INTERVAL, initial_delay=1,
            when=lambda status, **_: (status or {}).get("phase") not in TERMINAL)
def backup_tick(namespace, name, **_) -> None:
    reconcile_backup(namespace, name)

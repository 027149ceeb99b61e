"""BucketClass and Bucket: S3 buckets on a real object server, with credentials to mount.

BucketClass: checks that the endpoint answers with the admin key pair (ListBuckets) and
reports Ready; a missing Secret or a refusal is a condition, retried.

Bucket, level-based on every change and resume:
  1. the class and its admin Secret (missing: phase Pending, retried);
  2. claim the bucket name in status (a name that already exists on the backend is
     refused, never adopted: BucketNameTaken), then ensure the backend bucket
     (versioning, public read, expiration) and its quota (the Bucket's, else the class
     default);
  3. credentials scoped to this bucket (if the class can mint them; otherwise the
     `CredentialsScoped` condition says so and no Secret is written: the admin key
     pair is never handed out);
  4. a Secret and a ConfigMap named like the Bucket, owned by it (an existing object
     of that name that Stratus does not own is left alone: condition NameTaken);
  5. status: bucket name, endpoint, region, usage, quota state, conditions, phase.

A timer refreshes usage and quota every STRATUS_BUCKET_USAGE_INTERVAL seconds (30),
blocks tenant writes when a limit is reached and lifts the block when usage drops
(see drivers/s3.py), and runs expiration when the backend has no native lifecycle
(loops/bucket_usage.py). Names, quotas and the connection ConfigMap are computed in
core/bucket.py; stores per class come from drivers/bucket_stores.py.

Deletion (finalizer): forceDelete or the class policy Delete deletes every object and
the bucket; with Retain an empty bucket is deleted, and a bucket holding objects is
refused: the Bucket stays, phase Deleting, condition Ready=False reason DeletionRefused
naming the bucket, endpoint and usage, until it is emptied or forceDelete is set.
Scoped credentials are revoked as the bucket goes. The Secret and ConfigMap go with the
Bucket through their owner references.

Admin key pairs and scoped secrets only ever travel in Secrets; status, events and
logs carry access key ids at most.
"""

from __future__ import annotations

import os

import kopf

from ..api.bucket import Bucket
from ..api.bucketclass import BucketClass, DeletionPolicy
from ..api.registry import API_VERSION, GROUP, LABEL_PREFIX, VERSION
from ..core.bucket import bucket_name_of, connection_config, effective_quota, error_text, quota_conditions, quota_state
from ..core.compute import owner_reference
from ..core.conditions import now, set_condition
from ..drivers import kube, s3
# Re-exported: services/images.py, controllers/image.py and controllers/datajob.py take stores from here.
from ..drivers.bucket_stores import ClassNotReady, admin_credentials, store_for_class  # noqa: F401
from ..loops import bucket_usage
from ..loops.bucket_usage import USAGE_INTERVAL, bucket_lock
from .status import write_status

RETRY = 10
BUCKET_LABEL = f"{LABEL_PREFIX}/bucket"
#: The image store's bucket (controllers/image.py); no tenant Bucket may take its name.
IMAGE_BUCKET = os.environ.get("STRATUS_IMAGE_BUCKET", "stratus-images")


# -- BucketClass -----------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "bucketclasses")
@kopf.on.create(GROUP, VERSION, "bucketclasses")
@kopf.on.update(GROUP, VERSION, "bucketclasses", field="spec")
def reconcile_bucket_class(body, name, patch, **_) -> None:
    BucketClass.model_validate(kube.plain(body))
    generation = body["metadata"].get("generation", 0)
    conditions = (body.get("status") or {}).get("conditions")
    try:
        _, store = store_for_class(name)
        store.bucket_exists("stratus-probe")  # a signed HEAD: proves the endpoint and the key pair
    except ClassNotReady as exc:
        reason, message = exc.reason, exc.message
    except Exception as exc:  # noqa: BLE001 - any failure to reach the endpoint is reported
        reason, message = "EndpointUnreachable", f"the endpoint did not accept the admin credentials: {error_text(exc)}; check spec.endpoint and the Secret"
    else:
        patch.status.update(phase="Ready", observedGeneration=generation)
        patch.status["conditions"] = set_condition(conditions, "Ready", True, "EndpointReady", "The endpoint answers with the admin credentials", generation)
        return
    patch.status.update(phase="Error", observedGeneration=generation)
    patch.status["conditions"] = set_condition(conditions, "Ready", False, reason, message, generation)
    raise kopf.TemporaryError(message, delay=RETRY)


# -- Bucket: handlers -------------------------------------------------------------------------

def _write_status(body: dict, status: dict) -> dict:
    return write_status(body, "buckets", status, error_phase="Error")


def _fail(body: dict, phase: str, reason: str, message: str, extra: dict | None = None) -> None:
    generation = body["metadata"].get("generation", 0)
    conditions = set_condition((body.get("status") or {}).get("conditions"), "Ready", False, reason, message, generation)
    _write_status(body, {"phase": phase, "conditions": conditions, "observedGeneration": generation, **(extra or {})})


def _owned_or_absent(kind: str, name: str, namespace: str, uid: str) -> bool:
    obj = kube.get("v1", "secrets" if kind == "Secret" else "configmaps", name, namespace)
    if obj is None:
        return True
    return any(o.get("uid") == uid for o in (obj["metadata"].get("ownerReferences") or []))


def _apply_children(body: dict, config: dict[str, str], creds: s3.ScopedCredentials | None) -> None:
    meta = body["metadata"]
    common = {"name": meta["name"], "namespace": meta["namespace"], "labels": {BUCKET_LABEL: meta["name"]},
              "ownerReferences": [owner_reference(body)]}
    kube.apply_core({"apiVersion": "v1", "kind": "ConfigMap", "metadata": common, "data": config})
    if creds is not None:
        kube.apply_core({"apiVersion": "v1", "kind": "Secret", "metadata": common, "type": "Opaque",
                         "stringData": {"AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key}})


def _sync(body: dict, logger) -> None:
    bucket = Bucket.model_validate(body)
    meta = body["metadata"]
    generation = meta.get("generation", 0)
    conditions = (body.get("status") or {}).get("conditions")
    try:
        cls, store = store_for_class(bucket.spec.bucket_class_name)
    except ClassNotReady as exc:
        _fail(body, "Pending", exc.reason, exc.message)
        raise kopf.TemporaryError(exc.message, delay=RETRY) from None
    name = bucket_name_of(bucket)
    for kind in ("Secret", "ConfigMap"):
        if not _owned_or_absent(kind, meta["name"], meta["namespace"], meta["uid"]):
            _fail(body, "Error", "NameTaken", f"A {kind} named {meta['name']} already exists and is not this Bucket's; rename or remove it")
            raise kopf.TemporaryError("name taken", delay=30)
    lifecycle = bucket.spec.lifecycle.expiration_days if bucket.spec.lifecycle else None
    if (body.get("status") or {}).get("bucketName") != name:
        # First sight: claim the name in status before creating it, so a crash in between
        # cannot orphan a bucket, and never adopt a bucket that already exists (it is
        # someone else's: another namespace's, or the image store).
        try:
            taken = store.bucket_exists(name)
        except Exception as exc:  # noqa: BLE001
            _fail(body, "Error", "BackendError", f"The object store failed: {error_text(exc)}; retrying")
            raise kopf.TemporaryError(f"object store: {type(exc).__name__}", delay=RETRY) from None
        if taken or name == IMAGE_BUCKET:
            _fail(body, "Error", "BucketNameTaken", f"A bucket named {name!r} already exists on this endpoint and is not this Bucket's; choose another spec.bucketName in a new Bucket")
            raise kopf.PermanentError("bucket name taken")
        _write_status(body, {"bucketName": name})
        body.setdefault("status", {})["bucketName"] = name
    try:
        result = store.ensure_bucket(name, region=cls["spec"].get("region"), versioning=bucket.spec.versioning,
                                     public_read=bucket.spec.access.value == "PublicRead",
                                     lifecycle_expiration_days=lifecycle)
        max_bytes, max_objects = effective_quota(body["spec"], cls["spec"])
        store.set_quota(name, max_bytes=max_bytes, max_objects=max_objects)
        quota = store.check_quota(name)
    except s3.BucketNameTaken:
        _fail(body, "Error", "BucketNameTaken", f"The bucket name {name!r} belongs to someone else on this endpoint; choose another spec.bucketName in a new Bucket")
        raise kopf.PermanentError("bucket name taken") from None
    except (s3.InvalidBucketName, s3.UnsupportedRegion) as exc:
        _fail(body, "Error", "InvalidBucket", f"{exc}; fix the Bucket or its class")
        raise kopf.PermanentError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001
        _fail(body, "Error", "BackendError", f"The object store failed: {error_text(exc)}; retrying")
        raise kopf.TemporaryError(f"object store: {type(exc).__name__}", delay=RETRY) from None
    if result.created:
        logger.info("created bucket %s on %s", name, store.endpoint_url)

    creds = None
    if store.capabilities.scoped_credentials:
        creds = store.create_scoped_credentials(name, "default")
        conditions = set_condition(conditions, "CredentialsScoped", True, "Scoped",
                                   f"Secret {meta['name']} holds a key pair good for bucket {name} only", generation)
    else:
        conditions = set_condition(conditions, "CredentialsScoped", False, "ScopingUnsupported",
                                   "This BucketClass cannot mint per-bucket credentials, so none were written; ask the administrator for access to the bucket", generation)
    config = connection_config(store.endpoint_url, store.region, name)
    _apply_children(body, config, creds)

    conditions = quota_conditions(conditions, quota, generation)
    conditions = set_condition(conditions, "Ready", True, "Bound", f"Bucket {name} is ready at {store.endpoint_url}", generation)
    _write_status(body, {
        "phase": "Bound", "conditions": conditions, "observedGeneration": generation,
        "bucketName": name, "endpoint": store.endpoint_url, "region": store.region,
        "configMapName": meta["name"], "secretName": meta["name"] if creds else "",
        "credentials": "Scoped" if creds else "Unavailable",
        "usage": {"objects": quota.usage.objects, "bytes": quota.usage.bytes, "refreshedAt": now()},
        "quota": quota_state(quota),
    })


@kopf.on.resume(GROUP, VERSION, "buckets")
@kopf.on.create(GROUP, VERSION, "buckets")
@kopf.on.update(GROUP, VERSION, "buckets", field="spec")
def reconcile_bucket(body, name, namespace, logger, **_) -> None:
    Bucket.model_validate(kube.plain(body))
    with bucket_lock(namespace, name):
        fresh = kube.get(API_VERSION, "buckets", name, namespace) or kube.plain(body)
        if fresh["metadata"].get("deletionTimestamp"):
            return
        _sync(fresh, logger)


@kopf.timer(GROUP, VERSION, "buckets", interval=USAGE_INTERVAL, initial_delay=USAGE_INTERVAL / 2, idle=None)
def refresh_usage(body, name, namespace, logger, **_) -> None:
    Bucket.model_validate(kube.plain(body))
    bucket_usage.refresh(name, namespace, _write_status, logger)


@kopf.on.delete(GROUP, VERSION, "buckets")
def delete_bucket(body, name, namespace, logger, **_) -> None:
    body = kube.plain(body)
    Bucket.model_validate(body)
    status = body.get("status") or {}
    bucket_name = status.get("bucketName")
    if not bucket_name:
        return  # never created on the backend
    try:
        cls, store = store_for_class(body["spec"]["bucketClassName"])
    except ClassNotReady as exc:
        _fail(body, "Deleting", exc.reason, exc.message)
        raise kopf.TemporaryError(exc.message, delay=RETRY) from None
    force = body["spec"].get("forceDelete") or cls["spec"].get("deletionPolicy") == DeletionPolicy.DELETE.value
    try:
        store.delete_bucket(bucket_name, force=bool(force))
    except s3.BucketNotEmpty as exc:
        message = (f"Bucket {bucket_name} at {store.endpoint_url} holds {exc.usage.objects} objects ({exc.usage.bytes} bytes) "
                   "and its class retains data, so it was kept; delete the objects, or set spec.forceDelete: true to delete them with the Bucket")
        _fail(body, "Deleting", "DeletionRefused", message)
        raise kopf.TemporaryError("bucket not empty", delay=RETRY) from None
    logger.info("deleted bucket %s%s", bucket_name, " and its objects" if force else "")

"""Image: import into the image store bucket, Glance's lifecycle, and the CDI source.

Settings (operator environment):
    STRATUS_IMAGE_BUCKETCLASS  the BucketClass of the image store (default `default`)
    STRATUS_IMAGE_BUCKET       the bucket on it (default `stratus-images`; created, private,
                               the operator's own: tenants get no key to it)
    STRATUS_IMAGE_MAX_BYTES    the largest image accepted (default 64Gi)
    STRATUS_IMAGE_SERVICE_*    where the image service listens (see services/images.py)

Sources:
    http      a kopf daemon per Image runs the streaming importer in a thread
              (drivers/importer.py): queued -> importing (progress in status every
              couple of seconds) -> active, or killed with the reason (SourceNotFound,
              ChecksumMismatch, FormatMismatch, ImageTooLarge, ...). Transient failures
              (a 503, a refused connection) go back to queued and are retried with
              back-off. After an operator restart an unfinished import starts over (the
              multipart upload of the dead process is abandoned; S3 sweeps it).
    registry  nothing to copy: active at once with a CDI registry source.
    volume    active once the Volume's PVC exists, with a CDI pvc (clone) source.
    upload    queued with AwaitingUpload (the message names the URL) until the bytes are
              PUT to the image service by a caller allowed to `update` the Image; they
              go through the same streaming importer and checks as an http import.

The CDI source of an imported image is the image service's URL for it, signed
(HMAC, expiring; see services/images.py): CDI importer pods hold no Kubernetes token,
and the signature grants reading that one image's bytes and nothing else. A timer
re-signs it well before it expires and whenever the service's address changes.

Deactivation flips active <-> deactivated (the service then refuses downloads).
Protected images: a ValidatingAdmissionPolicy installed at startup makes the API server
refuse their deletion; should the policy be missing, the finalizer holds the Image
with condition DeletionRefused instead. Deleting an image deletes its stored bytes.
"""

from __future__ import annotations

import os
import threading
import time

import kopf

from ..api.image import Image
from ..api.registry import API_VERSION, GROUP, LABEL_PREFIX, VERSION
from ..core import image as core
from ..core.conditions import set_condition
from ..core.locks import KeyedLocks
from ..core.quantity import parse_bytes
from ..drivers import importer, kube
from ..drivers.stores import IMAGE_BUCKET, IMAGE_CLASS, ClassNotReady, image_store  # noqa: F401
from ..services import images as service
from .status import write_status

MAX_BYTES = parse_bytes(os.environ.get("STRATUS_IMAGE_MAX_BYTES", "64Gi"))
RETRY = 10
PROTECT_POLICY = "stratus-protected-images"

_locks = KeyedLocks(threading.Lock)


# -- status ---------------------------------------------------------------------------------


def _write_status(body: dict, status: dict) -> dict:
    """Patch what changed (with an Event on a phase change) and keep ``body`` current."""
    changed = write_status(body, "images", status, error_phase=core.KILLED)
    body.setdefault("status", {}).update(changed)
    return body


def _set(body: dict, phase: str, ready: bool, reason: str, message: str, **extra) -> dict:
    generation = body["metadata"].get("generation", 0)
    conditions = set_condition((body.get("status") or {}).get("conditions"), "Ready", ready, reason, message, generation)
    return _write_status(body, {"phase": phase, "conditions": conditions, "observedGeneration": generation, **extra})


def _fresh(namespace: str, name: str) -> dict | None:
    body = kube.get(API_VERSION, "images", name, namespace)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    return body


def active_extras(body: dict) -> dict:
    """downloadUrl and dataVolumeSource for an imported image (signed for CDI)."""
    meta = body["metadata"]
    url = service.image_url(meta["namespace"], meta["name"])
    if not url:
        return {}
    signed = service.signed_url(meta["namespace"], meta["name"], meta["uid"])
    return {"downloadUrl": url, "dataVolumeSource": {"http": {"url": signed}}}


def _active_phase(body: dict) -> str:
    return core.DEACTIVATED if body["spec"].get("deactivated") else core.ACTIVE


def _mark_active(body: dict, message: str, **extra) -> dict:
    phase = _active_phase(body)
    reason, msg = ("Deactivated", "The image is deactivated (spec.deactivated); downloads and boots are refused") \
        if phase == core.DEACTIVATED else ("Active", message)
    return _set(body, phase, phase == core.ACTIVE, reason, msg, **extra)


# -- spec handler: labels, non-copied sources, (de)activation ------------------------------


@kopf.on.resume(GROUP, VERSION, "images")
@kopf.on.create(GROUP, VERSION, "images")
@kopf.on.update(GROUP, VERSION, "images", field="spec")
def reconcile_image(body, name, namespace, logger, **_) -> None:
    Image.model_validate(kube.plain(body))
    labels = core.property_labels(body["spec"].get("properties") or {}, LABEL_PREFIX)
    current = body["metadata"].get("labels") or {}
    if any(current.get(k) != v for k, v in labels.items()):
        kube.patch(API_VERSION, "images", name, {"metadata": {"labels": labels}}, namespace)
    with _locks[(namespace, name)]:
        fresh = _fresh(namespace, name)
        if fresh is None:
            return
        phase = (fresh.get("status") or {}).get("phase") or ""
        source = fresh["spec"]["source"]
        if phase in (core.ACTIVE, core.DEACTIVATED):
            copied = source.get("http") or source.get("upload")
            _mark_active(fresh, "The image is active", **active_extras(fresh) if copied else {})
            return
        if phase == core.KILLED:
            return
        if source.get("registry"):
            _mark_active(fresh, "The containerDisk is used from its registry as it is",
                         dataVolumeSource={"registry": {"url": f"docker://{source['registry']['url']}"}})
        elif source.get("volume"):
            vol = source["volume"]["name"]
            if kube.get("v1", "persistentvolumeclaims", vol, namespace) is None:
                _set(fresh, core.QUEUED, False, "VolumeNotFound", f"No volume claim {vol!r} in {namespace}; create the Volume or fix spec.source.volume.name")
                raise kopf.TemporaryError("volume not found", delay=RETRY) from None
            _mark_active(fresh, f"CDI clones volume {vol} for each disk",
                         dataVolumeSource={"pvc": {"namespace": namespace, "name": vol}})
        elif source.get("upload"):
            if phase == core.IMPORTING and (namespace, name) not in _uploading:
                phase = ""  # the upload died with a previous operator process
            if phase != core.IMPORTING:
                url = service.image_url(namespace, name)
                _set(fresh, core.QUEUED, False, "AwaitingUpload",
                     f"Waiting for the bytes: PUT them to {url} with a bearer token allowed to update this Image",
                     downloadUrl=url)
        elif not phase:
            _set(fresh, core.QUEUED, False, "Queued", "Waiting for the importer")


# -- the importer daemon ----------------------------------------------------------------------


def _is_http(spec, **_) -> bool:
    return bool((spec.get("source") or {}).get("http"))


def _is_copied(spec, **_) -> bool:
    source = spec.get("source") or {}
    return bool(source.get("http") or source.get("upload"))


@kopf.daemon(GROUP, VERSION, "images", when=_is_http, cancellation_timeout=10)
def import_daemon(stopped, name, namespace, logger, **_) -> None:
    backoff = 5.0
    while not stopped:
        body = _fresh(namespace, name)
        if body is None or (body.get("status") or {}).get("phase") in (core.ACTIVE, core.DEACTIVATED, core.KILLED):
            return
        try:
            _import_once(body, stopped, logger)
            return
        except core.TransientImportError as exc:
            message = f"{exc}; retrying in {int(backoff)}s"
            body = _fresh(namespace, name)
            if body is None:
                return
            _set(body, core.QUEUED, False, "ImportRetrying", message)
            logger.warning("import of %s/%s: %s", namespace, name, message)
        except ClassNotReady as exc:
            body = _fresh(namespace, name)
            if body is None:
                return
            _set(body, core.QUEUED, False, "ImageStoreUnavailable", f"The image store is not ready: {exc.message}")
        except importer.Cancelled:
            return
        stopped.wait(backoff)
        backoff = min(backoff * 2, 300)


def _import_once(body: dict, stopped, logger) -> None:
    meta, spec = body["metadata"], body["spec"]
    ns, name = meta["namespace"], meta["name"]
    store = image_store()
    key = core.object_key(ns, name, meta["uid"])
    http = spec["source"]["http"]
    location = {"bucket": IMAGE_BUCKET, "key": key}
    with _locks[(ns, name)]:  # serialised with the spec handler, which may write queued
        body = _fresh(ns, name)
        if body is None:
            return
        body = _set(body, core.IMPORTING, False, "Importing", f"Fetching {core.redact_url(http['url'])}",
                    progress={"bytes": 0, "total": None, "percent": 0}, location=location)

    def progress(done: int, total: int | None) -> None:
        kube.patch_status(API_VERSION, "images", name, {"progress": {"bytes": done, "total": total,
                                                                      "percent": core.percent(done, total)}}, ns)

    started = time.monotonic()
    try:
        result = importer.import_http(store, IMAGE_BUCKET, key, http["url"], declared_format=spec["diskFormat"],
                                      expected_sha256=http["sha256"], max_bytes=MAX_BYTES, progress=progress,
                                      stopped=lambda: bool(stopped))
    except core.ImportFailure as exc:
        fresh = _fresh(ns, name) or body
        _set(fresh, core.KILLED, False, exc.reason, exc.message, location=None)
        logger.warning("import of %s/%s failed: %s", ns, name, exc.reason)
        return
    fresh = _fresh(ns, name)
    if fresh is None:
        store.delete_object(IMAGE_BUCKET, key)  # deleted while importing
        return
    mbps = result.size / max(result.seconds, 1e-6) / 1e6
    logger.info("imported %s/%s: %d bytes, %s, %.1f MB/s", ns, name, result.size, result.format, mbps)
    _mark_active(fresh, f"Imported {result.size} bytes ({result.format}) in {time.monotonic() - started:.1f}s; checksum verified",
                 size=result.size, virtualSize=result.virtual_size, checksum=result.sha256,
                 detectedFormat=result.format, progress={"bytes": result.size, "total": result.size, "percent": 100},
                 **active_extras(fresh))


# -- uploads (called by the image service, in a worker thread) -------------------------------------

_uploading: set[tuple[str, str]] = set()


def run_upload(namespace: str, name: str, chunks, total: int | None) -> tuple[int, str, str]:
    """Store uploaded bytes like an import; (HTTP status, reason, message) for the caller."""
    key_ = (namespace, name)
    with _locks[key_]:
        body = _fresh(namespace, name)
        if body is None:
            return 404, "NotFound", f"no image {namespace}/{name}"
        upload = body["spec"]["source"].get("upload")
        phase = (body.get("status") or {}).get("phase") or core.QUEUED
        if upload is None:
            return 409, "NotAnUploadImage", "this image's bytes come from spec.source, not from an upload"
        if phase != core.QUEUED or key_ in _uploading:
            return 409, "UploadNotAccepted", f"the image is {phase}; only a queued image takes an upload"
        _uploading.add(key_)
        store = image_store()
        key = core.object_key(namespace, name, body["metadata"]["uid"])
        body = _set(body, core.IMPORTING, False, "Uploading", "Receiving uploaded bytes",
                    progress={"bytes": 0, "total": total, "percent": 0}, location={"bucket": IMAGE_BUCKET, "key": key})
    try:
        def progress(done: int, total_: int | None) -> None:
            kube.patch_status(API_VERSION, "images", name, {"progress": {"bytes": done, "total": total_,
                                                                          "percent": core.percent(done, total_)}}, namespace)

        try:
            result = importer.import_stream(store, IMAGE_BUCKET, key, chunks, declared_format=body["spec"]["diskFormat"],
                                            expected_sha256=upload.get("sha256"), total=total, max_bytes=MAX_BYTES,
                                            progress=progress)
        except core.ImportFailure as exc:
            _set(_fresh(namespace, name) or body, core.KILLED, False, exc.reason, exc.message, location=None)
            return 400, exc.reason, exc.message
        except Exception as exc:  # noqa: BLE001 - a broken connection: the image may be uploaded again
            _set(_fresh(namespace, name) or body, core.QUEUED, False, "UploadFailed",
                 f"The upload broke off ({type(exc).__name__}); PUT the bytes again")
            return 500, "UploadFailed", "the upload broke off; try again"
        fresh = _fresh(namespace, name)
        if fresh is None:
            store.delete_object(IMAGE_BUCKET, key)
            return 410, "Gone", "the image was deleted during the upload"
        _mark_active(fresh, f"Uploaded {result.size} bytes ({result.format}); checksum {'verified' if upload.get('sha256') else 'recorded'}",
                     size=result.size, virtualSize=result.virtual_size, checksum=result.sha256,
                     detectedFormat=result.format, progress={"bytes": result.size, "total": result.size, "percent": 100},
                     **active_extras(fresh))
        return 201, "Active", f"stored {result.size} bytes, sha256 {result.sha256}"
    finally:
        _uploading.discard(key_)


# -- periodic: re-sign the CDI URL ---------------------------------------------------------------


@kopf.timer(GROUP, VERSION, "images", interval=float(os.environ.get("STRATUS_IMAGE_RESIGN_INTERVAL", "3600")),
            when=_is_copied, idle=None)
def refresh_urls(name, namespace, **_) -> None:
    with _locks[(namespace, name)]:
        body = _fresh(namespace, name)
        if body is None or (body.get("status") or {}).get("phase") not in (core.ACTIVE, core.DEACTIVATED):
            return
        url = (((body.get("status") or {}).get("dataVolumeSource") or {}).get("http") or {}).get("url", "")
        if service.needs_resign(url, namespace, name):
            _write_status(body, active_extras(body))


# -- deletion ----------------------------------------------------------------------------------


@kopf.on.delete(GROUP, VERSION, "images")
def delete_image(body, name, namespace, logger, **_) -> None:
    body = kube.plain(body)
    if body["spec"].get("protected"):
        generation = body["metadata"].get("generation", 0)
        conditions = set_condition((body.get("status") or {}).get("conditions"), "Ready", False, "DeletionRefused",
                                   "The image is protected; set spec.protected: false to let the deletion proceed", generation)
        _write_status(body, {"conditions": conditions})
        raise kopf.TemporaryError("image is protected", delay=RETRY)
    location = (body.get("status") or {}).get("location") or {}
    key = location.get("key") or core.object_key(namespace, name, body["metadata"]["uid"])
    if _is_copied(body["spec"]):
        try:
            store = image_store()
        except ClassNotReady as exc:
            raise kopf.TemporaryError(exc.message, delay=RETRY) from None
        store.delete_object(location.get("bucket") or IMAGE_BUCKET, key)
        logger.info("deleted the stored bytes of %s/%s", namespace, name)


# -- startup: the admission policy and the image service -----------------------------------------


def protect_policy() -> tuple[dict, dict]:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": PROTECT_POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [GROUP], "apiVersions": ["*"],
                                                    "operations": ["DELETE"], "resources": ["images"]}]},
            "validations": [{
                "expression": "!(has(oldObject.spec.protected) && oldObject.spec.protected)",
                "messageExpression": "'image ' + oldObject.metadata.name + ' is protected (spec.protected: true); set spec.protected to false before deleting it'",
                "reason": "Forbidden",
            }],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": PROTECT_POLICY},
        "spec": {"policyName": PROTECT_POLICY, "validationActions": ["Deny"]},
    }
    return policy, binding


@kopf.on.startup()
def install_protect_policy(logger, **_) -> None:
    policy, binding = protect_policy()
    try:
        kube.apply(policy, "validatingadmissionpolicies")
        kube.apply(binding, "validatingadmissionpolicybindings")
    except Exception as exc:  # noqa: BLE001 - never block the operator's start
        logger.warning("could not install %s (%s); protected images are held by the finalizer instead",
                       PROTECT_POLICY, getattr(exc, "status", type(exc).__name__))


@kopf.on.startup()
async def start_image_service(memo: kopf.Memo, logger, **_) -> None:
    memo.image_service = await service.start_from_env(logger, upload=run_upload)


@kopf.on.cleanup()
async def stop_image_service(memo: kopf.Memo, **_) -> None:
    runner = getattr(memo, "image_service", None)
    if runner is not None:
        await runner.cleanup()

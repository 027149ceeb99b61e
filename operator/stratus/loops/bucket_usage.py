"""The bucket usage timer: every ``STRATUS_BUCKET_USAGE_INTERVAL`` seconds (30) per
Bound Bucket, expire objects when the backend has no native lifecycle, check usage
against the quota (the store blocks tenant writes at the limit and lifts the block when
usage drops, see drivers/s3.py), and write usage, quota and the QuotaExceeded
condition, with an event when writes become blocked or are let through again.

A failed refresh is logged with its cause and tried again at the next tick; the
Bucket's ``usage.refreshedAt`` shows how old its figures are. A refresh holds the
Bucket's lock (``bucket_lock``), which the Bucket's reconciler holds too, so the two
never write status at once.
"""

from __future__ import annotations

import collections
import logging
import os
import threading

import kopf

from ..api.registry import API_VERSION
from ..core import bucket as core
from ..core.conditions import now
from ..drivers import kube
from ..drivers.bucket_stores import store_for_class

USAGE_INTERVAL = float(os.environ.get("STRATUS_BUCKET_USAGE_INTERVAL", "30"))

log = logging.getLogger(__name__)
_locks: dict[tuple[str, str], threading.Lock] = collections.defaultdict(threading.Lock)


def bucket_lock(namespace: str, name: str) -> threading.Lock:
    return _locks[(namespace, name)]


def refresh(name: str, namespace: str, write_status, logger: logging.Logger | logging.LoggerAdapter = log) -> None:
    """One tick for one Bucket; ``write_status(body, status)`` patches what changed."""
    with bucket_lock(namespace, name):
        fresh = kube.get(API_VERSION, "buckets", name, namespace)
        if not fresh or fresh["metadata"].get("deletionTimestamp") or (fresh.get("status") or {}).get("phase") != "Bound":
            return
        status = fresh["status"]
        try:
            _, store = store_for_class(fresh["spec"]["bucketClassName"])
            bucket_name = status["bucketName"]
            lifecycle = (fresh["spec"].get("lifecycle") or {}).get("expirationDays")
            if lifecycle and not store.capabilities.native_lifecycle:
                expired = store.expire_objects(bucket_name, lifecycle)
                if expired:
                    logger.info("expired %d objects in %s", expired, bucket_name)
            quota = store.check_quota(bucket_name)
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            logger.warning("usage refresh of %s failed (next try in %.0fs): %s", name, USAGE_INTERVAL, core.error_text(exc))
            return
        generation = fresh["metadata"].get("generation", 0)
        conditions = core.quota_conditions(status.get("conditions"), quota, generation)
        was_blocked = (status.get("quota") or {}).get("writesBlocked")
        write_status(fresh, {"conditions": conditions, "quota": core.quota_state(quota),
                             "usage": {"objects": quota.usage.objects, "bytes": quota.usage.bytes, "refreshedAt": now()}})
        event = core.quota_event(bool(was_blocked), quota)
        if event is not None:
            kopf.event(fresh, type=event[0], reason=event[1], message=event[2])

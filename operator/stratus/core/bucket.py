"""Buckets, the pure half: generated names, the effective quota, the connection
ConfigMap, and what a quota check means for status and events. No I/O: the controller
(``controllers/bucket.py``) and the usage timer (``loops/bucket_usage.py``) ask the
object store and hand its answers here.
"""

from __future__ import annotations

import hashlib
import typing as t
import urllib.parse

from ..api.bucket import Bucket
from .conditions import set_condition
from .quantity import parse_bytes


class QuotaCheck(t.Protocol):
    """What the object store answers about a bucket's quota (``drivers.s3.QuotaStatus``)."""

    max_bytes: int | None
    max_objects: int | None
    exceeded: bool
    writes_blocked: bool
    mode: t.Any

    @property
    def message(self) -> str: ...


def generated_bucket_name(namespace: str, name: str, uid: str) -> str:
    """DNS-safe, at most 63 characters, unique through the uid's hash."""
    suffix = hashlib.sha256(uid.encode()).hexdigest()[:8]
    base = f"{namespace}-{name}".replace(".", "-").lower()[: 63 - len(suffix) - 1].strip("-")
    return f"{base}-{suffix}"


def bucket_name_of(bucket: Bucket) -> str:
    return bucket.spec.bucket_name or bucket.status.bucket_name or generated_bucket_name(
        bucket.metadata.namespace, bucket.metadata.name, bucket.metadata.uid)


def effective_quota(bucket_spec: dict, cls_spec: dict) -> tuple[int | None, int | None]:
    quota = bucket_spec.get("quota") or cls_spec.get("defaultQuota") or {}
    max_bytes = parse_bytes(quota["maxBytes"]) if quota.get("maxBytes") else None
    return max_bytes, quota.get("maxObjects")


def connection_config(endpoint: str, region: str, bucket: str) -> dict[str, str]:
    url = urllib.parse.urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    return {
        "BUCKET_HOST": url.hostname or "",
        "BUCKET_PORT": str(port),
        "BUCKET_NAME": bucket,
        "BUCKET_REGION": region,
        "BUCKET_SSL": "true" if url.scheme == "https" else "false",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
    }


def quota_state(q: QuotaCheck) -> dict:
    """status.quota."""
    return {"maxBytes": q.max_bytes, "maxObjects": q.max_objects, "exceeded": q.exceeded,
            "writesBlocked": q.writes_blocked, "enforcement": q.mode.value}


def quota_conditions(conditions: list[dict] | None, q: QuotaCheck, generation: int) -> list[dict]:
    """The QuotaExceeded condition for a quota check: over quota or within it."""
    if q.exceeded:
        return set_condition(conditions, "QuotaExceeded", True, "QuotaReached",
                             q.message + "; delete objects or raise spec.quota", generation)
    return set_condition(conditions, "QuotaExceeded", False, "WithinQuota", q.message, generation)


def quota_event(was_blocked: bool, q: QuotaCheck) -> tuple[str, str, str] | None:
    """(type, reason, message) of the event to post when writes became blocked or were
    let through again; None when that did not change."""
    if q.writes_blocked == bool(was_blocked):
        return None
    if q.writes_blocked:
        return "Warning", "QuotaReached", q.message
    return "Normal", "WithinQuota", q.message


def error_text(exc: BaseException, limit: int = 300) -> str:
    """An object-store failure for a log line or a condition message: the error's type and
    its own text (the drivers and botocore never put key material in either)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:limit] if text else type(exc).__name__

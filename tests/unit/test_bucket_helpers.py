"""Bucket controller helpers: generated names, quotas, the connection ConfigMap."""

from __future__ import annotations

import pytest

from stratus.core.bucket import connection_config, effective_quota, generated_bucket_name
from stratus.drivers.s3 import validate_bucket_name


@pytest.mark.parametrize(
    "namespace, name",
    [("team-a", "logs"), ("a" * 63, "b" * 200), ("ns", "with.dots.in.name"), ("x", "y")],
)
def test_generated_names_are_valid_stable_and_unique(namespace, name):
    first = generated_bucket_name(namespace, name, "uid-1")
    validate_bucket_name(first)
    assert first == generated_bucket_name(namespace, name, "uid-1")
    assert first != generated_bucket_name(namespace, name, "uid-2")


@pytest.mark.parametrize(
    "bucket_spec, class_spec, expected",
    [
        ({}, {}, (None, None)),
        ({}, {"defaultQuota": {"maxBytes": "1Gi", "maxObjects": 10}}, (1 << 30, 10)),
        ({"quota": {"maxObjects": 3}}, {"defaultQuota": {"maxBytes": "1Gi"}}, (None, 3)),
        ({"quota": {"maxBytes": "5Mi"}}, {}, (5 << 20, None)),
    ],
    ids=["none", "class-default", "bucket-overrides", "bucket-only"],
)
def test_effective_quota(bucket_spec, class_spec, expected):
    assert effective_quota(bucket_spec, class_spec) == expected


@pytest.mark.parametrize(
    "endpoint, host, port, ssl",
    [("http://127.0.0.1:7070", "127.0.0.1", "7070", "false"), ("https://s3.example.org", "s3.example.org", "443", "true")],
)
def test_connection_config(endpoint, host, port, ssl):
    cfg = connection_config(endpoint, "us-east-1", "b1")
    assert cfg["BUCKET_HOST"] == host and cfg["BUCKET_PORT"] == port and cfg["BUCKET_SSL"] == ssl
    assert cfg["BUCKET_NAME"] == "b1" and cfg["AWS_ENDPOINT_URL"] == endpoint and cfg["AWS_REGION"] == "us-east-1"
    assert not any("SECRET" in k for k in cfg)


# -- what a quota check means (core.bucket: used by the reconciler and the usage timer) --

from stratus.core import bucket as core_bucket  # noqa: E402
from stratus.drivers.s3 import QuotaMode, QuotaStatus, Usage  # noqa: E402


def quota(objects=0, size=0, max_bytes=None, max_objects=None, exceeded=False, blocked=False):
    return QuotaStatus(Usage(objects, size), max_bytes, max_objects, exceeded, blocked, QuotaMode.OPERATOR)


QUOTA_CASES = [
    # (id, check, was_blocked, condition (status, reason), event)
    ("within", quota(1, 10, max_bytes=100), False, ("False", "WithinQuota"), None),
    ("reached-blocks", quota(1, 100, max_bytes=100, exceeded=True, blocked=True), False,
     ("True", "QuotaReached"), ("Warning", "QuotaReached")),
    ("still-blocked", quota(1, 100, max_bytes=100, exceeded=True, blocked=True), True, ("True", "QuotaReached"), None),
    ("drops-below-unblocks", quota(1, 10, max_bytes=100), True, ("False", "WithinQuota"), ("Normal", "WithinQuota")),
    ("no-quota", quota(5, 10), False, ("False", "WithinQuota"), None),
]


@pytest.mark.parametrize("check, was_blocked, condition, event", [c[1:] for c in QUOTA_CASES], ids=[c[0] for c in QUOTA_CASES])
def test_quota_check_to_condition_and_event(check, was_blocked, condition, event):
    cond = next(c for c in core_bucket.quota_conditions(None, check, 4) if c["type"] == "QuotaExceeded")
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == (*condition, 4)
    if check.exceeded:
        assert cond["message"].endswith("delete objects or raise spec.quota")
    got = core_bucket.quota_event(was_blocked, check)
    assert (got[:2] if got else None) == event
    state = core_bucket.quota_state(check)
    assert (state["exceeded"], state["writesBlocked"], state["enforcement"]) == (check.exceeded, check.writes_blocked, "Operator")


@pytest.mark.parametrize(
    "exc, text",
    [(ValueError("bad"), "ValueError: bad"), (TimeoutError(), "TimeoutError"), (RuntimeError("x" * 500), "RuntimeError: " + "x" * 286)],
    ids=["with-text", "without-text", "truncated"],
)
def test_error_text_keeps_the_cause(exc, text):
    assert core_bucket.error_text(exc) == text

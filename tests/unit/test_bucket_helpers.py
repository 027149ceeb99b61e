"""Bucket controller helpers: generated names, quotas, the connection ConfigMap."""

from __future__ import annotations

import pytest

from stratus.controllers.bucket import connection_config, effective_quota, generated_bucket_name
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

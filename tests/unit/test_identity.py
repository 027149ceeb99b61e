"""Keystone's pure logic: quota mapping and usage, RoleBindings per role, member
service accounts, durations, kubeconfigs and the catalog."""

from __future__ import annotations

import re

import pytest
import yaml

from stratus.core import identity

OWNER = {"apiVersion": "stratus.dev/v1alpha1", "kind": "Project", "name": "p", "uid": "u-1", "controller": True,
         "blockOwnerDeletion": True}


@pytest.mark.parametrize(
    "quota, plurals, hard",
    [
        ({}, {}, {}),
        ({"servers": 3}, {}, {"count/servers.stratus.dev": "3"}),
        ({"vcpus": 8, "memory": "16Gi"}, {}, {"requests.cpu": "8", "requests.memory": "16Gi"}),
        ({"volumeGigabytes": 100, "volumes": 4}, {}, {"requests.storage": "100Gi", "count/volumes.stratus.dev": "4"}),
        ({"snapshots": 2}, {"BlockSnapshot": "blocksnapshots"}, {"count/blocksnapshots.stratus.dev": "2"}),
        ({"snapshots": 2}, {"DiskSnapshot": "disksnapshots"}, {"count/disksnapshots.stratus.dev": "2"}),
        ({"dataClusters": 1, "stacks": 0}, {}, {"count/dataclusters.stratus.dev": "1", "count/stacks.stratus.dev": "0"}),
        ({"buckets": 5, "bucketBytes": "1Ti"}, {}, {"count/buckets.stratus.dev": "5"}),
        ({"servers": None, "images": 2}, {"Image": "images"}, {"count/images.stratus.dev": "2"}),
    ],
    ids=["none", "servers", "compute", "volumes", "snapshot-kind", "snapshot-discovered", "zero-is-a-limit",
         "bucket-bytes-not-in-quota", "unset-skipped"],
)
def test_quota_hard(quota, plurals, hard):
    assert identity.quota_hard(quota, plurals) == hard


def test_every_quota_field_of_the_model_is_mapped():
    from stratus.api.project import Quota

    wire = {f.alias or name for name, f in Quota.model_fields.items()}
    camel = {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), n) for n in Quota.model_fields}
    assert camel | wire >= set(identity.QUOTA_RESOURCES) and set(identity.QUOTA_RESOURCES) >= camel


@pytest.mark.parametrize(
    "quota, used, expected",
    [
        ({"servers": 2}, None, [{"name": "servers", "resource": "count/servers.stratus.dev", "used": "0", "limit": "2"}]),
        ({"servers": 2}, {"used": {"count/servers.stratus.dev": "1"}},
         [{"name": "servers", "resource": "count/servers.stratus.dev", "used": "1", "limit": "2"}]),
        ({"volumeGigabytes": 5}, {"used": {"requests.storage": "2Gi"}},
         [{"name": "volumeGigabytes", "resource": "requests.storage", "used": "2Gi", "limit": "5Gi"}]),
        ({"bucketBytes": "10Gi"}, {"used": {}}, [{"name": "bucketBytes", "resource": "", "used": "", "limit": "10Gi"}]),
    ],
    ids=["unused", "one-used", "gigabytes", "store-enforced"],
)
def test_quota_usage(quota, used, expected):
    assert identity.quota_usage(quota, used) == expected


def test_resource_quota_absent_without_limits():
    assert identity.resource_quota("p", "p", OWNER, {"bucketBytes": "1Gi"}) is None
    rq = identity.resource_quota("p", "ns", OWNER, {"servers": 1})
    assert rq["metadata"] == {"name": "stratus-quota", "namespace": "ns", "labels": {"stratus.dev/project": "p"},
                              "ownerReferences": [OWNER]}


MEMBERS = [
    {"kind": "User", "name": "alice@example.org", "role": "admin"},
    {"kind": "Group", "name": "devs", "role": "member"},
    {"kind": "ServiceAccount", "name": "ci/deployer", "role": "member"},
]


@pytest.mark.parametrize(
    "members, enabled, wanted, unwanted",
    [
        (MEMBERS, True, {"stratus-admin": 2, "stratus-member": 2}, ["stratus-reader"]),
        (MEMBERS, False, {}, ["stratus-admin", "stratus-member", "stratus-reader"]),
        ([], True, {}, ["stratus-admin", "stratus-member", "stratus-reader"]),
        ([{"name": "r"}], True, {"stratus-member": 2}, ["stratus-admin", "stratus-reader"]),
    ],
    ids=["mixed", "disabled-binds-nobody", "no-members", "defaults-user-member"],
)
def test_role_bindings(members, enabled, wanted, unwanted):
    got, not_wanted = identity.role_bindings("p", "ns", members, enabled, OWNER)
    assert {rb["metadata"]["name"]: len(rb["subjects"]) for rb in got} == wanted
    assert not_wanted == unwanted
    for rb in got:
        assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rb["metadata"]["name"]}
        assert rb["metadata"]["namespace"] == "ns"


def test_subjects_per_member_kind():
    user, group, sa = (identity.subjects_for(m, "ns") for m in MEMBERS)
    assert user[0] == {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice@example.org"}
    assert user[1] == {"kind": "ServiceAccount", "name": identity.service_account_for("alice@example.org"), "namespace": "ns"}
    assert group == [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}]
    assert sa == [{"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}]


@pytest.mark.parametrize("user", ["alice", "Alice@Example.org", "x" * 200, "ü", "a--b", "-"])
def test_service_account_names_are_dns_labels_and_distinct(user):
    name = identity.service_account_for(user)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    assert name != identity.service_account_for(user + "x")


@pytest.mark.parametrize(
    "text, seconds",
    [("8h", 28800), ("30m", 1800), ("1d12h", 129600), ("90s", 90), ("1h30m", 5400), ("7d", 604800)],
)
def test_parse_duration(text, seconds):
    assert identity.parse_duration(text) == seconds
    assert re.fullmatch(identity.DURATION_PATTERN, text)


@pytest.mark.parametrize("text", ["", "8", "h", "8 hours", "1.5h", "-1h", "8H"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="duration"):
        identity.parse_duration(text)


def test_kubeconfig_is_ready_to_use():
    access = identity.ClusterAccess(server="https://api.example.org:6443", ca_data="Q0E=")
    doc = yaml.safe_load(identity.kubeconfig(access, "alice", "proj", "tok", "alice@proj"))
    assert doc["current-context"] == "alice@proj"
    assert doc["contexts"][0]["context"] == {"cluster": "stratus", "user": "alice", "namespace": "proj"}
    assert doc["clusters"][0]["cluster"] == {"server": "https://api.example.org:6443", "certificate-authority-data": "Q0E="}
    assert doc["users"][0]["user"] == {"token": "tok"}


def _svc(name, ns="stratus", label=None, port=80, annotations=None, port_name=""):
    return {"metadata": {"name": name, "namespace": ns, "labels": {identity.SERVICE_LABEL: label or name},
                         "annotations": annotations or {}},
            "spec": {"ports": [{"port": port, "name": port_name}]}}


def test_catalog_endpoints():
    services = [
        _svc("stratus-metrics", label="metrics", port=9090),
        _svc("stratus-dashboard", label="dashboard", port=443, port_name="https",
             annotations={identity.SERVICE_URL_ANNOTATION: "https://cloud.example.org"}),
        _svc("other", ns="zzz", label="metrics"),  # a second "metrics": the first by namespace wins
    ]
    got = identity.catalog_endpoints("https://k8s:6443", services, {("stratus", "stratus-metrics")})
    assert [(e["name"], e["url"], e["ready"]) for e in got] == [
        ("kubernetes", "https://k8s:6443", True),
        ("dashboard", "https://cloud.example.org", False),
        ("metrics", "http://stratus-metrics.stratus.svc:9090", True),
    ]


def test_catalog_in_process_endpoints_yield_to_services():
    services = [_svc("stratus-metrics", label="metrics", port=9090)]
    local = [{"name": "metrics", "url": "http://127.0.0.1:9090"}, {"name": "image", "url": "http://127.0.0.1:8081", "type": "image"}]
    got = identity.catalog_endpoints("https://k8s:6443", services, set(), local)
    assert [(e["name"], e["url"]) for e in got] == [
        ("kubernetes", "https://k8s:6443"), ("metrics", "http://stratus-metrics.stratus.svc:9090"), ("image", "http://127.0.0.1:8081")]
    assert got[2]["ready"] is True and got[2]["type"] == "image"

"""Buckets on the real object server: a workload's Secret really writes and reads, quota
and versioning behave, another project's keys cannot reach the bucket, and deleting a
bucket that holds objects is refused until forceDelete."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from botocore.exceptions import ClientError
from kubernetes.client.rest import ApiException

from .kube import wait_for

# Usage and quota are refreshed on a timer; the operator started for this session reads this.
os.environ.setdefault("STRATUS_BUCKET_USAGE_INTERVAL", "3")

CLASS = "default"


def ensure_bucket_class(kube, s3_endpoint, name: str = CLASS, **spec) -> str:
    """A BucketClass on the session's versitygw, its admin Secret in stratus-system."""
    try:
        kube.core.create_namespace({"metadata": {"name": "stratus-system"}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s3-admin-{name}", "namespace": "stratus-system"},
              "stringData": {"accessKey": s3_endpoint.access_key, "secretKey": s3_endpoint.secret_key}}
    try:
        kube.core.create_namespaced_secret("stratus-system", secret)
    except ApiException as exc:
        if exc.status != 409:
            raise
        kube.core.replace_namespaced_secret(secret["metadata"]["name"], "stratus-system", secret)
    body = {"apiVersion": "stratus.dev/v1alpha1", "kind": "BucketClass", "metadata": {"name": name},
            "spec": {"endpoint": s3_endpoint.url, "region": s3_endpoint.region,
                     "credentialsSecret": {"name": f"s3-admin-{name}", "namespace": "stratus-system"}, **spec}}
    if kube.get("bucketclasses", name) is None:
        kube.create("bucketclasses", body)
    else:
        kube.patch("bucketclasses", name, {"spec": body["spec"]})
    return name


@pytest.fixture(scope="module")
def bucket_class(kube, operator, s3_endpoint) -> str:
    name = ensure_bucket_class(kube, s3_endpoint)
    wait_for(lambda: kube.condition(kube.get("bucketclasses", name)).get("status") == "True", 60, what="BucketClass Ready")
    return name


def bound(kube, name, namespace):
    obj = kube.get("buckets", name, namespace)
    return obj if (obj or {}).get("status", {}).get("phase") == "Bound" else None


def make_bucket(kube, namespace, name="data", **spec) -> dict:
    kube.create("buckets", {"kind": "Bucket", "metadata": {"name": name}, "spec": {"bucketClassName": CLASS, **spec}}, namespace)
    return wait_for(lambda: bound(kube, name, namespace), 60, what=f"Bucket {name} Bound")


def workload_client(kube, s3_client, namespace, name):
    """What a pod with envFrom the Bucket's ConfigMap and Secret would use."""
    secret = kube.core.read_namespaced_secret(name, namespace).data
    config = kube.core.read_namespaced_config_map(name, namespace).data
    dec = lambda k: base64.b64decode(secret[k]).decode()  # noqa: E731
    return s3_client(dec("AWS_ACCESS_KEY_ID"), dec("AWS_SECRET_ACCESS_KEY")), config


def force_cleanup(kube, namespace, name):
    if kube.get("buckets", name, namespace):
        kube.patch("buckets", name, {"spec": {"forceDelete": True}}, namespace)
        kube.delete("buckets", name, namespace)
        wait_for(lambda: kube.get("buckets", name, namespace) is None, 60, what="Bucket gone")


def test_api_server_rejects_bad_bucket(kube, crds, namespace):
    for spec, field in [({"bucketClassName": CLASS, "bucketName": "Not_Valid"}, "spec.bucketName"),
                        ({"bucketClassName": CLASS, "access": "World"}, "spec.access"),
                        ({"bucketClassName": CLASS, "quota": {"maxBytes": "1.5GB"}}, "spec.quota.maxBytes")]:
        with pytest.raises(ApiException) as exc:
            kube.create("buckets", {"kind": "Bucket", "metadata": {"name": "bad"}, "spec": spec}, namespace)
        assert exc.value.status == 422 and field in exc.value.body


def test_workload_secret_writes_and_reads_with_versioning(kube, bucket_class, namespace, s3_client, object_store):
    obj = make_bucket(kube, namespace, versioning=True)
    status = obj["status"]
    try:
        assert status["credentials"] == "Scoped" and status["secretName"] == "data" and status["endpoint"]
        assert kube.condition(obj, "CredentialsScoped")["status"] == "True"
        client, config = workload_client(kube, s3_client, namespace, "data")
        bucket = config["BUCKET_NAME"]
        assert bucket == status["bucketName"] and config["AWS_ENDPOINT_URL"] == status["endpoint"]
        client.put_object(Bucket=bucket, Key="hello.txt", Body=b"one")
        client.put_object(Bucket=bucket, Key="hello.txt", Body=b"two")
        assert client.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"two"
        versions = client.list_object_versions(Bucket=bucket, Prefix="hello.txt")["Versions"]
        assert len(versions) == 2
        # Secret and ConfigMap belong to the Bucket; nothing in status is a secret.
        sec = kube.core.read_namespaced_secret("data", namespace)
        assert sec.metadata.owner_references[0].uid == obj["metadata"]["uid"]
        assert base64.b64decode(sec.data["AWS_SECRET_ACCESS_KEY"]).decode() not in str(kube.get("buckets", "data", namespace))
        # Usage is measured: two versions of three bytes.
        usage = wait_for(lambda: (kube.get("buckets", "data", namespace)["status"].get("usage") or {}).get("objects") == 2
                         and kube.get("buckets", "data", namespace)["status"]["usage"], 30, what="usage 2 objects")
        assert usage["bytes"] == 6
    finally:
        force_cleanup(kube, namespace, "data")
    assert not object_store.bucket_exists(status["bucketName"])


def test_quota_blocks_writes_and_lifts(kube, bucket_class, namespace, s3_client):
    obj = make_bucket(kube, namespace, quota={"maxObjects": 2})
    try:
        client, config = workload_client(kube, s3_client, namespace, "data")
        bucket = config["BUCKET_NAME"]
        client.put_object(Bucket=bucket, Key="a", Body=b"a")
        client.put_object(Bucket=bucket, Key="b", Body=b"b")
        blocked = wait_for(lambda: (kube.get("buckets", "data", namespace)["status"].get("quota") or {}).get("writesBlocked")
                           and kube.get("buckets", "data", namespace), 30, what="quota reached")
        assert kube.condition(blocked, "QuotaExceeded")["reason"] == "QuotaReached"
        with pytest.raises(ClientError) as exc:
            client.put_object(Bucket=bucket, Key="c", Body=b"c")
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
        client.delete_object(Bucket=bucket, Key="a")
        wait_for(lambda: not kube.get("buckets", "data", namespace)["status"]["quota"]["writesBlocked"], 30, what="quota lifted")
        client.put_object(Bucket=bucket, Key="c", Body=b"c")
        wait_for(lambda: any(e.reason == "QuotaReached" for e in kube.events_for(namespace, "data", "Bucket")), 15,
                 what="event QuotaReached")
    finally:
        force_cleanup(kube, namespace, "data")


def test_other_projects_keys_cannot_reach_the_bucket(kube, bucket_class, namespace, s3_client):
    other = f"t-other-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace({"metadata": {"name": other}})
    try:
        mine = make_bucket(kube, namespace)
        make_bucket(kube, other)
        client_mine, _ = workload_client(kube, s3_client, namespace, "data")
        client_other, _ = workload_client(kube, s3_client, other, "data")
        client_mine.put_object(Bucket=mine["status"]["bucketName"], Key="secret.txt", Body=b"mine")
        for call in (lambda: client_other.get_object(Bucket=mine["status"]["bucketName"], Key="secret.txt"),
                     lambda: client_other.put_object(Bucket=mine["status"]["bucketName"], Key="x", Body=b"x"),
                     lambda: client_other.list_objects_v2(Bucket=mine["status"]["bucketName"])):
            with pytest.raises(ClientError) as exc:
                call()
            assert exc.value.response["Error"]["Code"] == "AccessDenied"
    finally:
        force_cleanup(kube, namespace, "data")
        force_cleanup(kube, other, "data")
        kube.core.delete_namespace(other)


def test_deleting_a_bucket_with_objects_is_refused_until_force(kube, bucket_class, namespace, s3_client, object_store):
    obj = make_bucket(kube, namespace)
    bucket = obj["status"]["bucketName"]
    client, _ = workload_client(kube, s3_client, namespace, "data")
    client.put_object(Bucket=bucket, Key="keep.txt", Body=b"precious")
    kube.delete("buckets", "data", namespace)
    refused = wait_for(lambda: kube.condition(kube.get("buckets", "data", namespace)).get("reason") == "DeletionRefused"
                       and kube.get("buckets", "data", namespace), 30, what="DeletionRefused")
    message = kube.condition(refused)["message"]
    assert bucket in message and "forceDelete" in message and refused["status"]["phase"] == "Deleting"
    assert b"".join(object_store.iter_object(bucket, "keep.txt")) == b"precious"
    kube.patch("buckets", "data", {"spec": {"forceDelete": True}}, namespace)
    wait_for(lambda: kube.get("buckets", "data", namespace) is None, 60, what="Bucket gone after forceDelete")
    assert not object_store.bucket_exists(bucket)


def test_class_problems_are_conditions_and_heal(kube, bucket_class, namespace, s3_endpoint):
    """A Bucket on a missing class waits (Pending, BucketClassNotFound); a class whose
    Secret is missing says so; once both exist the Bucket is Bound on its own."""
    cls = f"late-{uuid.uuid4().hex[:6]}"
    kube.create("buckets", {"kind": "Bucket", "metadata": {"name": "late"}, "spec": {"bucketClassName": cls}}, namespace)
    pending = wait_for(lambda: kube.condition(kube.get("buckets", "late", namespace)).get("reason") == "BucketClassNotFound"
                       and kube.get("buckets", "late", namespace), 30, what="BucketClassNotFound")
    assert pending["status"]["phase"] == "Pending" and cls in kube.condition(pending)["message"]
    kube.create("bucketclasses", {"kind": "BucketClass", "metadata": {"name": cls},
                                  "spec": {"endpoint": s3_endpoint.url, "credentialsSecret": {"name": f"s3-admin-{cls}", "namespace": "stratus-system"}}})
    try:
        wait_for(lambda: kube.condition(kube.get("bucketclasses", cls)).get("reason") == "SecretNotFound", 30, what="SecretNotFound")
        ensure_bucket_class(kube, s3_endpoint, cls)  # creates the Secret
        wait_for(lambda: bound(kube, "late", namespace), 60, what="Bucket Bound once the class is whole")
    finally:
        force_cleanup(kube, namespace, "late")
        kube.delete("bucketclasses", cls)
        kube.core.delete_namespaced_secret(f"s3-admin-{cls}", "stratus-system")


def test_class_without_scoping_writes_no_credentials(kube, bucket_class, namespace, s3_endpoint):
    cls = f"noscope-{uuid.uuid4().hex[:6]}"
    ensure_bucket_class(kube, s3_endpoint, cls, credentialScoping="None")
    try:
        kube.create("buckets", {"kind": "Bucket", "metadata": {"name": "plain"}, "spec": {"bucketClassName": cls}}, namespace)
        obj = wait_for(lambda: bound(kube, "plain", namespace), 60, what="Bucket Bound")
        cond = kube.condition(obj, "CredentialsScoped")
        assert cond["status"] == "False" and cond["reason"] == "ScopingUnsupported"
        assert obj["status"]["credentials"] == "Unavailable" and obj["status"]["secretName"] == ""
        with pytest.raises(ApiException) as exc:
            kube.core.read_namespaced_secret("plain", namespace)
        assert exc.value.status == 404  # the admin key pair is never handed out
        assert kube.core.read_namespaced_config_map("plain", namespace).data["BUCKET_NAME"] == obj["status"]["bucketName"]
    finally:
        force_cleanup(kube, namespace, "plain")
        kube.delete("bucketclasses", cls)


def test_a_fixed_name_cannot_take_another_projects_bucket(kube, bucket_class, namespace):
    fixed = f"fixed-{uuid.uuid4().hex[:8]}"
    other = f"t-thief-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace({"metadata": {"name": other}})
    try:
        make_bucket(kube, namespace, bucketName=fixed)
        kube.create("buckets", {"kind": "Bucket", "metadata": {"name": "data"},
                                "spec": {"bucketClassName": CLASS, "bucketName": fixed}}, other)
        obj = wait_for(lambda: kube.condition(kube.get("buckets", "data", other)).get("reason") == "BucketNameTaken"
                       and kube.get("buckets", "data", other), 30, what="BucketNameTaken")
        assert obj["status"]["phase"] == "Error" and not obj["status"].get("bucketName")
        with pytest.raises(ApiException):
            kube.core.read_namespaced_secret("data", other)
        # Deleting the refused Bucket leaves the owner's bucket alone.
        kube.delete("buckets", "data", other)
        wait_for(lambda: kube.get("buckets", "data", other) is None, 30, what="refused Bucket deleted")
        assert bound(kube, "data", namespace)
    finally:
        force_cleanup(kube, namespace, "data")
        kube.core.delete_namespace(other)

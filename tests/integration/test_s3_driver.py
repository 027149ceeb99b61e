"""The S3 driver against a real versitygw server (no Kubernetes needed), and the in-memory fake's
contract: the cases at the end run against both."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import random
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from stratus.drivers.s3 import (
    AdminCredentials,
    MiB,
    BucketNotEmpty,
    InvalidBucketName,
    NoSuchBucket,
    NoSuchKey,
    ObjectStore,
    QuotaMode,
    S3ObjectStore,
    UnsupportedRegion,
    scoped_access_key,
)
from stratus.dev.s3server import S3Server
from tests.fakes.s3 import InMemoryObjectStore

pytestmark = pytest.mark.integration


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def put(store: S3ObjectStore, bucket: str, key: str, data: bytes) -> None:
    store.put_object_stream(bucket, key, [data])


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ensure_bucket_creates_once_and_converges(object_store, bucket_name):
    first = object_store.ensure_bucket(bucket_name)
    again = object_store.ensure_bucket(bucket_name)
    assert (first.created, again.created) == (True, False)
    assert object_store.bucket_exists(bucket_name)
    assert again.versioning is None
    assert object_store.bucket_usage(bucket_name) == (0, 0)


def test_region_other_than_the_servers_is_refused(object_store, bucket_name):
    with pytest.raises(UnsupportedRegion, match="eu-west-1"):
        object_store.ensure_bucket(bucket_name, region="eu-west-1")
    assert object_store.ensure_bucket(bucket_name, region=object_store.region).created


def test_versioning_keeps_both_versions(object_store, bucket_name, s3_endpoint, s3_client):
    result = object_store.ensure_bucket(bucket_name, versioning=True)
    assert result.versioning == "Enabled"
    v1 = object_store.put_object_stream(bucket_name, "doc", [b"first"])
    v2 = object_store.put_object_stream(bucket_name, "doc", [b"second!"])
    assert v1.version_id and v2.version_id and v1.version_id != v2.version_id

    root = s3_client(s3_endpoint.access_key, s3_endpoint.secret_key)
    versions = root.list_object_versions(Bucket=bucket_name)["Versions"]
    assert sorted((v["VersionId"], v["Size"]) for v in versions) == sorted(
        [(v1.version_id, 5), (v2.version_id, 7)]
    )
    assert b"".join(object_store.iter_object(bucket_name, "doc")) == b"second!"
    assert b"".join(object_store.iter_object(bucket_name, "doc", version_id=v1.version_id)) == b"first"

    # Turning versioning off suspends it (S3 cannot go back to unversioned).
    assert object_store.ensure_bucket(bucket_name, versioning=False).versioning == "Suspended"


def test_scoped_credentials_reach_their_bucket_only(object_store, bucket_name, s3_client):
    other = bucket_name + "-other"
    object_store.ensure_bucket(bucket_name)
    object_store.ensure_bucket(other)
    try:
        put(object_store, other, "secret.txt", b"not yours")
        creds = object_store.create_scoped_credentials(bucket_name)
        assert creds.access_key == scoped_access_key(bucket_name)
        assert creds.secret_key not in repr(creds)
        # Idempotent: the same pair again, not a new account.
        assert object_store.create_scoped_credentials(bucket_name) == creds
        assert object_store.list_scoped_credentials(bucket_name) == [creds.access_key]

        tenant = s3_client(creds.access_key, creds.secret_key)
        tenant.put_object(Bucket=bucket_name, Key="mine.txt", Body=b"hello")
        assert tenant.get_object(Bucket=bucket_name, Key="mine.txt")["Body"].read() == b"hello"
        assert [o["Key"] for o in tenant.list_objects_v2(Bucket=bucket_name)["Contents"]] == ["mine.txt"]

        for call in (
            lambda: tenant.get_object(Bucket=other, Key="secret.txt"),
            lambda: tenant.put_object(Bucket=other, Key="x", Body=b"x"),
            lambda: tenant.list_objects_v2(Bucket=other),
            # Nor may it change its own bucket's policy, tags (the quota) or versioning.
            lambda: tenant.put_bucket_policy(Bucket=bucket_name, Policy="{}"),
            lambda: tenant.delete_bucket_tagging(Bucket=bucket_name),
            lambda: tenant.put_bucket_versioning(
                Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"}
            ),
        ):
            with pytest.raises(ClientError) as exc:
                call()
            assert error_code(exc) == "AccessDenied"

        object_store.delete_scoped_credentials(bucket_name, creds.access_key)
        object_store.delete_scoped_credentials(bucket_name, creds.access_key)  # idempotent
        assert object_store.list_scoped_credentials(bucket_name) == []
        with pytest.raises(ClientError) as exc:
            tenant.get_object(Bucket=bucket_name, Key="mine.txt")
        assert error_code(exc) == "InvalidAccessKeyId"
    finally:
        object_store.delete_bucket(other, force=True)


def test_scoped_credentials_need_the_bucket(object_store, bucket_name):
    with pytest.raises(NoSuchBucket):
        object_store.create_scoped_credentials(bucket_name)


def test_usage_counts_stored_versions_and_bytes(object_store, bucket_name):
    object_store.ensure_bucket(bucket_name, versioning=True)
    put(object_store, bucket_name, "a", b"x" * 100)
    put(object_store, bucket_name, "a", b"x" * 50)  # a second version of a
    put(object_store, bucket_name, "b/c", b"y" * 7)
    assert object_store.bucket_usage(bucket_name) == (3, 157)
    object_store.delete_object(bucket_name, "b/c")  # a delete marker; the data stays
    assert object_store.bucket_usage(bucket_name) == (3, 157)
    with pytest.raises(NoSuchBucket):
        object_store.bucket_usage(bucket_name + "-missing")


def test_quota_is_enforced_by_blocking_tenant_writes(object_store, bucket_name, s3_client):
    object_store.ensure_bucket(bucket_name)
    assert object_store.set_quota(bucket_name, max_objects=2, max_bytes=10 * MiB) is QuotaMode.OPERATOR
    assert object_store.capabilities.quota is QuotaMode.OPERATOR
    creds = object_store.create_scoped_credentials(bucket_name)
    tenant = s3_client(creds.access_key, creds.secret_key)

    tenant.put_object(Bucket=bucket_name, Key="1", Body=b"a")
    status = object_store.check_quota(bucket_name)
    assert (status.exceeded, status.writes_blocked, status.usage) == (False, False, (1, 1))

    tenant.put_object(Bucket=bucket_name, Key="2", Body=b"b")
    status = object_store.check_quota(bucket_name)
    assert (status.exceeded, status.writes_blocked) == (True, True)
    assert "2/2 objects" in status.message

    for call in (
        lambda: tenant.put_object(Bucket=bucket_name, Key="3", Body=b"c"),
        lambda: tenant.create_multipart_upload(Bucket=bucket_name, Key="big"),
        lambda: tenant.copy_object(Bucket=bucket_name, Key="copy", CopySource=f"{bucket_name}/1"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == "AccessDenied"
    # Reads and deletes still work, and the operator (root) is not blocked.
    assert tenant.get_object(Bucket=bucket_name, Key="1")["Body"].read() == b"a"
    tenant.delete_object(Bucket=bucket_name, Key="2")
    status = object_store.check_quota(bucket_name)
    assert (status.exceeded, status.writes_blocked) == (False, False)
    tenant.put_object(Bucket=bucket_name, Key="3", Body=b"c")

    # Byte limit, and removing the limits lifts the block.
    object_store.set_quota(bucket_name, max_bytes=2)
    assert object_store.check_quota(bucket_name).writes_blocked
    object_store.set_quota(bucket_name)
    status = object_store.check_quota(bucket_name)
    assert (status.max_bytes, status.max_objects, status.writes_blocked) == (None, None, False)
    assert status.message == "no quota"


def test_delete_bucket_refused_when_not_empty_unless_forced(object_store, bucket_name, s3_client):
    object_store.ensure_bucket(bucket_name, versioning=True)
    put(object_store, bucket_name, "k", b"1")
    put(object_store, bucket_name, "k", b"22")
    object_store.delete_object(bucket_name, "k")
    creds = object_store.create_scoped_credentials(bucket_name)
    root_upload = object_store._client.create_multipart_upload(Bucket=bucket_name, Key="pending")

    with pytest.raises(BucketNotEmpty, match="2 objects, 3 bytes.*force") as exc:
        object_store.delete_bucket(bucket_name)
    assert exc.value.usage == (2, 3)
    assert object_store.bucket_exists(bucket_name)

    assert object_store.delete_bucket(bucket_name, force=True) is True
    assert not object_store.bucket_exists(bucket_name)
    assert object_store.delete_bucket(bucket_name, force=True) is False  # idempotent
    # Its credentials went with it.
    with pytest.raises(ClientError) as err:
        s3_client(creds.access_key, creds.secret_key).list_objects_v2(Bucket=bucket_name)
    assert error_code(err) == "InvalidAccessKeyId"
    assert root_upload["UploadId"]


def test_delete_of_an_emptied_versioned_bucket_needs_no_force(object_store, bucket_name):
    object_store.ensure_bucket(bucket_name, versioning=True)
    result = object_store.put_object_stream(bucket_name, "k", [b"data"])
    object_store.delete_object(bucket_name, "k")  # leaves a delete marker
    object_store.delete_object(bucket_name, "k", version_id=result.version_id)
    assert object_store.bucket_usage(bucket_name) == (0, 0)
    assert object_store.delete_bucket(bucket_name) is True


def _generated(total: int, chunk: int, digest: hashlib._Hash) -> Iterator[bytes]:
    rng = random.Random(20261125)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        data = rng.randbytes(n)
        digest.update(data)
        sent += n
        yield data


def test_streaming_multipart_upload_keeps_memory_bounded(object_store, bucket_name):
    object_store.ensure_bucket(bucket_name)
    total, part = 50 * MiB, 8 * MiB
    sent = hashlib.sha256()
    tracemalloc.start()
    try:
        result = object_store.put_object_stream(
            bucket_name,
            "images/disk.raw",
            _generated(total, 1 * MiB + 17, sent),  # odd chunk size: parts span chunks
            content_type="application/octet-stream",
            metadata={"format": "raw"},
            part_size=part,
        )
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        received = hashlib.sha256()
        size = 0
        for chunk in object_store.iter_object(bucket_name, "images/disk.raw", chunk_size=MiB):
            received.update(chunk)
            size += len(chunk)
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (result.size, result.parts) == (total, 7)
    assert (size, received.hexdigest()) == (total, sent.hexdigest())
    # About two parts (the one being read and the one being sent), never the whole 50 MiB.
    assert upload_peak < 3 * part, f"upload peak {upload_peak / MiB:.1f} MiB"
    assert download_peak < 8 * MiB, f"download peak {download_peak / MiB:.1f} MiB"
    info = object_store.stat_object(bucket_name, "images/disk.raw")
    assert info is not None
    assert (info.size, info.content_type, info.metadata) == (total, "application/octet-stream", {"format": "raw"})
    assert object_store._client.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []


def test_failed_stream_aborts_the_upload(object_store, bucket_name):
    object_store.ensure_bucket(bucket_name)

    def broken() -> Iterator[bytes]:
        yield b"x" * (6 * MiB)
        raise OSError("source went away")

    with pytest.raises(OSError, match="source went away"):
        object_store.put_object_stream(bucket_name, "partial", broken(), part_size=5 * MiB)
    assert object_store._client.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []
    assert object_store.stat_object(bucket_name, "partial") is None


def test_small_stream_is_a_single_put(object_store, bucket_name):
    object_store.ensure_bucket(bucket_name)
    result = object_store.put_object_stream(bucket_name, "small", iter([b"ab", b"", b"cd"]))
    assert (result.size, result.parts) == (4, 0)
    assert b"".join(object_store.iter_object(bucket_name, "small")) == b"abcd"
    with pytest.raises(NoSuchKey):
        object_store.iter_object(bucket_name, "absent")


def test_presigned_get_url_and_public_read(object_store, bucket_name, s3_endpoint):
    object_store.ensure_bucket(bucket_name)
    put(object_store, bucket_name, "pic.png", b"\x89PNG")
    plain = f"{s3_endpoint.url}/{bucket_name}/pic.png"
    assert http_get(plain)[0] == 403

    url = object_store.presigned_get_url(bucket_name, "pic.png", expires_in=60)
    assert http_get(url) == (200, b"\x89PNG")

    assert object_store.ensure_bucket(bucket_name, public_read=True).public_read
    assert http_get(plain) == (200, b"\x89PNG")
    assert http_get(f"{s3_endpoint.url}/{bucket_name}")[0] == 403  # reading is not listing
    object_store.ensure_bucket(bucket_name, public_read=False)
    assert http_get(plain)[0] == 403


def test_policy_statements_of_others_are_kept(object_store, bucket_name):
    object_store.ensure_bucket(bucket_name)
    foreign = {
        "Sid": "SomeoneElse",
        "Effect": "Allow",
        "Principal": "*",
        "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket_name}/shared/*"],
    }
    object_store._client.put_bucket_policy(
        Bucket=bucket_name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [foreign]})
    )
    object_store.ensure_bucket(bucket_name, public_read=True)
    object_store.create_scoped_credentials(bucket_name)
    object_store.ensure_bucket(bucket_name, public_read=False)
    policy = json.loads(object_store._client.get_bucket_policy(Bucket=bucket_name)["Policy"])
    sids = [s["Sid"] for s in policy["Statement"]]
    assert "SomeoneElse" in sids and "StratusPublicRead" not in sids
    assert any(s.startswith("StratusAccess") for s in sids)


def test_lifecycle_is_left_to_the_operator(object_store, bucket_name):
    result = object_store.ensure_bucket(bucket_name, lifecycle_expiration_days=1)
    assert result.lifecycle_native is False
    assert object_store.capabilities.native_lifecycle is False
    put(object_store, bucket_name, "old", b"1")
    put(object_store, bucket_name, "older", b"2")
    assert object_store.expire_objects(bucket_name, 1) == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert object_store.expire_objects(bucket_name, 1, now=later) == 2
    assert object_store.bucket_usage(bucket_name) == (0, 0)


def test_launcher_restarts_on_the_same_data_with_the_same_keys(tmp_path):
    with S3Server(tmp_path / "s3") as first:
        store = S3ObjectStore.for_versitygw(
            AdminCredentials(first.url, first.region, first.access_key, first.secret_key)
        )
        store.ensure_bucket("kept")
        creds = store.create_scoped_credentials("kept")
        put(store, "kept", "k", b"survives")
    server = S3Server(tmp_path / "s3")
    second = server.start()
    try:
        assert (second.access_key, second.secret_key) == (first.access_key, first.secret_key)
        store = S3ObjectStore.for_versitygw(
            AdminCredentials(second.url, second.region, second.access_key, second.secret_key)
        )
        assert b"".join(store.iter_object("kept", "k")) == b"survives"
        assert store.create_scoped_credentials("kept") == creds
        assert (server.credentials_file.stat().st_mode & 0o777) == 0o600
        assert (server.data_dir.stat().st_mode & 0o777) == 0o700
        log_text = server.log_path.read_text()
        assert first.secret_key not in log_text and creds.secret_key not in log_text
        assert first.secret_key not in repr(second)
    finally:
        server.stop()
    server.stop()  # idempotent
    assert not server.running


# ---------------------------------------------------------------------------------------
# The in-memory fake's contract: the same cases against versitygw and against the fake
# (tests/fakes/s3.py, which the controllers' unit tests use), so that what the fake does
# is what the driver does on a real server.
# ---------------------------------------------------------------------------------------


@pytest.fixture(params=["versitygw", "fake"])
def store(request: pytest.FixtureRequest, object_store: S3ObjectStore) -> ObjectStore:
    return object_store if request.param == "versitygw" else InMemoryObjectStore()


def test_contract_capabilities(store, bucket_name):
    store.ensure_bucket(bucket_name, lifecycle_expiration_days=3)
    assert isinstance(store, ObjectStore)
    caps = store.capabilities
    assert (caps.versioning, caps.scoped_credentials, caps.quota, caps.native_lifecycle) == (
        True,
        True,
        QuotaMode.OPERATOR,
        False,
    )


def test_contract_ensure_bucket_is_idempotent_and_validates(store, bucket_name):
    assert store.ensure_bucket(bucket_name).created
    result = store.ensure_bucket(bucket_name, public_read=True, lifecycle_expiration_days=3)
    assert (result.created, result.public_read, result.lifecycle_native) == (False, True, False)
    with pytest.raises(InvalidBucketName):
        store.ensure_bucket("Bad_Name")
    with pytest.raises(UnsupportedRegion):
        store.ensure_bucket(bucket_name, region="eu-west-1")


def test_contract_versioning_keeps_versions_and_suspends(store, bucket_name):
    assert store.ensure_bucket(bucket_name, versioning=True).versioning == "Enabled"
    v1 = store.put_object_stream(bucket_name, "a", [b"one"])
    v2 = store.put_object_stream(bucket_name, "a", [b"three"])
    assert None is not v1.version_id != v2.version_id is not None
    assert b"".join(store.iter_object(bucket_name, "a", version_id=v1.version_id)) == b"one"
    assert b"".join(store.iter_object(bucket_name, "a")) == b"three"
    store.delete_object(bucket_name, "a")
    assert store.stat_object(bucket_name, "a") is None
    assert store.bucket_usage(bucket_name) == (2, 8)
    assert store.ensure_bucket(bucket_name).versioning == "Suspended"


def test_contract_unversioned_bucket_overwrites(store, bucket_name):
    store.ensure_bucket(bucket_name)
    store.put_object_stream(bucket_name, "k", [b"1"])
    store.put_object_stream(bucket_name, "k", [b"22"])
    assert store.bucket_usage(bucket_name) == (1, 2)
    assert store.stat_object(bucket_name, "k").version_id is None
    store.delete_object(bucket_name, "k")
    assert store.bucket_usage(bucket_name) == (0, 0)
    with pytest.raises(NoSuchKey):
        store.iter_object(bucket_name, "k")


def test_contract_scoped_credentials_are_idempotent(store, bucket_name):
    store.ensure_bucket(bucket_name)
    creds = store.create_scoped_credentials(bucket_name)
    assert store.create_scoped_credentials(bucket_name) == creds
    assert creds.secret_key not in repr(creds)
    assert store.list_scoped_credentials(bucket_name) == [creds.access_key]
    store.delete_scoped_credentials(bucket_name, creds.access_key)
    store.delete_scoped_credentials(bucket_name, creds.access_key)
    assert store.list_scoped_credentials(bucket_name) == []
    with pytest.raises(NoSuchBucket):
        store.create_scoped_credentials(f"{bucket_name}-absent")


def test_contract_quota_blocks_writes_until_usage_drops(store, bucket_name):
    store.ensure_bucket(bucket_name)
    assert store.set_quota(bucket_name, max_objects=1) is QuotaMode.OPERATOR
    store.put_object_stream(bucket_name, "1", [b"a"])
    status = store.check_quota(bucket_name)
    assert (status.exceeded, status.writes_blocked, status.message) == (
        True,
        True,
        "1/1 objects: quota reached, writes refused",
    )
    assert store.check_quota(bucket_name, enforce=False).writes_blocked
    store.delete_object(bucket_name, "1")
    assert not store.check_quota(bucket_name).writes_blocked
    store.set_quota(bucket_name)
    assert store.check_quota(bucket_name).message == "no quota"
    with pytest.raises(ValueError):
        store.set_quota(bucket_name, max_bytes=-1)


def test_contract_delete_bucket_refuses_content_unless_forced(store, bucket_name):
    store.ensure_bucket(bucket_name, versioning=True)
    store.put_object_stream(bucket_name, "k", [b"abc"])
    store.create_scoped_credentials(bucket_name)
    with pytest.raises(BucketNotEmpty, match="1 objects, 3 bytes") as exc:
        store.delete_bucket(bucket_name)
    assert exc.value.usage == (1, 3)
    assert store.delete_bucket(bucket_name, force=True) is True
    assert store.delete_bucket(bucket_name, force=True) is False
    assert not store.bucket_exists(bucket_name)


def test_contract_delete_markers_alone_do_not_block_deletion(store, bucket_name):
    store.ensure_bucket(bucket_name, versioning=True)
    put = store.put_object_stream(bucket_name, "k", [b"x"])
    store.delete_object(bucket_name, "k")
    store.delete_object(bucket_name, "k", version_id=put.version_id)
    assert store.delete_bucket(bucket_name) is True


def test_contract_expire_objects_by_age(store, bucket_name):
    store.ensure_bucket(bucket_name)
    store.put_object_stream(bucket_name, "old", [b"1"])
    now = dt.datetime.now(dt.UTC)
    assert store.expire_objects(bucket_name, 3, now=now + dt.timedelta(days=2)) == 0
    assert store.expire_objects(bucket_name, 3, now=now + dt.timedelta(days=4)) == 1
    assert store.stat_object(bucket_name, "old") is None


def test_contract_streaming_put_counts_parts(store, bucket_name):
    store.ensure_bucket(bucket_name)
    big = store.put_object_stream(bucket_name, "disk", io.BytesIO(b"x" * (11 * MiB)), part_size=5 * MiB)
    assert (big.size, big.parts) == (11 * MiB, 3)
    small = store.put_object_stream(bucket_name, "tiny", [b"ab", b"c"], content_type="text/plain")
    assert (small.size, small.parts) == (3, 0)
    info = store.stat_object(bucket_name, "tiny")
    assert (info.size, info.content_type) == (3, "text/plain")
    assert [len(c) for c in store.iter_object(bucket_name, "disk", chunk_size=4 * MiB)] == [4 * MiB, 4 * MiB, 3 * MiB]


def test_contract_missing_bucket_is_reported(store, bucket_name):
    absent = f"{bucket_name}-absent"
    for call in (
        lambda: store.bucket_usage(absent),
        lambda: store.set_quota(absent, max_bytes=1),
        lambda: store.check_quota(absent),
        lambda: store.put_object_stream(absent, "k", [b"x"]),
    ):
        with pytest.raises(NoSuchBucket, match=f"'{absent}'"):
            call()
    assert store.delete_bucket(absent) is False
    assert not store.bucket_exists(absent)

"""The in-memory object store and the driver's pure helpers (no network)."""

from __future__ import annotations

import datetime as dt
import io

import pytest

from tests.fakes.s3 import InMemoryObjectStore
from stratus.drivers.s3 import (
    MIN_PART_SIZE,
    SCOPED_KEY_PREFIX,
    AccessDenied,
    AdminCredentials,
    BucketNotEmpty,
    InvalidBucketName,
    ManagedPolicy,
    MiB,
    NoSuchBucket,
    NoSuchKey,
    S3DriverError,
    ObjectStore,
    QuotaMode,
    Usage,
    UnsupportedRegion,
    _ChunkReader,
    _part_size_for,
    quota_exceeded,
    scoped_access_key,
    validate_bucket_name,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> InMemoryObjectStore:
    return InMemoryObjectStore(clock=clock)


# -- pure helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["abc", "my-bucket", "a.b.c", "x" * 63, "0day", "proj-1.images"],
)
def test_valid_bucket_names(name):
    validate_bucket_name(name)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("ab", "3 to 63"),
        ("x" * 64, "3 to 63"),
        ("My-Bucket", "lowercase"),
        ("under_score", "lowercase"),
        ("-start", "start and end"),
        ("end-", "start and end"),
        ("a..b", "'..'"),
        ("a.-b", "'..'"),
        ("192.168.1.1", "IP address"),
    ],
)
def test_invalid_bucket_names(name, why):
    with pytest.raises(InvalidBucketName, match=why):
        validate_bucket_name(name)


def test_scoped_access_key_is_stable_and_distinct():
    key = scoped_access_key("photos")
    assert key == scoped_access_key("photos", "default")
    assert key.startswith(SCOPED_KEY_PREFIX) and len(key) == 20 and key.isalnum()
    assert len({key, scoped_access_key("photos", "ci"), scoped_access_key("photos2")}) == 3


@pytest.mark.parametrize(
    ("usage", "max_bytes", "max_objects", "exceeded"),
    [
        ((0, 0), None, None, False),
        ((5, 100), 101, None, False),
        ((5, 100), 100, None, True),  # at the limit: no room for another byte
        ((5, 100), None, 6, False),
        ((5, 100), None, 5, True),
        ((5, 100), 1000, 5, True),
        ((0, 0), 0, None, True),
    ],
)
def test_quota_exceeded(usage, max_bytes, max_objects, exceeded):
    assert quota_exceeded(Usage(*usage), max_bytes, max_objects) is exceeded


def test_managed_policy_round_trip_keeps_foreign_statements():
    foreign = {"Sid": "Theirs", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "x"}
    policy = ManagedPolicy(public_read=True, write_blocked=True, credentials=["SXA", "SXB"], foreign=[foreign])
    document = policy.render("b1")
    assert document is not None
    assert [s["Sid"] for s in document["Statement"]] == [
        "StratusQuotaBlock",
        "StratusPublicRead",
        "StratusAccessSXA",
        "StratusAccessSXB",
        "Theirs",
    ]
    access = document["Statement"][2]
    assert access["Principal"] == {"AWS": ["SXA"]}
    assert access["Resource"] == ["arn:aws:s3:::b1", "arn:aws:s3:::b1/*"]
    assert "s3:PutBucketPolicy" not in access["Action"] and "s3:PutObject" in access["Action"]
    assert ManagedPolicy.parse(document) == policy
    assert ManagedPolicy().render("b1") is None
    assert ManagedPolicy.parse(None) == ManagedPolicy()


def _chunks(reader: _ChunkReader, n: int) -> list[bytes]:
    out = []
    while chunk := reader.read_exact(n):
        out.append(chunk)
    return out


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda: io.BytesIO(b"abcdefghij"), id="file"),
        pytest.param(lambda: [b"abc", b"", b"defg", b"h", b"ij"], id="chunks-with-empty"),
        pytest.param(lambda: iter([b"abcdefghij"]), id="one-chunk"),
        pytest.param(lambda: (bytes([c]) for c in b"abcdefghij"), id="bytewise"),
    ],
)
def test_chunk_reader_gives_exact_parts(source):
    assert _chunks(_ChunkReader(source()), 4) == [b"abcd", b"efgh", b"ij"]


def test_chunk_reader_handles_short_reads():
    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.data = b"0123456789"

        def read(self, n: int = -1) -> bytes:  # at most 3 bytes a call, like a pipe
            out, self.data = self.data[: min(n, 3)], self.data[min(n, 3) :]
            return out

    assert _chunks(_ChunkReader(Trickle()), 5) == [b"01234", b"56789"]


def test_part_size_grows_to_fit_the_part_limit():
    assert _part_size_for(1, None) == MIN_PART_SIZE
    assert _part_size_for(16 * MiB, 10 * MiB) == 16 * MiB
    huge = 1024**4  # 1 TiB does not fit 10,000 parts of 16 MiB
    assert _part_size_for(16 * MiB, huge) * 9_999 >= huge


# -- the fake store ----------------------------------------------------------------------


def test_fake_is_an_object_store(store):
    assert isinstance(store, ObjectStore)
    caps = store.capabilities
    assert (caps.versioning, caps.scoped_credentials, caps.quota, caps.native_lifecycle) == (
        True,
        True,
        QuotaMode.OPERATOR,
        False,
    )


def test_ensure_bucket_is_idempotent_and_validates(store):
    assert store.ensure_bucket("photos").created
    result = store.ensure_bucket("photos", public_read=True, lifecycle_expiration_days=3)
    assert (result.created, result.public_read, result.lifecycle_native) == (False, True, False)
    with pytest.raises(InvalidBucketName):
        store.ensure_bucket("Bad_Name")
    with pytest.raises(UnsupportedRegion):
        store.ensure_bucket("photos", region="eu-west-1")


def test_versioning_keeps_versions_and_suspends(store):
    assert store.ensure_bucket("docs", versioning=True).versioning == "Enabled"
    v1 = store.put_object_stream("docs", "a", [b"one"])
    v2 = store.put_object_stream("docs", "a", [b"three"])
    assert v1.version_id != v2.version_id
    assert store.list_versions("docs", "a") == [(v1.version_id, 3), (v2.version_id, 5)]
    assert b"".join(store.iter_object("docs", "a", version_id=v1.version_id)) == b"one"
    store.delete_object("docs", "a")
    assert store.stat_object("docs", "a") is None
    assert store.bucket_usage("docs") == (2, 8)
    assert store.ensure_bucket("docs").versioning == "Suspended"


def test_unversioned_bucket_overwrites(store):
    store.ensure_bucket("plain")
    store.put_object_stream("plain", "k", [b"1"])
    store.put_object_stream("plain", "k", [b"22"])
    assert store.bucket_usage("plain") == (1, 2)
    assert store.stat_object("plain", "k").version_id is None
    store.delete_object("plain", "k")
    assert store.bucket_usage("plain") == (0, 0)
    with pytest.raises(NoSuchKey):
        store.iter_object("plain", "k")


def test_scoped_credentials_are_idempotent_and_scoped(store):
    store.ensure_bucket("mine")
    store.ensure_bucket("theirs")
    store.put_object_stream("theirs", "t", [b"private"])
    creds = store.create_scoped_credentials("mine")
    assert store.create_scoped_credentials("mine") == creds
    assert creds.secret_key not in repr(creds)
    store.client_put(creds.access_key, creds.secret_key, "mine", "k", b"v")
    assert store.client_get(creds.access_key, creds.secret_key, "mine", "k") == b"v"
    with pytest.raises(AccessDenied):
        store.client_get(creds.access_key, creds.secret_key, "theirs", "t")
    with pytest.raises(AccessDenied):
        store.client_put(creds.access_key, "wrong-secret", "mine", "k", b"v")
    store.delete_scoped_credentials("mine", creds.access_key)
    store.delete_scoped_credentials("mine", creds.access_key)
    assert store.list_scoped_credentials("mine") == []
    with pytest.raises(AccessDenied):
        store.client_get(creds.access_key, creds.secret_key, "mine", "k")
    with pytest.raises(NoSuchBucket):
        store.create_scoped_credentials("absent")


def test_quota_blocks_tenant_writes_until_usage_drops(store):
    store.ensure_bucket("quota-b")
    assert store.set_quota("quota-b", max_objects=1) is QuotaMode.OPERATOR
    creds = store.create_scoped_credentials("quota-b")
    store.client_put(creds.access_key, creds.secret_key, "quota-b", "1", b"a")
    status = store.check_quota("quota-b")
    assert (status.exceeded, status.writes_blocked, status.message) == (
        True,
        True,
        "1/1 objects: quota reached, writes refused",
    )
    with pytest.raises(AccessDenied, match="quota"):
        store.client_put(creds.access_key, creds.secret_key, "quota-b", "2", b"b")
    assert store.check_quota("quota-b", enforce=False).writes_blocked
    store.delete_object("quota-b", "1")
    assert not store.check_quota("quota-b").writes_blocked
    store.set_quota("quota-b")
    assert store.check_quota("quota-b").message == "no quota"
    with pytest.raises(ValueError):
        store.set_quota("quota-b", max_bytes=-1)


def test_delete_bucket_refuses_content_unless_forced(store):
    store.ensure_bucket("full", versioning=True)
    store.put_object_stream("full", "k", [b"abc"])
    creds = store.create_scoped_credentials("full")
    with pytest.raises(BucketNotEmpty, match="1 objects, 3 bytes") as exc:
        store.delete_bucket("full")
    assert exc.value.usage == (1, 3)
    assert store.delete_bucket("full", force=True) is True
    assert store.delete_bucket("full", force=True) is False
    assert creds.access_key not in store.accounts


def test_delete_markers_alone_do_not_block_deletion(store):
    store.ensure_bucket("vers", versioning=True)
    put = store.put_object_stream("vers", "k", [b"x"])
    store.delete_object("vers", "k")
    store.delete_object("vers", "k", version_id=put.version_id)
    assert store.delete_bucket("vers") is True


def test_expire_objects_uses_the_clock(store, clock):
    store.ensure_bucket("exp")
    store.put_object_stream("exp", "old", [b"1"])
    clock.now = T0 + dt.timedelta(days=5)
    store.put_object_stream("exp", "new", [b"2"])
    assert store.expire_objects("exp", 3) == 1
    assert store.stat_object("exp", "old") is None and store.stat_object("exp", "new") is not None


def test_streaming_put_counts_parts(store):
    store.ensure_bucket("img")
    big = store.put_object_stream("img", "disk", io.BytesIO(b"x" * (11 * MiB)), part_size=5 * MiB)
    assert (big.size, big.parts) == (11 * MiB, 3)
    small = store.put_object_stream("img", "tiny", [b"ab", b"c"], content_type="text/plain")
    assert (small.size, small.parts) == (3, 0)
    info = store.stat_object("img", "tiny")
    assert (info.size, info.content_type) == (3, "text/plain")
    assert [len(c) for c in store.iter_object("img", "disk", chunk_size=4 * MiB)] == [4 * MiB, 4 * MiB, 3 * MiB]


def test_presigned_url_and_public_read(store):
    store.ensure_bucket("pub")
    store.put_object_stream("pub", "a b.txt", [b"hi"])
    url = store.presigned_get_url("pub", "a b.txt", expires_in=60)
    assert url.startswith("memory://objectstore/pub/a%20b.txt?expires=")
    with pytest.raises(AccessDenied):
        store.public_get("pub", "a b.txt")
    store.ensure_bucket("pub", public_read=True)
    assert store.public_get("pub", "a b.txt") == b"hi"


def test_fail_next_injects_one_error(store):
    store.fail_next("ensure_bucket", TimeoutError("server slow"))
    with pytest.raises(TimeoutError):
        store.ensure_bucket("later")
    assert store.ensure_bucket("later").created
    with pytest.raises(AttributeError):
        store.fail_next("no_such_method", RuntimeError())


def test_missing_bucket_is_reported(store):
    for call in (
        lambda: store.bucket_usage("nope"),
        lambda: store.set_quota("nope", max_bytes=1),
        lambda: store.check_quota("nope"),
        lambda: store.put_object_stream("nope", "k", [b"x"]),
    ):
        with pytest.raises(NoSuchBucket, match="'nope'"):
            call()
    assert store.delete_bucket("nope") is False
    assert not store.bucket_exists("nope")


def test_admin_credentials_from_env_hide_the_secret():
    env = {
        "STRATUS_S3_ENDPOINT": "http://127.0.0.1:9000",
        "STRATUS_S3_ACCESS_KEY": "ak",
        "STRATUS_S3_SECRET_KEY": "sk-1",
    }
    creds = AdminCredentials.from_env(env)
    assert (creds.endpoint_url, creds.region, creds.access_key) == ("http://127.0.0.1:9000", "us-east-1", "ak")
    assert "sk-1" not in repr(creds)
    with pytest.raises(S3DriverError, match="STRATUS_S3_SECRET_KEY"):
        AdminCredentials.from_env({"STRATUS_S3_ENDPOINT": "x", "STRATUS_S3_ACCESS_KEY": "ak"})

"""The S3 driver's pure helpers (no network).

The in-memory fake (tests/fakes/s3.py) is tested in tests/integration/test_s3_driver.py, where
the same contract cases run against it and against a real versitygw.
"""

from __future__ import annotations

import io

import pytest

from stratus.drivers.s3 import (
    MIN_PART_SIZE,
    SCOPED_KEY_PREFIX,
    AdminCredentials,
    InvalidBucketName,
    ManagedPolicy,
    MiB,
    S3DriverError,
    Usage,
    _ChunkReader,
    _part_size_for,
    quota_exceeded,
    scoped_access_key,
    validate_bucket_name,
)

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

"""The usage ledger's S3 store against the real object server (versitygw): records are
written once, never overwritten, read back in order, and verify end to end."""

from __future__ import annotations

import pytest

from stratus.core.ledger import Keyring, RecordConflict, verify
from stratus.drivers.ledger_store import S3LedgerStore

from ..unit.test_ledger import KEY_A, chain


@pytest.fixture
def store(object_store, s3_client, s3_endpoint, bucket_name) -> S3LedgerStore:
    object_store.ensure_bucket(bucket_name)
    client = s3_client(s3_endpoint.access_key, s3_endpoint.secret_key)
    return S3LedgerStore(client, bucket_name, prefix="ledger/")


def test_s3_store_is_append_only_and_ordered(store):
    records = chain(4) + chain(2, project="other")
    assert store.projects() == [] and store.last_id("demo") is None
    for r in reversed(records):  # written out of order, listed in order
        assert store.put(r.id, r.data) is True
    assert store.put(records[0].id, records[0].data) is False  # the same bytes again: no-op
    with pytest.raises(RecordConflict):
        store.put(records[0].id, records[1].data)  # different bytes under an existing id
    assert store.get(records[0].id) == records[0].data  # the original is untouched
    assert store.ids("demo") == [r.id for r in records[:4]]
    assert store.last_id("demo") == records[3].id and store.projects() == ["demo", "other"]
    read = [d for _, d in store.read("demo")]
    assert read == [r.data for r in records[:4]]
    assert verify(read, Keyring([KEY_A])).ok


def test_s3_store_records_verify_and_a_tampered_object_is_caught(store, s3_client, s3_endpoint):
    records = chain(3)
    for r in records:
        store.put(r.id, r.data)
    keyring = Keyring([KEY_A])
    assert verify([data for _, data in store.read("demo")], keyring).ok
    # Someone holding the bucket's keys rewrites the middle object behind the store's back:
    # one digit of a number changes.
    data = records[1].data
    i = next(i for i in range(len(data) // 2, len(data)) if data[i:i + 1].isdigit())
    tampered = data[:i] + (b"7" if data[i:i + 1] != b"7" else b"8") + data[i + 1:]
    client = s3_client(s3_endpoint.access_key, s3_endpoint.secret_key)
    client.put_object(Bucket=store.bucket, Key=store._key(records[1].id), Body=tampered)
    result = verify([data for _, data in store.read("demo")], keyring)
    assert not result.ok
    assert records[1].id in str(result.error)

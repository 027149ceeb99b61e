"""The Bucket, BucketClass and Image models: samples validate, defaults are what the docs say."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stratus.api import bucket, bucketclass, image


@pytest.mark.parametrize(
    "module, model",
    [(bucketclass, bucketclass.BucketClass), (bucket, bucket.Bucket), (image, image.Image)],
    ids=["BucketClass", "Bucket", "Image"],
)
def test_samples_validate(module, model):
    body = module.sample()
    body["metadata"].update(namespace="demo", uid="u")
    obj = model.model_validate(body)
    assert obj.spec is not None


def test_defaults():
    b = bucket.Bucket.model_validate({**bucket.sample(versioning=False), "spec": {"bucketClassName": "default"}})
    assert (b.spec.access.value, b.spec.versioning, b.spec.force_delete, b.spec.quota) == ("Private", False, False, None)
    c = bucketclass.BucketClass.model_validate(bucketclass.sample())
    assert c.spec.credential_scoping.value == "Versitygw" and c.spec.deletion_policy.value == "Retain"
    i = image.Image.model_validate(image.sample())
    assert (i.spec.container_format.value, i.spec.protected, i.spec.deactivated) == ("bare", False, False)


@pytest.mark.parametrize(
    "spec",
    [
        {"bucketName": "UPPER"},
        {"quota": {"maxBytes": "1.5GB"}},
        {"lifecycle": {"expirationDays": 0}},
        {"access": "World"},
    ],
    ids=["bucket-name", "quota-bytes", "expiration", "access"],
)
def test_bucket_rejects(spec):
    with pytest.raises(ValidationError):
        bucket.Bucket.model_validate(bucket.sample(**spec))


@pytest.mark.parametrize(
    "spec",
    [
        {"diskFormat": "vhd"},
        {"source": {"http": {"url": "ftp://x/y", "sha256": "0" * 64}}},
        {"source": {"http": {"url": "http://x/y", "sha256": "ABC"}}},
        {"properties": {"osDistro": "has space"}},
        {"minDisk": -1},
        {"visibility": "community"},
    ],
    ids=["disk-format", "url-scheme", "sha", "property-value", "min-disk", "visibility"],
)
def test_image_rejects(spec):
    with pytest.raises(ValidationError):
        image.Image.model_validate(image.sample(**spec))

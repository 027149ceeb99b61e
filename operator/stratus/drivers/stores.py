"""The image store: a bucket on one BucketClass's object store (drivers/bucket_stores.py),
shared by the Image controller and the image service (which must not import
controllers), so it lives with the other I/O.

The image store is a bucket on the class STRATUS_IMAGE_BUCKETCLASS (default `default`),
named STRATUS_IMAGE_BUCKET (default `stratus-images`; created, private, the operator's
own: tenants get no key to it).
"""

from __future__ import annotations

import os
import threading

from ..api.registry import API_VERSION
from . import kube, s3
from .bucket_stores import ClassNotReady, admin_credentials, store_for_class  # noqa: F401 - shared names

#: The image store's bucket (controllers/image.py); no tenant Bucket may take its name.
IMAGE_BUCKET = os.environ.get("STRATUS_IMAGE_BUCKET", "stratus-images")
#: The BucketClass the image store lives on.
IMAGE_CLASS = os.environ.get("STRATUS_IMAGE_BUCKETCLASS", "default")


_image_bucket_ready = threading.Event()


def image_store() -> s3.S3ObjectStore:
    """The image store's object store, its bucket made on first use."""
    _, store = store_for_class(IMAGE_CLASS)
    if not _image_bucket_ready.is_set():
        store.ensure_bucket(IMAGE_BUCKET)
        _image_bucket_ready.set()
    return store


def image_signing_secret() -> str:
    """The secret the image service's URL signatures derive from: the image store's
    admin secret key (nothing new to store; it rotates with that secret)."""
    cls = kube.get(API_VERSION, "bucketclasses", IMAGE_CLASS)
    if cls is None:
        raise PermissionError("image store not configured")
    return admin_credentials(cls).secret_key

"""Object stores per BucketClass: the class, its admin key pair (from the Secret it
names) and an S3 store on its endpoint, cached per class and credentials so a rotated
key pair or a changed class builds a new store. Used by the Bucket controller, its usage
timer and the image service.
"""

from __future__ import annotations

import base64
import hashlib
import threading

from kubernetes.client.rest import ApiException

from ..api.bucketclass import CredentialScoping
from ..api.registry import API_VERSION
from . import kube, s3


class ClassNotReady(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


_stores: dict[str, tuple[str, s3.S3ObjectStore]] = {}
_stores_lock = threading.Lock()


def admin_credentials(cls: dict) -> s3.AdminCredentials:
    spec = cls["spec"]
    ref = spec["credentialsSecret"]
    try:
        secret = kube.core().read_namespaced_secret(ref["name"], ref["namespace"])
    except ApiException as exc:
        if exc.status == 404:
            raise ClassNotReady("SecretNotFound", f"Secret {ref['namespace']}/{ref['name']} named by BucketClass {cls['metadata']['name']} does not exist; create it with keys accessKey and secretKey") from None
        raise
    data = secret.data or {}
    missing = [k for k in ("accessKey", "secretKey") if not data.get(k)]
    if missing:
        raise ClassNotReady("SecretIncomplete", f"Secret {ref['namespace']}/{ref['name']} lacks {', '.join(missing)}; add them")
    decode = lambda k: base64.b64decode(data[k]).decode()  # noqa: E731
    return s3.AdminCredentials(spec["endpoint"], spec.get("region") or s3.DEFAULT_REGION, decode("accessKey"), decode("secretKey"))


def store_for_class(class_name: str) -> tuple[dict, s3.S3ObjectStore]:
    """The BucketClass and an object store on it (cached per class and credentials)."""
    cls = kube.get(API_VERSION, "bucketclasses", class_name)
    if cls is None:
        raise ClassNotReady("BucketClassNotFound", f"BucketClass {class_name!r} does not exist; create it or name an existing one (kubectl get bucketclasses)")
    creds = admin_credentials(cls)
    fingerprint = hashlib.sha256(repr((creds, creds.secret_key, cls["spec"].get("credentialScoping"))).encode()).hexdigest()
    with _stores_lock:
        cached = _stores.get(class_name)
        if cached and cached[0] == fingerprint:
            return cls, cached[1]
        if cls["spec"].get("credentialScoping", "Versitygw") == CredentialScoping.VERSITYGW.value:
            store = s3.S3ObjectStore.for_versitygw(creds)
        else:
            store = s3.S3ObjectStore(creds)
        _stores[class_name] = (fingerprint, store)
        return cls, store

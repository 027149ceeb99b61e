"""An in-memory S3 object store with the driver's interface, for unit tests of pure logic.

Integration tests use the real object server (versitygw); this fake never ships in the
package.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import secrets
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from stratus.drivers.s3 import (
    DEFAULT_PART_SIZE,
    DEFAULT_REGION,
    TAG_MAX_BYTES,
    TAG_MAX_OBJECTS,
    AccessDenied,
    BucketNotEmpty,
    BucketResult,
    Capabilities,
    ManagedPolicy,
    MiB,
    NoSuchBucket,
    NoSuchKey,
    ObjectInfo,
    ObjectStore,
    PutResult,
    QuotaMode,
    QuotaStatus,
    ScopedCredentials,
    UnsupportedRegion,
    Usage,
    _ChunkReader,
    _part_size_for,
    new_secret_key,
    quota_exceeded,
    scoped_access_key,
    validate_bucket_name,
)




@dataclasses.dataclass
class _Version:
    version_id: str
    data: bytes | None  # None: a delete marker
    last_modified: dt.datetime
    content_type: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def etag(self) -> str:
        return hashlib.md5(self.data or b"", usedforsecurity=False).hexdigest()


@dataclasses.dataclass
class _Bucket:
    versioning: str | None = None
    policy: ManagedPolicy = dataclasses.field(default_factory=ManagedPolicy)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    lifecycle_days: int | None = None
    objects: dict[str, list[_Version]] = dataclasses.field(default_factory=dict)  # oldest first


class InMemoryObjectStore(ObjectStore):
    """The :class:`ObjectStore` contract in memory, for unit tests of controllers.

    It behaves like :class:`S3ObjectStore` on versitygw: operator-enforced quotas, no
    native lifecycle, one region. ``clock`` drives timestamps (for expiration tests);
    ``fail_next(method, exc)`` makes the next call of a method raise. Tenant access is
    simulated with :meth:`client_put` and :meth:`client_get`, which check keys, scoping
    and the quota block like the server does.
    """

    def __init__(
        self,
        *,
        region: str = DEFAULT_REGION,
        endpoint_url: str = "memory://objectstore",
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.buckets: dict[str, _Bucket] = {}
        self.accounts: dict[str, str] = {}  # access key -> secret key
        self._failures: dict[str, list[BaseException]] = {}
        self._counter = 0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(True, True, QuotaMode.OPERATOR, False)

    def fail_next(self, method: str, exc: BaseException) -> None:
        """Make the next call of ``method`` raise ``exc`` (queued per method)."""
        if not callable(getattr(self, method, None)):
            raise AttributeError(method)
        self._failures.setdefault(method, []).append(exc)

    def _maybe_fail(self, method: str) -> None:
        queue = self._failures.get(method)
        if queue:
            raise queue.pop(0)

    def _bucket(self, name: str) -> _Bucket:
        try:
            return self.buckets[name]
        except KeyError:
            raise NoSuchBucket(name) from None

    def _next_version_id(self) -> str:
        self._counter += 1
        return f"v{self._counter:08d}"

    # -- buckets --

    def ensure_bucket(
        self,
        name: str,
        *,
        region: str | None = None,
        versioning: bool = False,
        public_read: bool = False,
        lifecycle_expiration_days: int | None = None,
    ) -> BucketResult:
        self._maybe_fail("ensure_bucket")
        validate_bucket_name(name)
        if region and region != self.region:
            raise UnsupportedRegion(region, self.region)
        created = name not in self.buckets
        b = self.buckets.setdefault(name, _Bucket())
        if versioning:
            b.versioning = "Enabled"
        elif b.versioning:
            b.versioning = "Suspended"
        b.policy.public_read = public_read
        b.lifecycle_days = lifecycle_expiration_days
        lifecycle = None if lifecycle_expiration_days is None else False
        return BucketResult(name, created, b.versioning, public_read, lifecycle)

    def bucket_exists(self, name: str) -> bool:
        self._maybe_fail("bucket_exists")
        return name in self.buckets

    def bucket_usage(self, name: str) -> Usage:
        self._maybe_fail("bucket_usage")
        stored = [v for vs in self._bucket(name).objects.values() for v in vs if v.data is not None]
        return Usage(len(stored), sum(len(v.data or b"") for v in stored))

    def set_quota(self, name: str, *, max_bytes: int | None = None, max_objects: int | None = None) -> QuotaMode:
        self._maybe_fail("set_quota")
        b = self._bucket(name)
        for tag, value in ((TAG_MAX_BYTES, max_bytes), (TAG_MAX_OBJECTS, max_objects)):
            if value is None:
                b.tags.pop(tag, None)
            elif value < 0:
                raise ValueError(f"{tag} must not be negative")
            else:
                b.tags[tag] = str(value)
        return QuotaMode.OPERATOR

    def check_quota(self, name: str, *, enforce: bool = True) -> QuotaStatus:
        self._maybe_fail("check_quota")
        b = self._bucket(name)
        max_bytes = int(b.tags[TAG_MAX_BYTES]) if TAG_MAX_BYTES in b.tags else None
        max_objects = int(b.tags[TAG_MAX_OBJECTS]) if TAG_MAX_OBJECTS in b.tags else None
        usage = self.bucket_usage(name)
        exceeded = quota_exceeded(usage, max_bytes, max_objects)
        if enforce:
            b.policy.write_blocked = exceeded
        return QuotaStatus(usage, max_bytes, max_objects, exceeded, b.policy.write_blocked, QuotaMode.OPERATOR)

    # -- credentials --

    def create_scoped_credentials(self, bucket: str, name: str = "default") -> ScopedCredentials:
        self._maybe_fail("create_scoped_credentials")
        b = self._bucket(bucket)
        key = scoped_access_key(bucket, name)
        secret = self.accounts.setdefault(key, new_secret_key())
        if key not in b.policy.credentials:
            b.policy.credentials.append(key)
        return ScopedCredentials(key, secret)

    def list_scoped_credentials(self, bucket: str) -> list[str]:
        self._maybe_fail("list_scoped_credentials")
        return list(self._bucket(bucket).policy.credentials)

    def delete_scoped_credentials(self, bucket: str, access_key: str) -> None:
        self._maybe_fail("delete_scoped_credentials")
        if bucket in self.buckets:
            creds = self.buckets[bucket].policy.credentials
            if access_key in creds:
                creds.remove(access_key)
        self.accounts.pop(access_key, None)

    # -- deletion and expiration --

    def delete_bucket(self, name: str, *, force: bool = False) -> bool:
        self._maybe_fail("delete_bucket")
        if name not in self.buckets:
            return False
        usage = self.bucket_usage(name)
        if usage.objects and not force:
            raise BucketNotEmpty(name, usage)
        b = self.buckets.pop(name)
        for key in b.policy.credentials:
            self.accounts.pop(key, None)
        return True

    def expire_objects(self, name: str, days: int, *, now: dt.datetime | None = None) -> int:
        self._maybe_fail("expire_objects")
        b = self._bucket(name)
        cutoff = (now or self._clock()) - dt.timedelta(days=days)
        expired = [
            key for key, versions in b.objects.items()
            if versions[-1].data is not None and versions[-1].last_modified < cutoff
        ]  # fmt: skip
        for key in expired:
            self.delete_object(name, key)
        return len(expired)

    # -- objects --

    def _store(self, bucket: str, key: str, data: bytes | None, content_type=None, metadata=None) -> _Version:
        b = self._bucket(bucket)
        version_id = self._next_version_id() if b.versioning == "Enabled" else "null"
        version = _Version(version_id, data, self._clock(), content_type, dict(metadata or {}))
        versions = b.objects.setdefault(key, [])
        if b.versioning != "Enabled":
            versions[:] = [v for v in versions if v.version_id != "null"]
        versions.append(version)
        return version

    def _current(self, bucket: str, key: str, version_id: str | None = None) -> _Version:
        versions = self._bucket(bucket).objects.get(key, [])
        if version_id:
            found = [v for v in versions if v.version_id == version_id and v.data is not None]
        else:
            found = versions[-1:] if versions and versions[-1].data is not None else []
        if not found:
            raise NoSuchKey(bucket, key)
        return found[0]

    def put_object_stream(
        self,
        bucket: str,
        key: str,
        stream: BinaryIO | Iterable[bytes],
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        size_hint: int | None = None,
    ) -> PutResult:
        self._maybe_fail("put_object_stream")
        self._bucket(bucket)
        part_size = _part_size_for(part_size, size_hint)
        reader = _ChunkReader(stream)
        out = io.BytesIO()
        parts = 0
        while chunk := reader.read_exact(part_size):
            out.write(chunk)
            parts += 1
        data = out.getvalue()
        parts = 0 if len(data) < part_size else parts
        v = self._store(bucket, key, data, content_type, metadata)
        return PutResult(len(data), v.etag, None if v.version_id == "null" else v.version_id, parts)

    def iter_object(
        self, bucket: str, key: str, *, version_id: str | None = None, chunk_size: int = MiB
    ) -> Iterator[bytes]:
        self._maybe_fail("iter_object")
        data = self._current(bucket, key, version_id).data or b""
        return iter([data[start : start + chunk_size] for start in range(0, len(data), chunk_size)])

    def stat_object(self, bucket: str, key: str, *, version_id: str | None = None) -> ObjectInfo | None:
        self._maybe_fail("stat_object")
        try:
            v = self._current(bucket, key, version_id)
        except NoSuchKey:
            return None
        return ObjectInfo(
            key, len(v.data or b""), v.etag, v.content_type,
            None if v.version_id == "null" else v.version_id, v.last_modified, dict(v.metadata),
        )  # fmt: skip

    def delete_object(self, bucket: str, key: str, *, version_id: str | None = None) -> None:
        self._maybe_fail("delete_object")
        b = self._bucket(bucket)
        versions = b.objects.get(key, [])
        if version_id:
            versions[:] = [v for v in versions if v.version_id != version_id]
        elif b.versioning:
            self._store(bucket, key, None)
        else:
            versions.clear()
        if not b.objects.get(key):
            b.objects.pop(key, None)

    def list_versions(self, bucket: str, key: str) -> list[tuple[str, int | None]]:
        """(version id, size or None for a delete marker), oldest first. Fake only."""
        versions = self._bucket(bucket).objects.get(key, [])
        return [(v.version_id, None if v.data is None else len(v.data)) for v in versions]

    def presigned_get_url(
        self, bucket: str, key: str, *, expires_in: int = 3600, version_id: str | None = None
    ) -> str:
        self._maybe_fail("presigned_get_url")
        query = {"expires": str(int(self._clock().timestamp()) + expires_in)}
        if version_id:
            query["versionId"] = version_id
        path = urllib.parse.quote(f"{bucket}/{key}")
        return f"{self.endpoint_url}/{path}?{urllib.parse.urlencode(query)}"

    # -- simulated tenant access (fake only) --

    def _authorize(self, access_key: str, secret_key: str, bucket: str) -> _Bucket:
        expected = self.accounts.get(access_key)
        if expected is None or not secrets.compare_digest(expected, secret_key):
            raise AccessDenied("invalid access key or secret")
        b = self.buckets.get(bucket)
        if b is None or access_key not in b.policy.credentials:
            raise AccessDenied(f"access denied on bucket {bucket!r}")
        return b

    def client_put(self, access_key: str, secret_key: str, bucket: str, key: str, data: bytes) -> None:
        """A tenant's PutObject with scoped credentials: refused outside its bucket or over quota."""
        b = self._authorize(access_key, secret_key, bucket)
        if b.policy.write_blocked:
            raise AccessDenied(f"writes to bucket {bucket!r} are blocked: quota reached")
        self._store(bucket, key, data)

    def client_get(self, access_key: str, secret_key: str, bucket: str, key: str) -> bytes:
        """A tenant's GetObject with scoped credentials."""
        self._authorize(access_key, secret_key, bucket)
        return self._current(bucket, key).data or b""

    def public_get(self, bucket: str, key: str) -> bytes:
        """An anonymous GetObject: allowed only on public-read buckets."""
        b = self.buckets.get(bucket)
        if b is None or not b.policy.public_read:
            raise AccessDenied(f"anonymous access denied on bucket {bucket!r}")
        return self._current(bucket, key).data or b""

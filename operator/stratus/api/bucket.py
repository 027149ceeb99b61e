"""Bucket (Swift): a namespaced S3 bucket on a BucketClass, with credentials to mount.

The operator creates the bucket on the class's backend (name fixed by `bucketName`,
else generated from namespace, name and uid: DNS-safe and unique), sets versioning,
expiration, access and quota, mints credentials scoped to this bucket alone, and writes
a Secret and a ConfigMap named like the Bucket, in the shape Rook's ObjectBucketClaim
uses (ConfigMap: BUCKET_HOST, BUCKET_PORT, BUCKET_NAME, BUCKET_REGION, plus
AWS_ENDPOINT_URL and AWS_REGION; Secret: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), so
`envFrom` both gives boto3, the AWS CLI and most S3 SDKs everything they need.

Phases: Pending (waiting for the class), Bound (ready to use), Error (a condition says
what to fix), Deleting. Usage is refreshed periodically.
"""

from __future__ import annotations

import enum

from kube_custom_resource import CustomResource
from pydantic import Field

from .bucketclass import BucketQuota
from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, ObjectName, StatusBase, printer
from .registry import VERSION

S3_BUCKET_NAME = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"

_IMMUTABLE = "{field} cannot be changed once set; create a new Bucket instead"


class Access(str, enum.Enum):
    PRIVATE = "Private"
    PUBLIC_READ = "PublicRead"


class Lifecycle(BaseModel):
    expiration_days: int = Field(..., ge=1, le=36500, description="Delete objects this many days after they were written.")


class BucketSpec(BaseModel):
    bucket_class_name: ObjectName = Field(
        ..., description="The BucketClass to make the bucket on.",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": _IMMUTABLE.format(field="spec.bucketClassName")}]},
    )
    bucket_name: str | None = Field(
        None, min_length=3, max_length=63, pattern=S3_BUCKET_NAME,
        description="A fixed S3 bucket name; generated when unset.",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": _IMMUTABLE.format(field="spec.bucketName")},
            {"rule": "!self.matches('^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$')",
             "message": "spec.bucketName: S3 refuses bucket names formatted like an IP address"},
            {"rule": "!self.startsWith('xn--') && !self.startsWith('sthree-') && !self.endsWith('-s3alias') "
                     "&& !self.endsWith('--ol-s3') && !self.contains('..')",
             "message": "spec.bucketName: S3 refuses names that start with xn-- or sthree-, end with -s3alias "
                        "or --ol-s3, or hold two dots in a row"},
        ]},
    )
    versioning: bool = Field(False, description="Keep every version of every object.")
    lifecycle: Lifecycle | None = Field(None, description="Expire objects after some days.")
    access: Access = Field(Access.PRIVATE, description="Private, or PublicRead (anyone may read objects).")
    quota: BucketQuota | None = Field(None, description="Limits; the class's default quota when unset.")
    force_delete: bool = Field(False, description="Deleting the Bucket deletes the objects in it too.")


class BucketUsage(BaseModel):
    objects: int = Field(0, ge=0, description="Stored object versions.")
    bytes: int = Field(0, ge=0, description="Their total size.")
    refreshed_at: str = Field("", description="When usage was last measured (RFC 3339).")


class QuotaState(BaseModel):
    max_bytes: int | None = Field(None, description="The byte limit in force.")
    max_objects: int | None = Field(None, description="The object limit in force.")
    exceeded: bool = Field(False, description="A limit is reached.")
    writes_blocked: bool = Field(False, description="Writes with the bucket's credentials are refused now.")
    enforcement: str = Field("", description="Native (the backend) or Operator (Stratus measures and blocks).")


class BucketStatus(StatusBase):
    """See the module docstring for phases."""

    bucket_name: str = Field("", description="The S3 bucket's name.")
    endpoint: str = Field("", description="The S3 endpoint URL.")
    region: str = Field("", description="The S3 region.")
    secret_name: str = Field("", description="The Secret with the bucket's credentials.")
    config_map_name: str = Field("", description="The ConfigMap with endpoint, bucket and region.")
    credentials: str = Field("", description="Scoped (good for this bucket only) or Unavailable.")
    usage: BucketUsage | None = Field(None, description="What the bucket holds.")
    quota: QuotaState | None = Field(None, description="Quota and whether it is reached.")


class Bucket(
    CustomResource,
    version=VERSION,
    short_names=["bkt"],
    subresources={"status": {}},
    printer_columns=[
        printer("Class", ".spec.bucketClassName"),
        printer("Bucket", ".status.bucketName"),
        printer("Objects", ".status.usage.objects", "integer"),
        printer("Bytes", ".status.usage.bytes", "integer"),
        PHASE_COLUMN,
        READY_COLUMN,
    ],
):
    """An S3 bucket with credentials for workloads."""

    spec: BucketSpec
    status: BucketStatus = Field(default_factory=BucketStatus)


def sample(name: str = "backups", bucket_class: str = "default", **spec) -> dict:
    """A Bucket manifest for tests and docs."""
    from .registry import API_VERSION

    body = {"bucketClassName": bucket_class, "versioning": True, "lifecycle": {"expirationDays": 30},
            "quota": {"maxBytes": "1Gi", "maxObjects": 10000}}
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "Bucket", "metadata": {"name": name}, "spec": body}

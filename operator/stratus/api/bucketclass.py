"""BucketClass (Swift): a cluster-scoped S3 endpoint that Buckets are made on.

A class names an S3 endpoint and region, a Secret with the operator's admin key pair on
that endpoint (keys `accessKey` and `secretKey`), what happens to the data when a
Bucket is deleted, and default quotas for Buckets that set none.

`credentialScoping` says whether the backend can mint per-bucket credentials:
`Versitygw` uses versitygw's admin API (accounts granted by the bucket policy, see
:mod:`stratus.drivers.s3`); `None` means it cannot, and Buckets then say so in status
instead of handing out the admin key pair.

The image store (Glance) is a bucket on the class the operator is configured with
(`STRATUS_IMAGE_BUCKETCLASS`, default `default`).
"""

from __future__ import annotations

import enum

from kube_custom_resource import CustomResource, Scope
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, LabelName, ObjectName, Quantity, StatusBase, printer
from .registry import VERSION


class DeletionPolicy(str, enum.Enum):
    RETAIN = "Retain"
    DELETE = "Delete"


class CredentialScoping(str, enum.Enum):
    VERSITYGW = "Versitygw"
    NONE = "None"


class SecretReference(BaseModel):
    name: ObjectName = Field(..., description="Name of the Secret (keys accessKey and secretKey).")
    namespace: LabelName = Field(..., description="Namespace of the Secret.")


class BucketQuota(BaseModel):
    max_bytes: Quantity | None = Field(None, description="Most bytes the bucket may hold, e.g. \"10Gi\".")
    max_objects: int | None = Field(None, ge=1, description="Most objects (versions included) the bucket may hold.")


class BucketClassSpec(BaseModel):
    endpoint: str = Field(
        ..., max_length=2048, pattern=r"^https?://[^\s/]+(/.*)?$",
        description="URL of the S3 endpoint, e.g. https://s3.example.org.",
    )
    region: str = Field("us-east-1", min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$", description="S3 region.")
    credentials_secret: SecretReference = Field(..., description="The admin key pair on the endpoint.")
    credential_scoping: CredentialScoping = Field(
        CredentialScoping.VERSITYGW,
        description="How per-bucket credentials are made: Versitygw (its admin API) or None (the backend cannot).",
    )
    deletion_policy: DeletionPolicy = Field(
        DeletionPolicy.RETAIN,
        description="Retain: deleting a Bucket that holds objects is refused and the data kept. "
        "Delete: deleting a Bucket deletes its objects.",
    )
    default_quota: BucketQuota = Field(default_factory=BucketQuota, description="Quota of Buckets that set none.")


class BucketClassStatus(StatusBase):
    """phase: Ready (the endpoint answers with the admin credentials) or Error."""


class BucketClass(
    CustomResource,
    version=VERSION,
    scope=Scope.CLUSTER,
    plural_name="bucketclasses",
    short_names=["bcl"],
    subresources={"status": {}},
    printer_columns=[
        printer("Endpoint", ".spec.endpoint"),
        printer("Region", ".spec.region"),
        printer("Deletion", ".spec.deletionPolicy"),
        PHASE_COLUMN,
        READY_COLUMN,
    ],
):
    """An S3 endpoint that Buckets are made on."""

    spec: BucketClassSpec
    status: BucketClassStatus = Field(default_factory=BucketClassStatus)


def sample(name: str = "default", endpoint: str = "http://127.0.0.1:7070", **spec) -> dict:
    """A BucketClass manifest for tests and docs."""
    from .registry import API_VERSION

    body = {"endpoint": endpoint, "region": "us-east-1",
            "credentialsSecret": {"name": "s3-admin", "namespace": "stratus-system"},
            "deletionPolicy": "Retain", "defaultQuota": {"maxBytes": "10Gi"}}
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "BucketClass", "metadata": {"name": name}, "spec": body}

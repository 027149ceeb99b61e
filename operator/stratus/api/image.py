"""Image (Glance): a virtual machine image, imported into the image store bucket.

Sources (exactly one): `http` (an http(s) URL and its expected sha256), `registry` (a
containerDisk reference, used by CDI as it is, not copied), `upload` (bytes PUT to the
image service) or `volume` (an existing Volume, cloned by CDI).

Phases are Glance's image states, lower-case: queued, importing, active, deactivated,
killed. The contract with compute: an active Image has `status.dataVolumeSource` (a CDI
DataVolume `spec.source`), `status.virtualSize` (bytes) and `spec.minDisk` (GiB) /
`spec.minRam` (MiB), Glance's units.

Visibility: private (this project), shared (this project and `sharedWith`), public
(every project). Key properties are mirrored to labels (`stratus.dev/os-distro`, ...)
and are CRD selectable fields, so `kubectl get images -l` and `--field-selector` work.
"""

from __future__ import annotations

import enum
import typing as t

from kube_custom_resource import CustomResource
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, LabelName, ObjectName, StatusBase, printer
from .registry import VERSION
from .server import IMAGE_REFERENCE

SHA256 = r"^[a-f0-9]{64}$"
PROPERTY_VALUE = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"


class DiskFormat(str, enum.Enum):
    QCOW2 = "qcow2"
    RAW = "raw"
    ISO = "iso"


class ContainerFormat(str, enum.Enum):
    BARE = "bare"
    DOCKER = "docker"


class Visibility(str, enum.Enum):
    PRIVATE = "private"
    SHARED = "shared"
    PUBLIC = "public"


class ImagePhase(str, enum.Enum):
    QUEUED = "queued"
    IMPORTING = "importing"
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    KILLED = "killed"


class HttpSource(BaseModel):
    url: str = Field(..., max_length=4096, pattern=r"^https?://[^\s]+$", description="Where to fetch the image.")
    sha256: str = Field(..., pattern=SHA256, description="The expected sha256 of the bytes, lower-case hex.")


class RegistrySource(BaseModel):
    url: str = Field(..., max_length=512, pattern=IMAGE_REFERENCE, description="A containerDisk image reference.")


class UploadSource(BaseModel):
    sha256: str | None = Field(None, pattern=SHA256, description="The expected sha256 of the uploaded bytes.")


class VolumeSource(BaseModel):
    name: ObjectName = Field(..., description="A Volume in the same namespace.")


class ImageSource(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"x-kubernetes-validations": [{
            "rule": "[has(self.http), has(self.registry), has(self.upload), has(self.volume)].filter(x, x).size() == 1",
            "message": "spec.source must set exactly one of http, registry, upload or volume",
        }]},
    }
    http: HttpSource | None = Field(None, description="Import from an http(s) URL.")
    registry: RegistrySource | None = Field(None, description="A containerDisk in a container registry.")
    upload: UploadSource | None = Field(None, description="Bytes uploaded to the image service.")
    volume: VolumeSource | None = Field(None, description="Clone an existing Volume.")


class ImageProperties(BaseModel):
    os_distro: str | None = Field(None, pattern=PROPERTY_VALUE, max_length=63, description="e.g. ubuntu, fedora, cirros.")
    os_version: str | None = Field(None, pattern=PROPERTY_VALUE, max_length=63, description="e.g. 24.04.")
    architecture: str | None = Field(None, pattern=PROPERTY_VALUE, max_length=63, description="e.g. x86_64, aarch64.")
    hw_firmware_type: str | None = Field(None, pattern=r"^(bios|uefi)$", description="bios or uefi.")
    extra: dict[str, str] = Field(default_factory=dict, description="Any other property, free-form.")


class ImageSpec(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"x-kubernetes-validations": [
            {
                "rule": "self.visibility == 'shared' || !has(self.sharedWith) || size(self.sharedWith) == 0",
                "message": "spec.sharedWith is only for spec.visibility: shared",
                "fieldPath": ".sharedWith",
            },
            {
                "rule": "!has(self.source.registry) || self.diskFormat != 'iso'",
                "message": "spec.diskFormat cannot be iso for a registry (containerDisk) source",
                "fieldPath": ".diskFormat",
            },
        ]},
    }

    source: ImageSource = Field(
        ..., description="Where the bytes come from. Cannot be changed.",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "spec.source cannot be changed; create a new Image instead"}]},
    )
    disk_format: DiskFormat = Field(..., description="qcow2, raw or iso; checked against the bytes.")
    container_format: ContainerFormat = Field(ContainerFormat.BARE, description="bare, or docker for containerDisks.")
    min_disk: int = Field(0, ge=0, le=65536, description="Smallest root disk to boot it, in GiB.")
    min_ram: int = Field(0, ge=0, le=16777216, description="Least memory to boot it, in MiB.")
    properties: ImageProperties = Field(default_factory=ImageProperties, description="Metadata to query by.")
    visibility: Visibility = Field(Visibility.PRIVATE, description="private, shared or public.")
    shared_with: list[LabelName] = Field(
        default_factory=list, max_length=256,
        description="Projects (namespaces) a shared image is visible to.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    protected: bool = Field(False, description="Deletion is refused while true.")
    deactivated: bool = Field(False, description="A deactivated image cannot be downloaded or booted.")


class ImportProgress(BaseModel):
    bytes: int = Field(0, ge=0, description="Bytes fetched so far.")
    total: int | None = Field(None, description="Total bytes, when the source said.")
    percent: int | None = Field(None, ge=0, le=100, description="Percent done, when the total is known.")


class ImageLocation(BaseModel):
    bucket: str = Field("", description="The image store bucket.")
    key: str = Field("", description="The object holding the bytes.")


class ImageStatus(StatusBase):
    """See the module docstring for phases."""

    size: int | None = Field(None, description="Bytes stored.")
    virtual_size: int | None = Field(None, description="Size of the disk the image expands to, in bytes.")
    checksum: str = Field("", description="sha256 of the stored bytes (hex).")
    detected_format: str = Field("", description="The format qemu-img found.")
    progress: ImportProgress | None = Field(None, description="Import progress.")
    location: ImageLocation | None = Field(None, description="Where the bytes are stored.")
    download_url: str = Field("", description="The image service URL that serves the bytes to allowed callers.")
    # Any: a free-form object kept whole (a typed dict would prune nested fields).
    data_volume_source: t.Any = Field(
        None, description="A CDI DataVolume spec.source for root disks from this image.",
        json_schema_extra={"type": "object", "nullable": True, "x-kubernetes-preserve-unknown-fields": True},
    )


class Image(
    CustomResource,
    version=VERSION,
    short_names=["img"],
    subresources={"status": {}},
    printer_columns=[
        printer("Disk Format", ".spec.diskFormat"),
        printer("Visibility", ".spec.visibility"),
        printer("Size", ".status.size", "integer"),
        printer("Distro", ".spec.properties.osDistro", priority=1),
        PHASE_COLUMN | {"name": "Status"},
        READY_COLUMN,
    ],
):
    """A virtual machine image."""

    spec: ImageSpec
    status: ImageStatus = Field(default_factory=ImageStatus)


def sample(name: str = "cirros", url: str = "http://127.0.0.1:8000/cirros.qcow2", sha256: str = "0" * 64, **spec) -> dict:
    """An Image manifest for tests and docs (an http import)."""
    from .registry import API_VERSION

    body = {"source": {"http": {"url": url, "sha256": sha256}}, "diskFormat": "qcow2", "minDisk": 1, "minRam": 128,
            "visibility": "public", "properties": {"osDistro": "cirros", "osVersion": "0.6", "architecture": "x86_64"}}
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "Image", "metadata": {"name": name}, "spec": body}

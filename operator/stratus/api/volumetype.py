"""VolumeType (Cinder): a cluster-scoped class of volume — which StorageClass backs it,
with which access and volume mode, QoS, and whether it can be snapshotted or expanded.

Decisions:
- A VolumeType names an existing StorageClass rather than creating one: the storage
  administrator owns StorageClasses (and their CSI parameters); a VolumeType is the
  user-facing menu entry. The operator reports StorageClassNotFound until it exists.
- `allowExpansion` is the VolumeType's promise; the operator also requires the
  StorageClass to have `allowVolumeExpansion: true` and reports a condition otherwise.
- QoS limits are written as annotations on each PVC (`stratus.dev/qos-*`), which CSI
  drivers that take per-volume QoS parameters read through their parameter templating;
  drivers that take QoS only per StorageClass need one VolumeType per QoS level.
- At most one VolumeType should be `default: true`; Volumes without `volumeType` use it
  (if several claim to be default, the alphabetically first wins and the others are
  reported as not default in their status).
"""

from __future__ import annotations

import enum

from kube_custom_resource import CustomResource, Scope
from pydantic import Field

from .common import READY_COLUMN, BaseModel, ObjectName, StatusBase, printer
from .registry import VERSION


class AccessMode(str, enum.Enum):
    RWO = "ReadWriteOnce"
    RWX = "ReadWriteMany"
    ROX = "ReadOnlyMany"


class VolumeMode(str, enum.Enum):
    FILESYSTEM = "Filesystem"
    BLOCK = "Block"


class QoS(BaseModel):
    read_iops: int | None = Field(None, ge=1, description="Most read operations per second.")
    write_iops: int | None = Field(None, ge=1, description="Most write operations per second.")
    total_iops: int | None = Field(None, ge=1, description="Most operations per second.")
    total_bytes_per_second: int | None = Field(None, ge=1, description="Most bytes per second.")


class VolumeTypeSpec(BaseModel):
    storage_class_name: ObjectName = Field(..., description="The StorageClass that provisions volumes of this type.")
    access_mode: AccessMode = Field(AccessMode.RWO, description="ReadWriteOnce, ReadWriteMany or ReadOnlyMany.")
    volume_mode: VolumeMode = Field(VolumeMode.BLOCK, description="Block (a raw device) or Filesystem (a disk image file).")
    qos: QoS = Field(default_factory=QoS, description="Per-volume limits, passed to the CSI driver as PVC annotations.")
    snapshot_class_name: ObjectName | None = Field(
        None, description="The VolumeSnapshotClass for snapshots; without it, volumes of this type cannot be snapshotted."
    )
    allow_expansion: bool = Field(False, description="Whether volumes of this type may grow.")
    default: bool = Field(False, description="Whether Volumes without spec.volumeType get this type.")
    description: str = Field("", max_length=1024, description="What the type is for.")


class VolumeTypeStatus(StatusBase):
    """phase: Available or StorageClassNotFound."""


class VolumeType(
    CustomResource,
    version=VERSION,
    scope=Scope.CLUSTER,
    short_names=["vtype"],
    subresources={"status": {}},
    printer_columns=[
        printer("StorageClass", ".spec.storageClassName"),
        printer("Mode", ".spec.volumeMode"),
        printer("Snapshots", ".spec.snapshotClassName"),
        printer("Expand", ".spec.allowExpansion", "boolean"),
        printer("Default", ".spec.default", "boolean"),
        READY_COLUMN,
    ],
):
    """A class of block storage."""

    spec: VolumeTypeSpec
    status: VolumeTypeStatus = Field(default_factory=VolumeTypeStatus)

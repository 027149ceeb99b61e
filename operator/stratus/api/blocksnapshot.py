"""BlockSnapshot (Cinder volume snapshot): a point-in-time copy of a Volume, backed by a
CSI `VolumeSnapshot` (snapshot.storage.k8s.io/v1) of the Volume's PVC.

Named BlockSnapshot so that `kubectl get volumesnapshot` keeps meaning the CSI kind
and `kubectl get vmsnapshot` KubeVirt's. A Volume with `source.snapshot` restores it.

Phases: creating, available, error, deleting. The Volume's VolumeType must name a
VolumeSnapshotClass (otherwise a condition SnapshotsNotSupported).
"""

from __future__ import annotations

from kube_custom_resource import CustomResource
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, ObjectName, StatusBase, printer
from .registry import VERSION


class BlockSnapshotSpec(BaseModel):
    volume: ObjectName = Field(
        ...,
        description="The Volume in the namespace to snapshot. Cannot be changed.",
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec.volume cannot be changed"}]
        },
    )
    description: str = Field("", max_length=1024, description="What the snapshot is for.")


class BlockSnapshotStatus(StatusBase):
    volume_snapshot: str = Field("", description="The CSI VolumeSnapshot behind it.")
    size: str = Field("", description="Size of the volume when it was taken (the size a restore needs at least).")
    created_at: str = Field("", description="When the storage cut the snapshot.")


class BlockSnapshot(
    CustomResource,
    version=VERSION,
    short_names=["bsnap"],
    subresources={"status": {}},
    printer_columns=[
        printer("Volume", ".spec.volume"),
        printer("Size", ".status.size"),
        PHASE_COLUMN | {"name": "Status"},
        READY_COLUMN,
    ],
):
    """A snapshot of a Volume."""

    spec: BlockSnapshotSpec
    status: BlockSnapshotStatus = Field(default_factory=BlockSnapshotStatus)

"""Volume (Cinder): a block device a user creates, attaches to a Server and detaches,
without knowing where the storage lives. Backed by one PersistentVolumeClaim named
`volume-<name>`, owned by the Volume.

Phases (Cinder's): creating, available, attaching, in-use, detaching, extending,
error, deleting.

Sources (at most one; none is a blank volume): an Image (through a CDI DataVolume, so
the image service's import/clone does the copying), a BlockSnapshot (PVC dataSource
VolumeSnapshot) or another Volume (PVC dataSource PersistentVolumeClaim, a CSI clone).

Rules:
- spec.size may grow, never shrink (refused by the API server); growth needs a
  VolumeType that allows expansion (otherwise a condition ExpansionNotSupported).
- spec.attachTo names a Server in the namespace: the volume is hotplugged into its
  VM and persisted in the VM spec. Removing it detaches.
- Deleting an attached volume (or one that is a Server's boot volume, or that has
  BlockSnapshots) waits, with a condition saying what still uses it; it proceeds by
  itself once detached. Deleting a Server detaches its volumes first.
"""

from __future__ import annotations

from kube_custom_resource import CustomResource
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, ObjectName, Quantity, StatusBase, printer
from .registry import VERSION


class VolumeSource(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.image) ? 1 : 0) + (has(self.snapshot) ? 1 : 0) + (has(self.volume) ? 1 : 0) <= 1",
                    "message": "spec.source takes at most one of image, snapshot or volume",
                }
            ]
        },
    }

    image: ObjectName | None = Field(None, description="An Image in the namespace to copy.")
    snapshot: ObjectName | None = Field(None, description="A BlockSnapshot in the namespace to restore.")
    volume: ObjectName | None = Field(None, description="A Volume in the namespace to clone.")


class VolumeSpec(BaseModel):
    size: Quantity = Field(
        ...,
        description="Size, e.g. \"10Gi\". May grow (when the type allows expansion); never shrinks.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "quantity(self).compareTo(quantity(oldSelf)) >= 0",
                    "message": "spec.size cannot shrink; create a smaller volume and copy the data instead",
                },
                {
                    "rule": "quantity(self).compareTo(quantity('1Mi')) >= 0 && quantity(self).compareTo(quantity('1Pi')) <= 0",
                    "message": "spec.size: between 1Mi and 1Pi",
                },
            ]
        },
    )
    volume_type: ObjectName | None = Field(
        None,
        description="The VolumeType; defaults to the VolumeType marked default. Cannot be changed.",
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec.volumeType cannot be changed"}]
        },
    )
    source: VolumeSource = Field(
        default_factory=VolumeSource,
        description="Where the initial content comes from; empty is a blank volume. Cannot be changed.",
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec.source cannot be changed"}]
        },
    )
    attach_to: ObjectName | None = Field(None, description="Name of a Server in the namespace to attach to; remove to detach.")
    read_only: bool = Field(False, description="Attach read-only.")
    description: str = Field("", max_length=1024, description="What the volume holds.")


class Attachment(BaseModel):
    server: str = Field(..., description="The Server the volume is attached to.")
    boot: bool = Field(False, description="Whether the server boots from it.")
    read_only: bool = Field(False, description="Whether it is attached read-only.")


class VolumeStatus(StatusBase):
    """See the module docstring for phases."""

    claim_name: str = Field("", description="The PersistentVolumeClaim that holds the data.")
    size: str = Field("", description="The size the storage reports (the PVC's capacity).")
    volume_type: str = Field("", description="The VolumeType in use.")
    attachment: Attachment | None = Field(None, description="Where the volume is attached, if anywhere.")


class Volume(
    CustomResource,
    version=VERSION,
    short_names=["vol"],
    subresources={"status": {}},
    printer_columns=[
        printer("Size", ".spec.size"),
        printer("Type", ".status.volumeType"),
        PHASE_COLUMN | {"name": "Status"},
        printer("Attached To", ".status.attachment.server"),
        READY_COLUMN,
    ],
):
    """A block storage volume."""

    spec: VolumeSpec
    status: VolumeStatus = Field(default_factory=VolumeStatus)

"""Block storage: pure builders from Volume (+ VolumeType) to a PVC or DataVolume, from
BlockSnapshot to a CSI VolumeSnapshot, and the status of each derived from what the
storage reports.

Decisions:
- One claim per Volume, named `volume-<name>`, owned by the Volume. Blank volumes and
  restores from snapshots or clones of volumes are plain PVCs with a `dataSource`
  (CSI does the work); volumes from Images are CDI DataVolumes (CDI imports or clones,
  and the PVC it makes carries the same name).
- The PVC's size is the Volume's size; growing spec.size patches the PVC's request,
  which the CSI resizer honours (phase `extending` until the capacity follows).
- Attachment state comes from the Server's VM and VMI (see compute.attached_volumes);
  this module only combines them into Cinder's phases.
"""

from __future__ import annotations

from ..api.registry import LABEL_PREFIX
from .compute import owner_reference
from .conditions import set_condition
from .quantity import parse_bytes

VOLUME_LABEL = f"{LABEL_PREFIX}/volume"
SNAPSHOT_LABEL = f"{LABEL_PREFIX}/snapshot"
CDI_API = "cdi.kubevirt.io/v1beta1"
SNAPSHOT_API = "snapshot.storage.k8s.io/v1"
QOS_ANNOTATIONS = {
    "readIops": f"{LABEL_PREFIX}/qos-read-iops",
    "writeIops": f"{LABEL_PREFIX}/qos-write-iops",
    "totalIops": f"{LABEL_PREFIX}/qos-total-iops",
    "totalBytesPerSecond": f"{LABEL_PREFIX}/qos-total-bytes-per-second",
}


def claim_name(volume_name: str) -> str:
    return f"volume-{volume_name}"


def snapshot_name(snapshot: str) -> str:
    return f"snapshot-{snapshot}"


def _claim_meta(volume: dict, vtype_spec: dict) -> dict:
    name = volume["metadata"]["name"]
    annotations = {ann: str(vtype_spec["qos"][key]) for key, ann in QOS_ANNOTATIONS.items()
                   if (vtype_spec.get("qos") or {}).get(key) is not None}
    meta = {
        "name": claim_name(name),
        "namespace": volume["metadata"]["namespace"],
        "labels": {VOLUME_LABEL: name},
        "ownerReferences": [owner_reference(volume)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def _storage(volume: dict, vtype_spec: dict) -> dict:
    return {
        "accessModes": [vtype_spec.get("accessMode") or "ReadWriteOnce"],
        "volumeMode": vtype_spec.get("volumeMode") or "Block",
        "storageClassName": vtype_spec["storageClassName"],
        "resources": {"requests": {"storage": volume["spec"]["size"]}},
    }


def volume_to_claim(volume: dict, vtype_spec: dict, data_source: dict | None = None) -> dict:
    """The PVC for a blank volume, or one restored from a snapshot / cloned from a PVC."""
    spec = _storage(volume, vtype_spec)
    if data_source:
        spec["dataSource"] = data_source
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _claim_meta(volume, vtype_spec), "spec": spec}


def volume_to_data_volume(volume: dict, vtype_spec: dict, image_source: dict) -> dict:
    """The DataVolume for a volume with an Image's content."""
    return {
        "apiVersion": CDI_API,
        "kind": "DataVolume",
        "metadata": _claim_meta(volume, vtype_spec),
        "spec": {"source": image_source, "storage": _storage(volume, vtype_spec)},
    }


def snapshot_data_source(snapshot_name_: str) -> dict:
    return {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot_name_}


def clone_data_source(claim: str) -> dict:
    return {"kind": "PersistentVolumeClaim", "name": claim}


def snapshot_to_volume_snapshot(snapshot: dict, source_claim: str, snapshot_class: str) -> dict:
    name = snapshot["metadata"]["name"]
    return {
        "apiVersion": SNAPSHOT_API,
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": snapshot_name(name),
            "namespace": snapshot["metadata"]["namespace"],
            "labels": {SNAPSHOT_LABEL: name, VOLUME_LABEL: snapshot["spec"]["volume"]},
            "ownerReferences": [owner_reference(snapshot)],
        },
        "spec": {"volumeSnapshotClassName": snapshot_class, "source": {"persistentVolumeClaimName": source_claim}},
    }


def volume_phase(claim: dict | None, requested_size: str, attachment: dict | None, wanted_server: str | None,
                 attached: bool) -> tuple[str, bool, str, str]:
    """Cinder's phase and the Ready condition (status, reason, message) of a Volume.

    - claim: the PVC (None while it is being made);
    - attachment: where the volume is attached per its server (None if nowhere);
    - wanted_server: spec.attachTo; attached: whether that server's VM reports it."""
    claim_status = (claim or {}).get("status") or {}
    if claim is None or claim_status.get("phase") != "Bound":
        return "creating", False, "Creating", "Provisioning the storage"
    capacity = (claim_status.get("capacity") or {}).get("storage")
    if capacity and parse_bytes(capacity) < parse_bytes(requested_size):
        return "extending", False, "Extending", f"Growing from {capacity} to {requested_size}"
    if wanted_server and attached:
        return "in-use", True, "InUse", f"Attached to server {wanted_server}"
    if wanted_server:
        return "attaching", False, "Attaching", f"Attaching to server {wanted_server}"
    if attachment:
        return "detaching", False, "Detaching", f"Detaching from server {attachment['server']}"
    return "available", True, "Available", "Ready to attach"


def snapshot_phase(vs: dict | None) -> tuple[str, bool, str, str]:
    st = (vs or {}).get("status") or {}
    if vs is None:
        return "creating", False, "Creating", "Creating the VolumeSnapshot"
    if st.get("error"):
        return "error", False, "SnapshotFailed", f"The storage could not take the snapshot: {st['error'].get('message', '')}"
    if st.get("readyToUse"):
        return "available", True, "Available", "Ready to restore into a new volume"
    return "creating", False, "Creating", "Waiting for the storage to cut the snapshot"


def with_ready(status: dict, conditions: list | None, ready: bool, reason: str, message: str, generation: int) -> dict:
    status["conditions"] = set_condition(conditions, "Ready", ready, reason, message, generation)
    status["observedGeneration"] = generation
    return status

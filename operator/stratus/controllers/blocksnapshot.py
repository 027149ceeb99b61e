"""BlockSnapshot: a CSI VolumeSnapshot of the Volume's PVC, with the VolumeSnapshotClass
of the Volume's type; status follows the VolumeSnapshot's readyToUse. The size of the
volume at the time is recorded, since a restore needs at least that much."""

from __future__ import annotations

import kopf

from ..api.blocksnapshot import BlockSnapshot
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import volumes
from ..core.conditions import set_condition
from ..drivers import kube
from .status import write_status
from . import volume as volume_ctl

RETRY = 3


def _write_status(body: dict, status: dict) -> dict:
    return write_status(body, "blocksnapshots", status, error_phase="error")


def sync_snapshot(namespace: str, name: str) -> bool:
    """Returns True when the snapshot has settled (available or a condition the user must fix)."""
    body = kube.get(API_VERSION, "blocksnapshots", name, namespace)
    if not body or body["metadata"].get("deletionTimestamp"):
        return True
    snap = BlockSnapshot.model_validate(body)
    generation = body["metadata"].get("generation", 0)
    old = body.get("status") or {}
    status: dict = {"observedGeneration": generation}
    vol = kube.get(API_VERSION, "volumes", snap.spec.volume, namespace)
    vs_name = volumes.snapshot_name(name)
    vs = kube.get(volumes.SNAPSHOT_API, "volumesnapshots", vs_name, namespace)
    settled = True
    if vs is None and vol is None:
        phase, ready, reason, message = "error", False, "VolumeNotFound", (
            f"Volume {snap.spec.volume!r} does not exist in this namespace; delete this snapshot or create the volume")
    elif vs is None:
        try:
            _, vtype = volume_ctl.volume_type(vol["spec"].get("volumeType"))
        except volume_ctl.Waiting as waiting:
            vtype, phase, ready, reason, message = None, "error", False, waiting.reason, waiting.message
        if vtype is not None and not vtype.get("snapshotClassName"):
            phase, ready, reason, message = "error", False, "SnapshotsNotSupported", (
                f"The type of volume {snap.spec.volume!r} has no snapshotClassName; its volumes cannot be snapshotted")
        elif vtype is not None and not (vol.get("status") or {}).get("claimName"):
            phase, ready, reason, message = "creating", False, "VolumeNotReady", f"Waiting for volume {snap.spec.volume!r}"
            settled = False
        elif vtype is not None:
            kube.apply(volumes.snapshot_to_volume_snapshot(body, vol["status"]["claimName"], vtype["snapshotClassName"]),
                       "volumesnapshots")
            status["size"] = vol["status"].get("size") or vol["spec"]["size"]
            phase, ready, reason, message = "creating", False, "Creating", "Waiting for the storage to cut the snapshot"
            settled = False
    else:
        phase, ready, reason, message = volumes.snapshot_phase(vs)
        settled = phase != "creating"
        st = vs.get("status") or {}
        if st.get("creationTime"):
            status["createdAt"] = st["creationTime"]
        if not old.get("size") and st.get("restoreSize"):
            status["size"] = st["restoreSize"]
    if vs is not None:
        status["volumeSnapshot"] = vs_name
    status["phase"] = phase
    status["conditions"] = set_condition(old.get("conditions"), "Ready", ready, reason, message, generation)
    _write_status(body, status)
    return settled


@kopf.on.resume(GROUP, VERSION, "blocksnapshots")
@kopf.on.create(GROUP, VERSION, "blocksnapshots")
@kopf.on.update(GROUP, VERSION, "blocksnapshots", field="spec")
def reconcile_snapshot(name, namespace, **_) -> None:
    if not sync_snapshot(namespace, name):
        raise kopf.TemporaryError("snapshot not ready yet", delay=RETRY)


@kopf.on.event("snapshot.storage.k8s.io", "v1", "volumesnapshots", labels={volumes.SNAPSHOT_LABEL: kopf.PRESENT})
def volume_snapshot_changed(labels, namespace, **_) -> None:
    sync_snapshot(namespace, labels[volumes.SNAPSHOT_LABEL])

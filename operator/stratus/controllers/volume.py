"""Volume: makes the Volume's claim (a PVC, or a CDI DataVolume for Image content),
grows it when spec.size grows, asks the Server named in spec.attachTo to hotplug it,
and mirrors the claim and the attachment into Cinder's phases.

Level-based: spec changes, resumes, events of the claim, and events of the attached
Server's VM/VMI (through the server controller's child listeners) recompute the status.
Attaching and detaching are done by re-syncing the Server(s) concerned: the server
controller builds the VM's volume list from the Volumes that name it.

Deletion waits, with a condition saying why, while the volume is attached, is a
Server's boot volume or has BlockSnapshots; then the claim goes with it.
"""

from __future__ import annotations

import time

import kopf

from ..api.registry import API_VERSION, GROUP, VERSION
from ..api.volume import Volume
from ..core import volumes
from ..core.conditions import set_condition
from ..core.quantity import parse_bytes
from ..drivers import kube
from ..drivers import kubevirt as kv
from . import server as server_ctl
from .status import write_status

RETRY = 5
REKICK = 10
SAFETY_NET = 20
#: Per Volume, the last intent the servers were asked to follow, and when.
_kicked: dict[tuple[str, str], tuple[tuple, float]] = {}


class Waiting(Exception):
    def __init__(self, phase: str, reason: str, message: str, delay: float = RETRY):
        super().__init__(message)
        self.phase, self.reason, self.message, self.delay = phase, reason, message, delay


def _write_status(body: dict, status: dict) -> dict:
    return write_status(body, "volumes", status, error_phase="error", events_on_reason=True)


def volume_type(name: str | None) -> tuple[str, dict]:
    """(name, spec) of the VolumeType to use, or Waiting saying why there is none."""
    if name:
        vt = kube.get(API_VERSION, "volumetypes", name)
        if vt is None:
            raise Waiting("error", "VolumeTypeNotFound", f"VolumeType {name!r} does not exist; create it or set "
                                                          "spec.volumeType to an existing one (kubectl get volumetypes)")
        return name, vt["spec"]
    defaults = sorted((vt for vt in kube.list_(API_VERSION, "volumetypes") if vt["spec"].get("default")),
                      key=lambda vt: vt["metadata"]["name"])
    if not defaults:
        raise Waiting("error", "VolumeTypeNotFound", "No VolumeType is marked default; set spec.volumeType "
                                                      "(kubectl get volumetypes)")
    return defaults[0]["metadata"]["name"], defaults[0]["spec"]


def _ensure_claim(body: dict, vtype: dict, namespace: str) -> dict | None:
    """Create the claim when it does not exist yet; return the PVC (None until it exists)."""
    name, spec = body["metadata"]["name"], body["spec"]
    claim = volumes.claim_name(name)
    pvc = kube.get("v1", "persistentvolumeclaims", claim, namespace)
    if pvc is not None:
        return pvc
    source = spec.get("source") or {}
    if source.get("image"):
        image = kube.get(API_VERSION, "images", source["image"], namespace) if kv.has_resource(API_VERSION, "images") else None
        if image is None:
            raise Waiting("error", "ImageNotFound", f"Image {source['image']!r} does not exist in this namespace; create it")
        st = image.get("status") or {}
        if st.get("phase") != "active" or not st.get("dataVolumeSource"):
            raise Waiting("creating", "ImageNotActive", f"Image {source['image']!r} is not active yet; waiting for it")
        if st.get("virtualSize") and int(st["virtualSize"]) > parse_bytes(spec["size"]):
            raise Waiting("error", "SizeTooSmall", f"Image {source['image']!r} needs {st['virtualSize']} bytes; "
                                                    "raise spec.size")
        kube.apply(volumes.volume_to_data_volume(body, vtype, st["dataVolumeSource"]), "datavolumes")
        return None
    data_source = None
    if source.get("snapshot"):
        snap = kube.get(API_VERSION, "blocksnapshots", source["snapshot"], namespace)
        if snap is None:
            raise Waiting("error", "SnapshotNotFound", f"BlockSnapshot {source['snapshot']!r} does not exist in this namespace")
        sst = snap.get("status") or {}
        if sst.get("phase") != "available":
            raise Waiting("creating", "SnapshotNotReady", f"BlockSnapshot {source['snapshot']!r} is not available yet")
        if sst.get("size") and parse_bytes(sst["size"]) > parse_bytes(spec["size"]):
            raise Waiting("error", "SizeTooSmall", f"BlockSnapshot {source['snapshot']!r} needs at least {sst['size']}; "
                                                    "raise spec.size")
        data_source = volumes.snapshot_data_source(sst.get("volumeSnapshot") or volumes.snapshot_name(source["snapshot"]))
    elif source.get("volume"):
        src = kube.get(API_VERSION, "volumes", source["volume"], namespace)
        if src is None or not (src.get("status") or {}).get("claimName"):
            raise Waiting("creating" if src else "error", "SourceVolumeNotReady" if src else "SourceVolumeNotFound",
                          f"Volume {source['volume']!r} " + ("is not ready yet" if src else "does not exist in this namespace"))
        if parse_bytes(src["spec"]["size"]) > parse_bytes(spec["size"]):
            raise Waiting("error", "SizeTooSmall", f"Volume {source['volume']!r} is {src['spec']['size']}; raise spec.size")
        data_source = volumes.clone_data_source(src["status"]["claimName"])
    kube.apply(volumes.volume_to_claim(body, vtype, data_source))
    return kube.get("v1", "persistentvolumeclaims", claim, namespace)


def _boot_server(namespace: str, volume: str) -> str:
    return server_ctl.boot_server_of(namespace, volume)


def _attachment_of(namespace: str, volume: str, server: str) -> dict | None:
    """Where the volume is attached according to that server's status."""
    if not server:
        return None
    srv = kube.get(API_VERSION, "servers", server, namespace)
    for v in ((srv or {}).get("status") or {}).get("volumes") or []:
        if v.get("name") == volume:
            return {"server": server, "boot": bool(v.get("boot")), "readOnly": bool(v.get("readOnly"))}
    return None


def sync_volume(namespace: str, name: str, kick_servers: bool = True) -> None:
    body = kube.get(API_VERSION, "volumes", name, namespace)
    if not body:
        return
    Volume.model_validate(body)
    generation = body["metadata"].get("generation", 0)
    old = body.get("status") or {}
    status: dict = {}
    try:
        vtype_name, vtype = volume_type(body["spec"].get("volumeType"))
        status["volumeType"] = vtype_name
        pvc = None if body["metadata"].get("deletionTimestamp") else _ensure_claim(body, vtype, namespace)
        if pvc is None:
            pvc = kube.get("v1", "persistentvolumeclaims", volumes.claim_name(name), namespace)
        if pvc is not None:
            status["claimName"] = pvc["metadata"]["name"]
            status["size"] = ((pvc.get("status") or {}).get("capacity") or {}).get("storage", "")
            requested = ((pvc.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage", "")
            if requested and parse_bytes(body["spec"]["size"]) > parse_bytes(requested):
                sc = kube.get("storage.k8s.io/v1", "storageclasses", vtype["storageClassName"]) or {}
                if not vtype.get("allowExpansion") or not sc.get("allowVolumeExpansion"):
                    raise Waiting("error", "ExpansionNotSupported",
                                  f"VolumeType {vtype_name!r} does not allow expansion; set spec.size back to {requested} "
                                  "or copy the data to a volume of an expandable type")
                kube.patch("v1", "persistentvolumeclaims", pvc["metadata"]["name"],
                           {"spec": {"resources": {"requests": {"storage": body["spec"]["size"]}}}}, namespace)
                pvc = kube.get("v1", "persistentvolumeclaims", pvc["metadata"]["name"], namespace)
        wanted = body["spec"].get("attachTo") or ""
        boot_server = _boot_server(namespace, name)
        previous = (old.get("attachment") or {}).get("server", "")
        # Ask the servers concerned to rebuild their VM's volume list once per change of
        # intent (target server, claim); the retries while attaching need not repeat it.
        # The servers read spec.attachTo (through their index); a kick is repeated after
        # REKICK seconds in case the index lagged behind.
        intent = (wanted, previous, old.get("phase") == "error")
        last = _kicked.get((namespace, name))
        if kick_servers and (last is None or last[0] != intent or time.monotonic() - last[1] > REKICK):
            for srv in {wanted, previous} - {""}:
                try:
                    server_ctl.sync_server(namespace, srv)
                except server_ctl.Blocked:
                    pass  # the server says why in its own status
            _kicked[(namespace, name)] = (intent, time.monotonic())
        attachment = _attachment_of(namespace, name, boot_server or wanted) or (
            _attachment_of(namespace, name, previous) if previous and previous != wanted else None)
        if boot_server:
            phase, ready = ("in-use", True) if attachment else ("attaching", False)
            reason, message = ("InUse", f"Boot volume of server {boot_server}") if attachment else (
                "Attaching", f"Becoming the boot volume of server {boot_server}")
        elif wanted and kube.get(API_VERSION, "servers", wanted, namespace) is None:
            phase, ready, reason, message = "available", False, "ServerNotFound", (
                f"Server {wanted!r} does not exist in this namespace; the volume attaches when it does (or remove spec.attachTo)")
        else:
            phase, ready, reason, message = volumes.volume_phase(
                pvc, body["spec"]["size"], attachment, wanted or None, bool(attachment and attachment["server"] == wanted))
        status["attachment"] = attachment
        status["phase"] = "deleting" if body["metadata"].get("deletionTimestamp") and phase == "available" else phase
    except Waiting as waiting:
        status.update(phase=waiting.phase)
        status["conditions"] = set_condition(old.get("conditions"), "Ready", False, waiting.reason, waiting.message, generation)
        status["observedGeneration"] = generation
        _write_status(body, status)
        raise
    status["conditions"] = set_condition(old.get("conditions"), "Ready", ready, reason, message, generation)
    status["observedGeneration"] = generation
    _write_status(body, status)
    if phase in ("creating", "attaching", "detaching", "extending"):
        # Progress arrives as events (the claim's, the server's VM/VMI); this retry is
        # only a safety net, so it is slow.
        raise Waiting(phase, reason, message, delay=SAFETY_NET)


@kopf.on.resume(GROUP, VERSION, "volumes")
@kopf.on.create(GROUP, VERSION, "volumes")
@kopf.on.update(GROUP, VERSION, "volumes", field="spec")
def reconcile_volume(name, namespace, **kwargs) -> None:
    server_ctl.capture_indices(kwargs)
    try:
        sync_volume(namespace, name)
    except Waiting as waiting:
        if waiting.reason == "ExpansionNotSupported":
            return  # nothing changes until the user edits the spec again
        raise kopf.TemporaryError(waiting.message, delay=waiting.delay)


@kopf.on.delete(GROUP, VERSION, "volumes")
def delete_volume(body, name, namespace, logger, **kwargs) -> None:
    server_ctl.capture_indices(kwargs)
    body = kube.plain(body)
    generation = body["metadata"].get("generation", 0)
    users = []
    attach_to = body["spec"].get("attachTo")
    if attach_to and kube.get(API_VERSION, "servers", attach_to, namespace) is not None:
        users.append(f"it is attached to server {attach_to} (remove spec.attachTo to detach)")
    boot = _boot_server(namespace, name)
    if boot:
        users.append(f"server {boot} boots from it (delete that server first)")
    snaps = [s["metadata"]["name"] for s in kube.list_(API_VERSION, "blocksnapshots", namespace)
             if s["spec"].get("volume") == name]
    if snaps:
        users.append(f"it has snapshots {', '.join(sorted(snaps))} (delete them first)")
    if not users and (body.get("status") or {}).get("attachment"):
        users.append(f"it is still detaching from server {body['status']['attachment']['server']}")
        try:
            sync_volume(namespace, name, kick_servers=True)
        except Waiting:
            pass
    if users:
        conditions = set_condition((body.get("status") or {}).get("conditions"), "Ready", False, "DeleteBlocked",
                                   "Deletion waits because " + "; ".join(users), generation)
        _write_status(body, {"conditions": conditions})
        raise kopf.TemporaryError("volume still in use", delay=RETRY)
    _write_status(body, {"phase": "deleting", "conditions": set_condition(
        (body.get("status") or {}).get("conditions"), "Ready", False, "Deleting", "Deleting the storage", generation)})
    claim = volumes.claim_name(name)
    kube.delete(volumes.CDI_API, "datavolumes", claim, namespace)
    kube.delete("v1", "persistentvolumeclaims", claim, namespace, propagation="Background")
    logger.info("claim %s deleted", claim)


@kopf.on.event("", "v1", "persistentvolumeclaims", labels={volumes.VOLUME_LABEL: kopf.PRESENT})
def claim_changed(labels, namespace, **kwargs) -> None:
    server_ctl.capture_indices(kwargs)
    try:
        sync_volume(namespace, labels[volumes.VOLUME_LABEL], kick_servers=False)
    except Waiting:
        pass


def _server_changed(namespace: str, server: str) -> None:
    """A Server's VM or VMI changed: refresh the Volumes attached to (or leaving) it."""
    for entry in server_ctl.volumes_of(namespace, server):
        try:
            sync_volume(namespace, entry["volume"], kick_servers=False)
        except Waiting:
            pass


server_ctl.child_listeners.append(_server_changed)

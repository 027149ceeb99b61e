"""Block storage on the real API server: VolumeType -> Volume (PVC on the stand-in CSI
driver) -> attach to a Server (hotplug into the VM, reported by the VMI) -> extend ->
BlockSnapshot (CSI VolumeSnapshot) -> restore -> detach -> delete, and the refusals."""

from __future__ import annotations

import uuid

import pytest
from kubernetes.client.rest import ApiException

from .kube import wait_for


def vtype(kube, expand=True, snapshots=True, default=False) -> str:
    name = f"vt-{uuid.uuid4().hex[:6]}"
    spec = {"storageClassName": "standin-csi", "allowExpansion": expand, "volumeMode": "Block",
            "qos": {"totalIops": 1000}, "default": default}
    if snapshots:
        spec["snapshotClassName"] = "standin-csi-snapshots"
    kube.create("volumetypes", {"kind": "VolumeType", "metadata": {"name": name}, "spec": spec})
    return name


def flavor(kube) -> str:
    name = f"f-{uuid.uuid4().hex[:8]}"
    kube.create("flavors", {"kind": "Flavor", "metadata": {"name": name}, "spec": {"vcpus": 1, "ram": "1Gi"}})
    return name


def phase_is(kube, plural, name, namespace, phase):
    obj = kube.get(plural, name, namespace)
    return obj if obj and (obj.get("status") or {}).get("phase") == phase else None


def pvc(kube, name, namespace):
    try:
        return kube.core.read_namespaced_persistent_volume_claim(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_volume_lifecycle(kube, operator, namespace):
    t = vtype(kube)
    wait_for(lambda: phase_is(kube, "volumetypes", t, None, "Available"), 30, what="VolumeType Available")
    kube.create("volumes", {"kind": "Volume", "metadata": {"name": "data"}, "spec": {"size": "1Gi", "volumeType": t}}, namespace)
    vol = wait_for(lambda: phase_is(kube, "volumes", "data", namespace, "available"), 60, what="volume available")
    assert vol["status"]["claimName"] == "volume-data" and vol["status"]["size"] == "1Gi"
    claim = pvc(kube, "volume-data", namespace)
    assert claim.status.phase == "Bound" and claim.spec.storage_class_name == "standin-csi"
    assert claim.metadata.annotations["stratus.dev/qos-total-iops"] == "1000"
    assert "available" in kube.kubectl("get", "volumes", "-n", namespace).stdout

    # Attach to a running server: hotplugged into the VM and reported by the VMI.
    f = flavor(kube)
    kube.create("servers", {"kind": "Server", "metadata": {"name": "app"},
                            "spec": {"flavor": f, "containerDisk": "quay.io/containerdisks/fedora:41"}}, namespace)
    wait_for(lambda: phase_is(kube, "servers", "app", namespace, "ACTIVE"), 60, what="server ACTIVE")
    kube.patch("volumes", "data", {"spec": {"attachTo": "app"}}, namespace)
    vol = wait_for(lambda: phase_is(kube, "volumes", "data", namespace, "in-use"), 60, what="volume in-use")
    assert vol["status"]["attachment"] == {"server": "app", "boot": False, "readOnly": False}
    vm_volumes = kube.vm("app", namespace)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "vol-data", "persistentVolumeClaim": {"claimName": "volume-data", "hotpluggable": True, "readOnly": False}} in vm_volumes
    statuses = {v["name"]: v for v in kube.vmi("app", namespace)["status"]["volumeStatus"]}
    assert statuses["vol-data"]["phase"] == "Ready" and "hotplugVolume" in statuses["vol-data"]
    srv = kube.get("servers", "app", namespace)
    assert [v["name"] for v in srv["status"]["volumes"]] == ["data"]

    # Extend: the PVC's request grows and the capacity follows.
    kube.patch("volumes", "data", {"spec": {"size": "3Gi"}}, namespace)
    vol = wait_for(lambda: (v := kube.get("volumes", "data", namespace))["status"].get("size") == "3Gi" and
                   v["status"]["phase"] == "in-use" and v, 60, what="volume grown to 3Gi")
    assert pvc(kube, "volume-data", namespace).status.capacity["storage"] == "3Gi"
    # Shrinking is refused by the API server, naming the field.
    with pytest.raises(ApiException) as info:
        kube.patch("volumes", "data", {"spec": {"size": "2Gi"}}, namespace)
    assert info.value.status == 422 and "spec.size" in info.value.body and "shrink" in info.value.body

    # Snapshot, then restore into a new volume.
    kube.create("blocksnapshots", {"kind": "BlockSnapshot", "metadata": {"name": "snap1"}, "spec": {"volume": "data"}}, namespace)
    snap = wait_for(lambda: phase_is(kube, "blocksnapshots", "snap1", namespace, "available"), 60, what="snapshot available")
    assert snap["status"]["volumeSnapshot"] == "snapshot-snap1" and snap["status"]["size"] == "3Gi"
    vs = kube.get("volumesnapshots", "snapshot-snap1", namespace, group="snapshot.storage.k8s.io", version="v1")
    assert vs["spec"]["source"]["persistentVolumeClaimName"] == "volume-data" and vs["status"]["readyToUse"] is True
    kube.create("volumes", {"kind": "Volume", "metadata": {"name": "small"},
                            "spec": {"size": "1Gi", "volumeType": t, "source": {"snapshot": "snap1"}}}, namespace)
    cond = wait_for(lambda: (c := kube.condition(kube.get("volumes", "small", namespace))).get("reason") == "SizeTooSmall" and c,
                    30, what="SizeTooSmall")
    assert "3Gi" in cond["message"]
    kube.create("volumes", {"kind": "Volume", "metadata": {"name": "restored"},
                            "spec": {"size": "3Gi", "volumeType": t, "source": {"snapshot": "snap1"}}}, namespace)
    wait_for(lambda: phase_is(kube, "volumes", "restored", namespace, "available"), 60, what="restored volume available")
    assert pvc(kube, "volume-restored", namespace).spec.data_source.name == "snapshot-snap1"

    # Deleting an in-use volume waits, saying why, until it is detached.
    kube.delete("blocksnapshots", "snap1", namespace)
    kube.delete("volumes", "data", namespace)
    cond = wait_for(lambda: (c := kube.condition(kube.get("volumes", "data", namespace))).get("reason") == "DeleteBlocked" and c,
                    30, what="DeleteBlocked")
    assert "attached to server app" in cond["message"]
    assert pvc(kube, "volume-data", namespace) is not None
    kube.patch("volumes", "data", {"spec": {"attachTo": None}}, namespace)
    wait_for(lambda: kube.get("volumes", "data", namespace) is None, 60, what="volume deleted after detach")
    wait_for(lambda: not any(v["name"] == "vol-data" for v in kube.vm("app", namespace)["spec"]["template"]["spec"]["volumes"]),
             30, what="the VM no longer has the volume")
    wait_for(lambda: pvc(kube, "volume-data", namespace) is None or pvc(kube, "volume-data", namespace).metadata.deletion_timestamp,
             30, what="the PVC gone")
    reasons = {e.reason for e in kube.events_for(namespace, "data", "Volume")}
    assert {"Available", "InUse"} <= reasons


def test_volume_refusals(kube, operator, namespace):
    t = vtype(kube, expand=False, snapshots=False)
    # No source of two kinds at once.
    with pytest.raises(ApiException) as info:
        kube.create("volumes", {"kind": "Volume", "metadata": {"name": "two"},
                                "spec": {"size": "1Gi", "source": {"snapshot": "a", "volume": "b"}}}, namespace)
    assert info.value.status == 422 and "spec.source" in info.value.body
    kube.create("volumes", {"kind": "Volume", "metadata": {"name": "fixed"}, "spec": {"size": "1Gi", "volumeType": t}}, namespace)
    wait_for(lambda: phase_is(kube, "volumes", "fixed", namespace, "available"), 60, what="available")
    kube.patch("volumes", "fixed", {"spec": {"size": "2Gi"}}, namespace)
    cond = wait_for(lambda: (c := kube.condition(kube.get("volumes", "fixed", namespace))).get("reason") == "ExpansionNotSupported"
                    and c, 30, what="ExpansionNotSupported")
    assert t in cond["message"] and "1Gi" in cond["message"]
    assert pvc(kube, "volume-fixed", namespace).spec.resources.requests["storage"] == "1Gi"
    # The type cannot snapshot.
    kube.create("blocksnapshots", {"kind": "BlockSnapshot", "metadata": {"name": "nope"}, "spec": {"volume": "fixed"}}, namespace)
    wait_for(lambda: kube.condition(kube.get("blocksnapshots", "nope", namespace)).get("reason") == "SnapshotsNotSupported",
             30, what="SnapshotsNotSupported")
    # An unknown type.
    kube.create("volumes", {"kind": "Volume", "metadata": {"name": "lost"}, "spec": {"size": "1Gi", "volumeType": "no-such-type"}},
                namespace)
    cond = wait_for(lambda: (c := kube.condition(kube.get("volumes", "lost", namespace))).get("reason") == "VolumeTypeNotFound" and c,
                    30, what="VolumeTypeNotFound")
    assert "kubectl get volumetypes" in cond["message"]
    # Deleting a volume that has a snapshot waits for the snapshot to go.
    kube.delete("blocksnapshots", "nope", namespace)
    kube.delete("volumes", "fixed", namespace)
    wait_for(lambda: kube.get("volumes", "fixed", namespace) is None, 60, what="volume deleted")


def test_boot_from_volume_and_server_delete_detaches(kube, operator, namespace):
    t = vtype(kube)
    for name in ("boot", "extra"):
        kube.create("volumes", {"kind": "Volume", "metadata": {"name": name}, "spec": {"size": "2Gi", "volumeType": t}}, namespace)
    f = flavor(kube)
    kube.create("servers", {"kind": "Server", "metadata": {"name": "bfv"}, "spec": {"flavor": f, "bootVolume": "boot"}}, namespace)
    srv = wait_for(lambda: phase_is(kube, "servers", "bfv", namespace, "ACTIVE"), 90, what="server ACTIVE")
    root = kube.vm("bfv", namespace)["spec"]["template"]["spec"]["volumes"][0]
    assert root == {"name": "rootdisk", "persistentVolumeClaim": {"claimName": "volume-boot"}}
    assert srv["status"]["volumes"][0] == {"name": "boot", "claimName": "volume-boot", "boot": True, "readOnly": False}
    boot = wait_for(lambda: phase_is(kube, "volumes", "boot", namespace, "in-use"), 30, what="boot volume in-use")
    assert boot["status"]["attachment"]["boot"] is True
    kube.patch("volumes", "extra", {"spec": {"attachTo": "bfv", "readOnly": True}}, namespace)
    extra = wait_for(lambda: phase_is(kube, "volumes", "extra", namespace, "in-use"), 60, what="extra in-use")
    assert extra["status"]["attachment"]["readOnly"] is True
    # The boot volume cannot be deleted while the server boots from it.
    kube.delete("volumes", "boot", namespace)
    cond = wait_for(lambda: (c := kube.condition(kube.get("volumes", "boot", namespace))).get("reason") == "DeleteBlocked" and c,
                    30, what="DeleteBlocked")
    assert "boots from it" in cond["message"]
    # Deleting the server detaches its volumes first; they outlive it.
    kube.delete("servers", "bfv", namespace)
    wait_for(lambda: kube.get("servers", "bfv", namespace) is None, 60, what="server deleted")
    extra = wait_for(lambda: phase_is(kube, "volumes", "extra", namespace, "available"), 60, what="extra available again")
    assert extra["spec"].get("attachTo") is None and extra["status"].get("attachment") is None
    wait_for(lambda: kube.get("volumes", "boot", namespace) is None, 60, what="boot volume deleted once its server is gone")

"""Pure block-storage logic: claims and DataVolumes from Volumes, CSI snapshots, phases."""

from __future__ import annotations

import pytest

from stratus.core import volumes

VTYPE = {"storageClassName": "fast", "accessMode": "ReadWriteOnce", "volumeMode": "Block",
         "qos": {"totalIops": 500}, "snapshotClassName": "snaps", "allowExpansion": True}


def volume(**spec):
    return {"apiVersion": "stratus.dev/v1alpha1", "kind": "Volume",
            "metadata": {"name": "data", "namespace": "demo", "uid": "v-1"}, "spec": {"size": "10Gi", **spec}}


@pytest.mark.parametrize(
    "source, expected",
    [
        (None, None),
        (volumes.snapshot_data_source("snapshot-s1"), {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snapshot-s1"}),
        (volumes.clone_data_source("volume-src"), {"kind": "PersistentVolumeClaim", "name": "volume-src"}),
    ],
    ids=["blank", "from-snapshot", "clone"],
)
def test_claim(source, expected):
    pvc = volumes.volume_to_claim(volume(), VTYPE, source)
    assert pvc["metadata"]["name"] == "volume-data"
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "v-1"
    assert pvc["metadata"]["annotations"] == {"stratus.dev/qos-total-iops": "500"}
    assert pvc["spec"]["storageClassName"] == "fast" and pvc["spec"]["volumeMode"] == "Block"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert pvc["spec"].get("dataSource") == expected


def test_data_volume_for_image_content():
    dv = volumes.volume_to_data_volume(volume(), VTYPE, {"http": {"url": "u"}})
    assert dv["kind"] == "DataVolume" and dv["metadata"]["name"] == "volume-data"
    assert dv["spec"]["source"] == {"http": {"url": "u"}} and dv["spec"]["storage"]["storageClassName"] == "fast"


def test_volume_snapshot():
    snap = {"kind": "BlockSnapshot", "metadata": {"name": "s1", "namespace": "demo", "uid": "s-1"}, "spec": {"volume": "data"}}
    vs = volumes.snapshot_to_volume_snapshot(snap, "volume-data", "snaps")
    assert vs["metadata"]["name"] == "snapshot-s1"
    assert vs["spec"] == {"volumeSnapshotClassName": "snaps", "source": {"persistentVolumeClaimName": "volume-data"}}


BOUND = {"status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}}


@pytest.mark.parametrize(
    "claim, size, attachment, wanted, attached, phase",
    [
        (None, "10Gi", None, None, False, "creating"),
        ({"status": {"phase": "Pending"}}, "10Gi", None, None, False, "creating"),
        (BOUND, "10Gi", None, None, False, "available"),
        (BOUND, "20Gi", None, None, False, "extending"),
        (BOUND, "10Gi", None, "web", False, "attaching"),
        (BOUND, "10Gi", {"server": "web"}, "web", True, "in-use"),
        (BOUND, "10Gi", {"server": "web"}, None, False, "detaching"),
    ],
)
def test_volume_phase(claim, size, attachment, wanted, attached, phase):
    got, ready, reason, message = volumes.volume_phase(claim, size, attachment, wanted, attached)
    assert got == phase
    assert ready == (phase in ("available", "in-use"))
    assert reason[0].isupper() and message


@pytest.mark.parametrize(
    "vs, phase",
    [
        (None, "creating"),
        ({"status": {}}, "creating"),
        ({"status": {"readyToUse": True}}, "available"),
        ({"status": {"error": {"message": "boom"}}}, "error"),
    ],
)
def test_snapshot_phase(vs, phase):
    assert volumes.snapshot_phase(vs)[0] == phase

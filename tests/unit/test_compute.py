"""Pure compute logic: VM builder (root disks, volumes, groups, networks), image checks,
status derivation and quota math — table-driven."""

from __future__ import annotations

import pytest

from stratus.core import compute, quota
from stratus.core.compute import DataVolumeDisk, FlavorSize, Observed, RootDisk

GI = 1 << 30
SMALL = FlavorSize(vcpus=2, ram_bytes=4 * GI, disk_bytes=20 * GI)


def server(**spec) -> dict:
    return {
        "apiVersion": "stratus.dev/v1alpha1", "kind": "Server",
        "metadata": {"name": "web", "namespace": "demo", "uid": "u-1", "generation": 3},
        "spec": {"flavor": "m1", "powerState": "Running", **spec},
    }


def template(vm: dict) -> dict:
    return vm["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    "spec, root, expected_root",
    [
        ({"containerDisk": "quay.io/x/y:1"}, None, {"name": "rootdisk", "containerDisk": {"image": "quay.io/x/y:1"}}),
        ({"image": "fedora"}, RootDisk(image_source={"http": {"url": "u"}}, image_size_bytes=30 * GI),
         {"name": "rootdisk", "dataVolume": {"name": compute.root_disk_name("web", "fedora")}}),
        ({"bootVolume": "boot"}, RootDisk(claim_name="volume-boot"),
         {"name": "rootdisk", "persistentVolumeClaim": {"claimName": "volume-boot"}}),
    ],
    ids=["container-disk", "image", "boot-volume"],
)
def test_root_disk_choices(spec, root, expected_root):
    vm = compute.server_to_virtual_machine(server(**spec), SMALL, root=root)
    assert template(vm)["volumes"][0] == expected_root
    dvt = vm["spec"].get("dataVolumeTemplates")
    if "image" in spec:
        assert dvt[0]["metadata"]["name"] == compute.root_disk_name("web", "fedora") == compute.vm_root_data_volume(vm)
        assert compute.root_disk_name("web", "fedora") != compute.root_disk_name("web", "ubuntu")
        assert dvt[0]["spec"]["source"] == {"http": {"url": "u"}}
        assert dvt[0]["spec"]["storage"]["resources"]["requests"]["storage"] == "30Gi"
    else:
        assert dvt is None


def test_attached_volumes_are_hotpluggable_scsi_disks_in_name_order():
    vm = compute.server_to_virtual_machine(server(containerDisk="a/b:1"), SMALL, volumes=[
        DataVolumeDisk("zeta", "volume-zeta"), DataVolumeDisk("alpha", "volume-alpha", read_only=True)])
    vols = template(vm)["volumes"][1:]
    assert [v["name"] for v in vols] == ["vol-alpha", "vol-zeta"]
    assert vols[0]["persistentVolumeClaim"] == {"claimName": "volume-alpha", "hotpluggable": True, "readOnly": True}
    disks = template(vm)["domain"]["devices"]["disks"]
    assert disks[1]["disk"] == {"bus": "scsi", "readonly": True} and disks[2]["disk"] == {"bus": "scsi"}


@pytest.mark.parametrize(
    "policy, kind, mode",
    [
        ("affinity", "podAffinity", "requiredDuringSchedulingIgnoredDuringExecution"),
        ("anti-affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"),
        ("soft-affinity", "podAffinity", "preferredDuringSchedulingIgnoredDuringExecution"),
        ("soft-anti-affinity", "podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution"),
    ],
)
def test_server_group_policy_becomes_pod_affinity(policy, kind, mode):
    vm = compute.server_to_virtual_machine(server(containerDisk="a/b:1", serverGroup="g"), SMALL, group_policy=policy)
    affinity = template(vm)["affinity"]
    assert list(affinity) == [kind] and list(affinity[kind]) == [mode]
    term = affinity[kind][mode][0]
    term = term.get("podAffinityTerm", term)
    assert term == {"labelSelector": {"matchLabels": {compute.GROUP_LABEL: "g"}}, "topologyKey": "kubernetes.io/hostname"}
    assert vm["spec"]["template"]["metadata"]["labels"][compute.GROUP_LABEL] == "g"


def test_networks_add_multus_interfaces_after_the_pod_network():
    vm = compute.server_to_virtual_machine(server(containerDisk="a/b:1", networks=[{"name": "storage-net"}]), SMALL)
    assert template(vm)["networks"] == [{"name": "default", "pod": {}},
                                        {"name": "net1", "multus": {"networkName": "storage-net"}}]
    assert [i["name"] for i in template(vm)["domain"]["devices"]["interfaces"]] == ["default", "net1"]


def image(phase="active", virtual=10 * GI, min_disk=0, min_ram=0):
    return {"spec": {"minDisk": min_disk, "minRam": min_ram},
            "status": {"phase": phase, "virtualSize": virtual, "dataVolumeSource": {"registry": {"url": "docker://x"}}}}


@pytest.mark.parametrize(
    "img, reason, size",
    [
        (None, "ImageNotFound", None),
        (image(phase="queued"), "ImageNotActive", None),
        (image(min_ram=8192), "FlavorMemoryTooSmall", None),
        (image(min_disk=40), "FlavorDiskTooSmall", None),
        (image(virtual=10 * GI), "", 20 * GI),
        (image(virtual=25 * GI), "", 25 * GI),
    ],
    ids=["missing", "not-active", "min-ram", "min-disk", "flavor-disk-wins", "image-size-wins"],
)
def test_image_root_disk(img, reason, size):
    root, why, message = compute.image_root_disk(img, "fedora", SMALL)
    assert why == reason
    if reason:
        assert root is None and "fedora" in message
    else:
        assert root.image_size_bytes == size and root.image_source == {"registry": {"url": "docker://x"}}


def vmi(phase="Running", node="hv-01", **extra):
    return {"metadata": {"name": "web"}, "status": {"phase": phase, "nodeName": node, **extra}}


VM = {"metadata": {"name": "web"}, "spec": {"template": {"spec": {"volumes": [
    {"name": "rootdisk", "persistentVolumeClaim": {"claimName": "volume-boot"}},
    {"name": "vol-data", "persistentVolumeClaim": {"claimName": "volume-data", "hotpluggable": True}}]}}}}


@pytest.mark.parametrize(
    "observed, spec, phase, reason",
    [
        (Observed(), {}, "BUILD", "Creating"),
        (Observed(vm=VM, vmi=vmi()), {}, "ACTIVE", "Running"),
        (Observed(vm=VM, vmi=vmi(migrationState={"completed": False})), {}, "MIGRATING", "Migrating"),
        (Observed(vm=VM, vmi=vmi(migrationState={"completed": True})), {}, "ACTIVE", "Running"),
        (Observed(vm=VM, vmi=vmi(), migration={"metadata": {"name": "m"}, "status": {"phase": "Scheduling"}}), {},
         "MIGRATING", "Migrating"),
        (Observed(vm=VM, vmi=vmi(), migration={"metadata": {"name": "m"}, "status": {"phase": "Failed"}}), {},
         "ACTIVE", "MigrationFailed"),
        (Observed(vm=VM, root_data_volume={"status": {"phase": "ImportInProgress", "progress": "40%"}}), {},
         "BUILD", "ProvisioningRootDisk"),
        (Observed(vm=VM, root_data_volume={"status": {"phase": "Failed"}}), {}, "ERROR", "RootDiskFailed"),
        (Observed(vm=VM, vmi=vmi()), {"powerState": "Paused"}, "ACTIVE", "Pausing"),
        (Observed(vm=VM, vmi=vmi(conditions=[{"type": "Paused", "status": "True"}])), {"powerState": "Paused"}, "PAUSED", "Paused"),
        (Observed(vm=VM, vmi=vmi(conditions=[{"type": "Paused", "status": "True"}])), {}, "PAUSED", "Unpausing"),
        (Observed(vm=VM, vmi=vmi(), action="reboot"), {}, "HARD_REBOOT", "Rebooting"),
        (Observed(vm=VM, vmi=vmi(), action="rebuild"), {}, "REBUILD", "Rebuilding"),
        (Observed(vm=VM), {"powerState": "Stopped"}, "SHUTOFF", "Stopped"),
        (Observed(vm=VM, vmi=vmi()), {"powerState": "Stopped"}, "BUILD", "Stopping"),
    ],
    ids=["no-vm", "running", "migrating-vmi", "migrated", "migration-object", "migration-failed", "root-disk",
         "root-disk-failed", "pausing", "paused", "unpausing", "rebooting", "rebuilding", "stopped", "stopping"],
)
def test_server_status_phases(observed, spec, phase, reason):
    out = compute.server_status(server(containerDisk="a/b:1", **spec), observed, SMALL)
    assert out["phase"] == phase
    ready = next(c for c in out["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == reason and ready["observedGeneration"] == 3


def test_attached_volumes_wait_for_the_vmi_to_report_hotplug_ready():
    ready = vmi(volumeStatus=[{"name": "vol-data", "phase": "Ready"}])
    pending = vmi(volumeStatus=[{"name": "vol-data", "phase": "Pending"}])
    assert [v["name"] for v in compute.attached_volumes(VM, ready, "boot")] == ["boot", "data"]
    assert [v["name"] for v in compute.attached_volumes(VM, pending, "boot")] == ["boot"]
    # A stopped server holds its persisted volumes.
    assert [v["name"] for v in compute.attached_volumes(VM, None, "boot")] == ["boot", "data"]


@pytest.mark.parametrize(
    "limits, used, wanted, over",
    [
        (None, quota.Usage(100, 100, 100 * GI), quota.Usage(1, 2, GI), []),
        ({"servers": 2}, quota.Usage(1, 2, GI), quota.Usage(1, 2, GI), []),
        ({"servers": 2}, quota.Usage(2, 2, GI), quota.Usage(1, 2, GI), ["servers 3 > 2"]),
        ({"vcpus": 4, "memory": "8Gi"}, quota.Usage(1, 3, 6 * GI), quota.Usage(1, 2, 4 * GI),
         ["vCPUs 5 > 4", "memory 10Gi > 8Gi"]),
        ({"servers": 1}, quota.Usage(1, 2, GI), quota.Usage(0, 2, GI), []),  # a resize is not a new server
        ({"vcpus": 4}, quota.Usage(1, 4, GI), quota.Usage(0, -2, 0), []),  # shrinking always fits
        ({"servers": 0}, quota.Usage(), quota.Usage(1, 1, GI), ["servers 1 > 0"]),
    ],
    ids=["no-quota", "fits", "servers-full", "vcpus-and-memory", "resize-not-counted-as-server", "shrink", "zero"],
)
def test_quota_check(limits, used, wanted, over):
    message = quota.check(limits, used, wanted)
    for part in over:
        assert part in message
    assert bool(message) == bool(over)
    if over:
        assert "quota" in message


def test_vm_size_reads_requests():
    vm = compute.server_to_virtual_machine(server(containerDisk="a/b:1"), SMALL)
    assert compute.vm_size(vm) == (2, 4 * GI)


def test_migration_to_a_named_node():
    mig = compute.migration_object("web", "demo", "web-m1", "hv-02")
    assert mig["spec"] == {"vmiName": "web", "addedNodeSelector": {"kubernetes.io/hostname": "hv-02"}}
    assert "addedNodeSelector" not in compute.migration_object("web", "demo", "web-m2", None)["spec"]


def test_halt_stops_the_vm_whatever_the_power_state():
    assert compute.server_to_virtual_machine(server(containerDisk="a/b:1"), SMALL, halt=True)["spec"]["runStrategy"] == "Halted"
    assert compute.server_to_virtual_machine(server(containerDisk="a/b:1", powerState="Paused"), SMALL)["spec"]["runStrategy"] == "Always"


@pytest.mark.parametrize(
    "extra, vcpus, domain, problems",
    [
        ({}, 4, {"cpu": {"sockets": 1, "threads": 1, "cores": 4}, "memory": {}, "devices": {}}, []),
        ({"hw:cpu_policy": "dedicated", "hw:cpu_sockets": "2"}, 4,
         {"cpu": {"dedicatedCpuPlacement": True, "sockets": 2, "threads": 1, "cores": 2}, "memory": {}, "devices": {}}, []),
        ({"hw:mem_page_size": "1GB"}, 2,
         {"cpu": {"sockets": 1, "threads": 1, "cores": 2}, "memory": {"hugepages": {"pageSize": "1Gi"}}, "devices": {}}, []),
        ({"pci_passthrough:alias": "nvidia.com/A100:2"}, 2,
         {"cpu": {"sockets": 1, "threads": 1, "cores": 2}, "memory": {},
          "devices": {"gpus": [{"name": "gpu1", "deviceName": "nvidia.com/A100"}, {"name": "gpu2", "deviceName": "nvidia.com/A100"}]}}, []),
        ({"hw:cpu_threads": "2"}, 3, None, ["do not divide"]),
        ({"hw:cpu_policy": "exclusive"}, 2, None, ["hw:cpu_policy"]),
        ({"hw:mem_page_size": "3MB"}, 2, None, ["hw:mem_page_size"]),
        ({"pci_passthrough:alias": "gpu:many"}, 2, None, ["pci_passthrough:alias"]),
        ({"aggregate_instance_extra_specs:ssd": "true"}, 1, {"cpu": {"sockets": 1, "threads": 1, "cores": 1}, "memory": {}, "devices": {}}, []),
    ],
    ids=["none", "dedicated-2-sockets", "hugepages-1g", "two-gpus", "bad-topology", "bad-policy", "bad-page", "bad-gpu",
         "unknown-ignored"],
)
def test_extra_specs_to_domain(extra, vcpus, domain, problems):
    got, errors = compute.extra_specs_to_domain(extra, vcpus)
    assert len(errors) == len(problems) and all(p in e for p, e in zip(problems, errors))
    if domain is not None:
        assert got == domain


def test_flavor_extra_specs_reach_the_vm():
    flavor = FlavorSize.from_spec({"vcpus": 4, "ram": "8Gi", "extraSpecs": {"hw:cpu_policy": "dedicated", "hw:mem_page_size": "large"}})
    domain = template(compute.server_to_virtual_machine(server(containerDisk="a/b:1"), flavor))["domain"]
    assert domain["cpu"]["dedicatedCpuPlacement"] is True and domain["memory"]["hugepages"] == {"pageSize": "2Mi"}


def test_flavor_to_instancetype_carries_size_and_what_extra_specs_can_say():
    flavor = {"apiVersion": "stratus.dev/v1alpha1", "kind": "Flavor",
              "metadata": {"name": "g1.large", "uid": "u-1"},
              "spec": {"vcpus": 8, "ram": "32Gi", "extraSpecs": {
                  "hw:cpu_policy": "dedicated", "hw:mem_page_size": "large", "stratus:gpu": "nvidia.com/A10:2",
                  "hw:cpu_sockets": "2"}}}
    it = compute.flavor_to_instancetype(flavor)
    assert it["kind"] == "VirtualMachineClusterInstancetype" and it["apiVersion"] == "instancetype.kubevirt.io/v1beta1"
    assert it["metadata"]["name"] == "g1.large"
    assert it["metadata"]["labels"] == {"stratus.dev/flavor": "g1.large"}
    assert it["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert it["spec"] == {
        "cpu": {"guest": 8, "dedicatedCPUPlacement": True},
        "memory": {"guest": "32Gi", "hugepages": {"pageSize": "2Mi"}},
        "gpus": [{"name": "gpu1", "deviceName": "nvidia.com/A10"}, {"name": "gpu2", "deviceName": "nvidia.com/A10"}],
    }
    plain = compute.flavor_to_instancetype({**flavor, "spec": {"vcpus": 1, "ram": "512Mi"}})
    assert plain["spec"] == {"cpu": {"guest": 1}, "memory": {"guest": "512Mi"}}

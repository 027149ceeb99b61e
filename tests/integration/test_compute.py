"""Nova on the real API server: server groups placed by the real scheduler, quota from
the Project, resize, live migration by annotation, root-disk choices and refusals."""

from __future__ import annotations

import uuid

import pytest
from kubernetes.client.rest import ApiException

from .kube import wait_for


def flavor(kube, vcpus=1, ram="1Gi", **spec) -> str:
    name = f"f-{uuid.uuid4().hex[:8]}"
    kube.create("flavors", {"kind": "Flavor", "metadata": {"name": name}, "spec": {"vcpus": vcpus, "ram": ram, **spec}})
    return name


def server(kube, namespace, name, flavor_name, **spec):
    body = {"kind": "Server", "metadata": {"name": name},
            "spec": {"flavor": flavor_name, **({"containerDisk": "quay.io/containerdisks/fedora:41"}
                                               if not ({"image", "bootVolume"} & set(spec)) else {}), **spec}}
    return kube.create("servers", body, namespace)


def phase_is(kube, name, namespace, phase):
    obj = kube.get("servers", name, namespace)
    return obj if obj and (obj.get("status") or {}).get("phase") == phase else None


def reason_is(kube, name, namespace, reason):
    cond = kube.condition(kube.get("servers", name, namespace))
    return cond if cond.get("reason") == reason else None


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"image": "fedora", "containerDisk": "quay.io/x/y:1"}, "spec.image"),
        ({"serverGroup": "BAD_NAME", "containerDisk": "quay.io/x/y:1"}, "spec.serverGroup"),
    ],
    ids=["two-root-disks", "bad-group-name"],
)
def test_api_server_refuses_bad_servers(kube, crds, namespace, extra, field):
    with pytest.raises(ApiException) as info:
        kube.create("servers", {"kind": "Server", "metadata": {"name": "bad"}, "spec": {"flavor": "m1", **extra}}, namespace)
    assert info.value.status == 422 and field in info.value.body


def test_anti_affinity_group_places_servers_on_different_nodes(kube, operator, namespace):
    kube.create("servergroups", {"kind": "ServerGroup", "metadata": {"name": "ha"}, "spec": {"policy": "anti-affinity"}}, namespace)
    f = flavor(kube)
    for n in ("ha-1", "ha-2"):
        server(kube, namespace, n, f, serverGroup="ha")
    nodes = [wait_for(lambda n=n: phase_is(kube, n, namespace, "ACTIVE"), 60, what=f"{n} ACTIVE")["status"]["node"] for n in ("ha-1", "ha-2")]
    assert nodes[0] != nodes[1]
    pods = kube.core.list_namespaced_pod(namespace, label_selector="stratus.dev/server-group=ha").items
    assert sorted(p.spec.node_name for p in pods) == sorted(nodes)
    assert all(p.spec.affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution for p in pods)
    group = wait_for(lambda: (g := kube.get("servergroups", "ha", namespace))["status"].get("nodes") == sorted(nodes) and g, 30,
                     what="group status lists both nodes")
    assert group["status"]["members"] == ["ha-1", "ha-2"]
    # The policy cannot change.
    with pytest.raises(ApiException) as info:
        kube.patch("servergroups", "ha", {"spec": {"policy": "affinity"}}, namespace)
    assert "spec.policy" in info.value.body


def test_affinity_group_shares_a_node(kube, operator, namespace):
    kube.create("servergroups", {"kind": "ServerGroup", "metadata": {"name": "pair"}, "spec": {"policy": "affinity"}}, namespace)
    f = flavor(kube)
    server(kube, namespace, "p-1", f, serverGroup="pair")
    first = wait_for(lambda: phase_is(kube, "p-1", namespace, "ACTIVE"), 60, what="p-1 ACTIVE")["status"]["node"]
    server(kube, namespace, "p-2", f, serverGroup="pair")
    second = wait_for(lambda: phase_is(kube, "p-2", namespace, "ACTIVE"), 60, what="p-2 ACTIVE")["status"]["node"]
    assert first == second


def test_missing_dependencies_are_conditions(kube, operator, namespace):
    f = flavor(kube)
    server(kube, namespace, "no-group", f, serverGroup="nowhere")
    cond = wait_for(lambda: reason_is(kube, "no-group", namespace, "ServerGroupNotFound"), 30, what="ServerGroupNotFound")
    assert "nowhere" in cond["message"]
    server(kube, namespace, "no-image", f, image="no-such-image")
    cond = wait_for(lambda: reason_is(kube, "no-image", namespace, "ImageNotFound"), 30, what="ImageNotFound")
    assert "no-such-image" in cond["message"]
    server(kube, namespace, "no-vol", f, bootVolume="no-such-volume")
    wait_for(lambda: reason_is(kube, "no-vol", namespace, "BootVolumeNotFound"), 30, what="BootVolumeNotFound")
    for n in ("no-group", "no-image", "no-vol"):
        assert kube.vm(n, namespace) is None
        assert kube.get("servers", n, namespace)["status"]["phase"] == "ERROR"
    # The group appears: the server heals by itself.
    kube.create("servergroups", {"kind": "ServerGroup", "metadata": {"name": "nowhere"}, "spec": {"policy": "soft-anti-affinity"}},
                namespace)
    wait_for(lambda: phase_is(kube, "no-group", namespace, "ACTIVE"), 60, what="ACTIVE once the group exists")


def test_quota_from_the_project(kube, operator):
    project = f"q-{uuid.uuid4().hex[:6]}"
    kube.create("projects", {"kind": "Project", "metadata": {"name": project},
                             "spec": {"quota": {"servers": 5, "vcpus": 3, "memory": "8Gi"}}})
    wait_for(lambda: kube.condition(kube.get("projects", project)).get("status") == "True", 30, what="Project Ready")
    ns = project
    try:
        small, big = flavor(kube, vcpus=1, ram="1Gi"), flavor(kube, vcpus=2, ram="2Gi")
        server(kube, ns, "a", small)
        wait_for(lambda: phase_is(kube, "a", ns, "ACTIVE"), 60, what="a ACTIVE")
        server(kube, ns, "b", big)
        wait_for(lambda: phase_is(kube, "b", ns, "ACTIVE"), 60, what="b ACTIVE")
        server(kube, ns, "c", small)
        cond = wait_for(lambda: reason_is(kube, "c", ns, "QuotaExceeded"), 30, what="QuotaExceeded")
        assert "vCPUs 4 > 3" in cond["message"] and "servers" not in cond["message"].split("(")[1].split(")")[0]
        assert kube.vm("c", ns) is None
        assert "QuotaExceeded" in {e.reason for e in kube.events_for(ns, "c", "Server")}
        # A resize that would exceed the vCPU quota is refused too; the VM keeps its size.
        kube.patch("servers", "a", {"spec": {"flavor": big}}, ns)
        wait_for(lambda: reason_is(kube, "a", ns, "QuotaExceeded"), 30, what="resize QuotaExceeded")
        assert kube.vm("a", ns)["spec"]["template"]["spec"]["domain"]["cpu"]["cores"] == 1
        kube.patch("servers", "a", {"spec": {"flavor": small}}, ns)
        # Freeing a slot lets the waiting server in.
        kube.delete("servers", "b", ns)
        wait_for(lambda: phase_is(kube, "c", ns, "ACTIVE"), 90, what="c ACTIVE once b is gone")
    finally:
        kube.delete("projects", project)


def test_server_lifecycle_resize_and_migrate(kube, operator, namespace):
    f1, f2 = flavor(kube, vcpus=1, ram="1Gi"), flavor(kube, vcpus=2, ram="2Gi")
    server(kube, namespace, "life", f1)
    srv = wait_for(lambda: phase_is(kube, "life", namespace, "ACTIVE"), 60, what="ACTIVE")
    assert srv["status"]["launchedAt"] and srv["status"]["flavor"] == f1
    # Resize: the VM template changes now; the new size runs from the next start.
    kube.patch("servers", "life", {"spec": {"flavor": f2}}, namespace)
    wait_for(lambda: (s := kube.get("servers", "life", namespace))["status"].get("vcpus") == 2 and s["status"]["flavor"] == f2, 30,
             what="status reports the new flavor")
    assert kube.vm("life", namespace)["spec"]["template"]["spec"]["domain"]["resources"]["requests"] == {"cpu": "2", "memory": "2Gi"}
    kube.patch("servers", "life", {"spec": {"powerState": "Stopped"}}, namespace)
    wait_for(lambda: phase_is(kube, "life", namespace, "SHUTOFF"), 60, what="SHUTOFF")
    kube.patch("servers", "life", {"spec": {"powerState": "Running"}}, namespace)
    before = wait_for(lambda: phase_is(kube, "life", namespace, "ACTIVE"), 60, what="ACTIVE after restart")["status"]["node"]
    assert kube.vmi("life", namespace)["spec"]["domain"]["resources"]["requests"]["cpu"] == "2"
    # Live migration to a named node, by one-shot annotation.
    target = next(n.metadata.name for n in kube.core.list_node().items if n.metadata.name != before)
    kube.patch("servers", "life", {"metadata": {"annotations": {"stratus.dev/migrate": target}}}, namespace)
    wait_for(lambda: (s := kube.get("servers", "life", namespace))["status"]["node"] == target and s["status"]["phase"] == "ACTIVE",
             60, what=f"moved to {target}")
    srv = kube.get("servers", "life", namespace)
    assert "stratus.dev/migrate" not in (srv["metadata"].get("annotations") or {})
    mig = kube.get("virtualmachineinstancemigrations", srv["status"]["migration"], namespace, group="kubevirt.io", version="v1")
    assert mig["status"]["phase"] == "Succeeded" and mig["spec"]["addedNodeSelector"] == {"kubernetes.io/hostname": target}
    # Pause and unpause (declarative): the VMI reports the Paused condition.
    kube.patch("servers", "life", {"spec": {"powerState": "Paused"}}, namespace)
    wait_for(lambda: phase_is(kube, "life", namespace, "PAUSED"), 60, what="PAUSED")
    assert any(c["type"] == "Paused" and c["status"] == "True" for c in kube.vmi("life", namespace)["status"]["conditions"])
    kube.patch("servers", "life", {"spec": {"powerState": "Running"}}, namespace)
    wait_for(lambda: phase_is(kube, "life", namespace, "ACTIVE"), 60, what="ACTIVE after unpause")
    assert not any(c["type"] == "Paused" for c in kube.vmi("life", namespace)["status"]["conditions"])
    # Hard reboot by annotation: a new VMI, the same Server.
    old_uid = kube.vmi("life", namespace)["metadata"]["uid"]
    kube.patch("servers", "life", {"metadata": {"annotations": {"stratus.dev/reboot": "hard"}}}, namespace)
    wait_for(lambda: (v := kube.vmi("life", namespace)) and v["metadata"]["uid"] != old_uid and phase_is(kube, "life", namespace, "ACTIVE"),
             90, what="ACTIVE on a new VMI after reboot")
    assert "stratus.dev/reboot" not in (kube.get("servers", "life", namespace)["metadata"].get("annotations") or {})
    reasons = {e.reason for e in kube.events_for(namespace, "life", "Server")}
    assert {"Running", "Stopped", "MigrationStarted", "Paused", "Rebooting", "Rebooted"} <= reasons
    kube.delete("servers", "life", namespace)
    wait_for(lambda: kube.get("servers", "life", namespace) is None and kube.vm("life", namespace) is None, 60, what="deleted")


def test_server_from_image_and_rebuild(kube, operator, namespace):
    for img in ("fedora", "debian"):
        kube.create("images", {"kind": "Image", "metadata": {"name": img},
                               "spec": {"source": {"registry": {"url": f"quay.io/containerdisks/{img}:1"}},
                                        "diskFormat": "qcow2", "containerFormat": "docker"}}, namespace)
    f = flavor(kube)
    server(kube, namespace, "img", f, image="fedora")
    srv = wait_for(lambda: phase_is(kube, "img", namespace, "ACTIVE"), 90, what="ACTIVE from an image")
    vm = kube.vm("img", namespace)
    first = vm["spec"]["dataVolumeTemplates"][0]
    assert first["spec"]["source"] == {"registry": {"url": "docker://quay.io/containerdisks/fedora:1"}}
    assert first["spec"]["storage"]["resources"]["requests"]["storage"] == "10Gi"  # the flavor's disk
    wait_for(lambda: (kube.get("datavolumes", first["metadata"]["name"], namespace, group="cdi.kubevirt.io", version="v1beta1")
                      or {}).get("status", {}).get("phase") == "Succeeded", 30, what="root disk DataVolume Succeeded")
    wait_for(lambda: kube.get("servers", "img", namespace)["status"].get("rootDisk") == first["metadata"]["name"], 30,
             what="status.rootDisk")
    # Rebuild: a new image, a new root disk, a fresh start; the old disk goes.
    old_vmi = kube.vmi("img", namespace)["metadata"]["uid"]
    kube.patch("servers", "img", {"spec": {"image": "debian"}}, namespace)
    wait_for(lambda: (v := kube.vmi("img", namespace)) and v["metadata"]["uid"] != old_vmi
             and phase_is(kube, "img", namespace, "ACTIVE"), 90, what="ACTIVE after rebuild")
    second = kube.vm("img", namespace)["spec"]["dataVolumeTemplates"][0]["metadata"]["name"]
    assert second != first["metadata"]["name"]
    wait_for(lambda: kube.get("datavolumes", first["metadata"]["name"], namespace, group="cdi.kubevirt.io", version="v1beta1") is None,
             60, what="the old root disk deleted")
    assert {"Rebuilding", "Rebuilt"} <= {e.reason for e in kube.events_for(namespace, "img", "Server")}


IT_GROUP, IT_VERSION, INSTANCETYPES = "instancetype.kubevirt.io", "v1beta1", "virtualmachineclusterinstancetypes"


def test_flavor_is_mirrored_as_a_kubevirt_cluster_instancetype(kube, operator):
    """Where the cluster serves VirtualMachineClusterInstancetype (the stand-in CRD here),
    each flavor is published as one of the same name; it follows the flavor and goes with it.
    An instancetype of that name that is not Stratus's is left alone, and the flavor says so."""
    name = flavor(kube, vcpus=4, ram="8Gi", extraSpecs={"hw:cpu_policy": "dedicated", "hw:mem_page_size": "1GB"})
    found = wait_for(lambda: kube.get(INSTANCETYPES, name, group=IT_GROUP, version=IT_VERSION), 60,
                     what=f"instancetype {name} published")
    assert found["spec"]["cpu"] == {"guest": 4, "dedicatedCPUPlacement": True}
    assert found["spec"]["memory"] == {"guest": "8Gi", "hugepages": {"pageSize": "1Gi"}}
    status = wait_for(lambda: (kube.get("flavors", name).get("status") or {}).get("instancetype") and
                      kube.get("flavors", name)["status"], 60, what="flavor status names its instancetype")
    assert status["instancetype"] == name and name in kube.condition(kube.get("flavors", name))["message"]

    kube.patch("flavors", name, {"spec": {"ram": "16Gi"}})
    wait_for(lambda: kube.get(INSTANCETYPES, name, group=IT_GROUP, version=IT_VERSION)["spec"]["memory"]["guest"] == "16Gi",
             60, what="instancetype follows the flavor's memory")

    kube.delete("flavors", name)
    wait_for(lambda: kube.get(INSTANCETYPES, name, group=IT_GROUP, version=IT_VERSION) is None, 60,
             what="instancetype deleted with its flavor (owner reference, garbage collector)")

    # Someone else's instancetype of the same name (KubeVirt's common ones, say) is not taken over.
    foreign = f"f-{uuid.uuid4().hex[:8]}"
    kube.custom.create_cluster_custom_object(IT_GROUP, IT_VERSION, INSTANCETYPES, {
        "apiVersion": f"{IT_GROUP}/{IT_VERSION}", "kind": "VirtualMachineClusterInstancetype",
        "metadata": {"name": foreign}, "spec": {"cpu": {"guest": 1}, "memory": {"guest": "1Gi"}}})
    try:
        kube.create("flavors", {"kind": "Flavor", "metadata": {"name": foreign}, "spec": {"vcpus": 2, "ram": "2Gi"}})
        cond = wait_for(lambda: (kube.get("flavors", foreign).get("status") or {}).get("phase") == "Available" and
                        kube.condition(kube.get("flavors", foreign)), 60, what="flavor available")
        assert "not published as a KubeVirt instancetype" in cond["message"] and "rename the flavor" in cond["message"]
        assert kube.get("flavors", foreign)["status"].get("instancetype", "") == ""
        untouched = kube.get(INSTANCETYPES, foreign, group=IT_GROUP, version=IT_VERSION)
        assert untouched["spec"]["cpu"] == {"guest": 1} and not untouched["metadata"].get("ownerReferences")
    finally:
        kube.delete("flavors", foreign)
        kube.delete(INSTANCETYPES, foreign, group=IT_GROUP, version=IT_VERSION)

"""The vertical slice on the real API server: Flavor + Server -> KubeVirt VirtualMachine,
status mirrored from the (simulated) VMI, deletion, and an operator crash mid-reconcile."""

from __future__ import annotations

import uuid

import pytest
from kubernetes.client.rest import ApiException

from .kube import wait_for


def flavor(kube, vcpus=2, ram="4Gi", **spec) -> str:
    name = f"f-{uuid.uuid4().hex[:8]}"
    kube.create("flavors", {"kind": "Flavor", "metadata": {"name": name}, "spec": {"vcpus": vcpus, "ram": ram, **spec}})
    return name


def server_body(name: str, flavor_name: str, **spec) -> dict:
    return {
        "kind": "Server",
        "metadata": {"name": name},
        "spec": {"flavor": flavor_name, "containerDisk": "quay.io/containerdisks/fedora:41", **spec},
    }


def ready(kube, name, namespace):
    obj = kube.get("servers", name, namespace)
    return obj if kube.condition(obj).get("status") == "True" else None


def rejection(fn) -> str:
    with pytest.raises(ApiException) as info:
        fn()
    assert info.value.status == 422, info.value.body
    return info.value.body


# --- The API server itself refuses bad input, naming the field -------------------------


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"flavor": "m1.small"}, "spec.containerDisk"),
        ({"flavor": "M1_SMALL", "containerDisk": "quay.io/x/y:1"}, "spec.flavor"),
        ({"flavor": "m1.small", "containerDisk": "not a reference!"}, "spec.containerDisk"),
        ({"flavor": "m1.small", "containerDisk": "quay.io/x/y:1", "powerState": "Sleeping"}, "spec.powerState"),
        ({"flavor": "m1.small", "containerDisk": "quay.io/x/y:1", "userData": "x" * 70000}, "spec.userData"),
    ],
    ids=["missing-disk", "bad-flavor-name", "bad-image-ref", "bad-power-state", "user-data-too-long"],
)
def test_api_server_rejects_invalid_server(kube, crds, namespace, spec, field):
    body = {"kind": "Server", "metadata": {"name": "bad"}, "spec": spec}
    message = rejection(lambda: kube.create("servers", body, namespace))
    assert field in message


def test_api_server_rejects_flavor_rules_with_the_field_named(kube, crds):
    msg = rejection(lambda: kube.create("flavors", {"kind": "Flavor", "metadata": {"name": "bad-private"},
                                                    "spec": {"vcpus": 1, "ram": "1Gi", "isPublic": False}}))
    assert "spec.projects" in msg and "isPublic" in msg
    msg = rejection(lambda: kube.create("flavors", {"kind": "Flavor", "metadata": {"name": "bad-ram"},
                                                    "spec": {"vcpus": 0, "ram": "1.5GB"}}))
    assert "spec.vcpus" in msg and "spec.ram" in msg


def test_api_server_rejects_duplicate_project_member(kube, crds):
    body = {"kind": "Project", "metadata": {"name": f"p-{uuid.uuid4().hex[:6]}"},
            "spec": {"members": [{"name": "alice", "role": "admin"}, {"name": "alice", "role": "reader"}]}}
    msg = rejection(lambda: kube.create("projects", body))
    assert "spec.members" in msg and "Duplicate" in msg


# --- A Server becomes ACTIVE through the simulated VM ------------------------------------


def test_server_becomes_active_with_vm_sized_from_flavor(kube, operator, namespace):
    f = flavor(kube, vcpus=2, ram="4Gi")
    kube.create("servers", server_body("web", f, userData="#cloud-config\npackages: [nginx]\n"), namespace)
    srv = wait_for(lambda: ready(kube, "web", namespace), 60, what="Server web Ready")
    status = srv["status"]
    assert status["phase"] == "ACTIVE"
    assert status["node"].startswith("hv-") or status["node"]
    assert status["addresses"] and status["addresses"][0]["address"]
    assert status["observedGeneration"] == srv["metadata"]["generation"]
    vm = kube.vm("web", namespace)
    domain = vm["spec"]["template"]["spec"]["domain"]
    assert domain["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert domain["cpu"]["cores"] == 2
    assert vm["metadata"]["ownerReferences"][0]["uid"] == srv["metadata"]["uid"]
    # The VMI runs where the Server says it runs.
    assert kube.vmi("web", namespace)["status"]["nodeName"] == status["node"]
    # kubectl's printer columns show it.
    out = kube.kubectl("get", "servers", "-n", namespace, "web").stdout
    assert "ACTIVE" in out and status["node"] in out
    reasons = {e.reason for e in kube.events_for(namespace, "web", "Server")}
    assert "Running" in reasons


def test_server_power_off_and_on(kube, operator, namespace):
    f = flavor(kube)
    kube.create("servers", server_body("pw", f), namespace)
    wait_for(lambda: ready(kube, "pw", namespace), 60, what="Server Ready")
    kube.patch("servers", "pw", {"spec": {"powerState": "Stopped"}}, namespace)
    srv = wait_for(lambda: (s := kube.get("servers", "pw", namespace))["status"]["phase"] == "SHUTOFF" and s, 60,
                   what="SHUTOFF")
    assert kube.vm("pw", namespace)["spec"]["runStrategy"] == "Halted"
    assert kube.vmi("pw", namespace) is None
    assert kube.condition(srv)["status"] == "False" and srv["status"]["node"] == ""
    kube.patch("servers", "pw", {"spec": {"powerState": "Running"}}, namespace)
    wait_for(lambda: ready(kube, "pw", namespace), 60, what="ACTIVE again")


def test_missing_flavor_is_a_condition_then_heals(kube, operator, namespace):
    name = f"late-{uuid.uuid4().hex[:6]}"
    kube.create("servers", server_body("early", name), namespace)
    srv = wait_for(lambda: kube.condition(kube.get("servers", "early", namespace)).get("reason") == "FlavorNotFound"
                   and kube.get("servers", "early", namespace), 30, what="FlavorNotFound")
    assert srv["status"]["phase"] == "ERROR"
    assert name in kube.condition(srv)["message"] and "kubectl get flavors" in kube.condition(srv)["message"]
    assert kube.vm("early", namespace) is None
    kube.create("flavors", {"kind": "Flavor", "metadata": {"name": name}, "spec": {"vcpus": 1, "ram": "1Gi"}})
    wait_for(lambda: ready(kube, "early", namespace), 60, what="Ready once the flavor exists")


def test_server_that_fits_no_node_says_why(kube, operator, namespace):
    f = flavor(kube, vcpus=512, ram="4Gi")  # the simulated hypervisors have 32 CPUs
    kube.create("servers", server_body("huge", f), namespace)
    cond = wait_for(lambda: (c := kube.condition(kube.get("servers", "huge", namespace))).get("reason") == "Unschedulable" and c,
                    60, what="Unschedulable condition")
    assert "Insufficient cpu" in cond["message"]
    assert kube.get("servers", "huge", namespace)["status"]["phase"] == "BUILD"


def test_migration_moves_the_server(kube, operator, namespace):
    f = flavor(kube)
    kube.create("servers", server_body("mover", f), namespace)
    before = wait_for(lambda: ready(kube, "mover", namespace), 60, what="Ready")["status"]["node"]
    kube.custom.create_namespaced_custom_object("kubevirt.io", "v1", namespace, "virtualmachineinstancemigrations", {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "move-1"}, "spec": {"vmiName": "mover"}})
    after = wait_for(lambda: (n := kube.get("servers", "mover", namespace)["status"]["node"]) != before and n, 60,
                     what="the Server's node to change")
    assert after.startswith("hv-")
    launchers = kube.core.list_namespaced_pod(namespace, label_selector="vm.kubevirt.io/name=mover").items
    wait_for(lambda: [p.spec.node_name for p in kube.core.list_namespaced_pod(
        namespace, label_selector="vm.kubevirt.io/name=mover").items if not p.metadata.deletion_timestamp] == [after],
        30, what=f"only the target launcher left (had {[p.metadata.name for p in launchers]})")


def test_deleting_a_server_removes_its_vm(kube, operator, namespace):
    f = flavor(kube)
    kube.create("servers", server_body("gone", f), namespace)
    wait_for(lambda: ready(kube, "gone", namespace), 60, what="Ready")
    kube.delete("servers", "gone", namespace)
    wait_for(lambda: kube.get("servers", "gone", namespace) is None, 60, what="Server deleted")
    assert kube.vm("gone", namespace) is None
    wait_for(lambda: kube.vmi("gone", namespace) is None, 30, what="VMI deleted")


def test_keypair_fingerprint_and_injection(kube, operator, namespace):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pub = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    kube.create("keypairs", {"kind": "KeyPair", "metadata": {"name": "k"}, "spec": {"publicKey": f"{pub} me@test"}}, namespace)
    kp = wait_for(lambda: (k := kube.get("keypairs", "k", namespace)).get("status", {}).get("phase") == "Available" and k, 30,
                  what="KeyPair Available")
    assert kp["status"]["fingerprintSha256"].startswith("SHA256:") and kp["status"]["keyType"] == "ssh-ed25519"
    # A key that matches the schema's shape but is not a key is an InvalidPublicKey condition.
    kube.create("keypairs", {"kind": "KeyPair", "metadata": {"name": "bad"},
                             "spec": {"publicKey": "ssh-ed25519 AAAAnotakey"}}, namespace)
    cond = wait_for(lambda: (c := kube.condition(kube.get("keypairs", "bad", namespace))).get("reason") and c, 30,
                    what="InvalidPublicKey")
    assert cond["reason"] == "InvalidPublicKey" and "spec.publicKey" in cond["message"]
    f = flavor(kube)
    kube.create("servers", server_body("keyed", f, keyPair="k"), namespace)
    wait_for(lambda: ready(kube, "keyed", namespace), 60, what="Ready")
    volumes = kube.vm("keyed", namespace)["spec"]["template"]["spec"]["volumes"]
    user_data = next(v["cloudInitNoCloud"]["userData"] for v in volumes if "cloudInitNoCloud" in v)
    assert pub in user_data


def test_project_owns_its_namespace(kube, operator):
    name = f"p-{uuid.uuid4().hex[:6]}"
    kube.create("projects", {"kind": "Project", "metadata": {"name": name}, "spec": {"description": "x"}})
    proj = wait_for(lambda: (p := kube.get("projects", name)) and kube.condition(p).get("status") == "True" and p, 30,
                    what="Project Ready")
    assert proj["status"]["namespace"] == name
    ns = kube.core.read_namespace(name)
    assert ns.metadata.labels["stratus.dev/project"] == name
    assert ns.metadata.owner_references[0].uid == proj["metadata"]["uid"]
    kube.delete("projects", name)
    wait_for(lambda: (n := _ns(kube, name)) is None or n.status.phase == "Terminating", 60, what="namespace going away")


def _ns(kube, name):
    try:
        return kube.core.read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


# --- Crash and restart -----------------------------------------------------------------


def test_operator_killed_mid_reconcile_converges(kube, operator, namespace):
    f = flavor(kube)
    names = [f"c{i}" for i in range(6)]
    for n in names:
        kube.create("servers", server_body(n, f), namespace)
    # Kill the operator while it is in the middle of these.
    wait_for(lambda: any(kube.vm(n, namespace) for n in names), 30, what="the first VM")
    operator.kill()
    # While it is down: one Server is deleted and one is powered off.
    kube.delete("servers", "c0", namespace)
    kube.patch("servers", "c1", {"spec": {"powerState": "Stopped"}}, namespace)
    operator.start()
    for n in names[2:]:
        wait_for(lambda n=n: ready(kube, n, namespace), 90, what=f"{n} Ready after restart")
        vms = [v for v in kube.custom.list_namespaced_custom_object("kubevirt.io", "v1", namespace, "virtualmachines")["items"]
               if v["metadata"]["name"] == n]
        assert len(vms) == 1
    wait_for(lambda: kube.get("servers", "c0", namespace) is None and kube.vm("c0", namespace) is None, 60,
             what="c0 and its VM gone")
    wait_for(lambda: kube.get("servers", "c1", namespace)["status"]["phase"] == "SHUTOFF", 60, what="c1 SHUTOFF")
    assert operator.alive()

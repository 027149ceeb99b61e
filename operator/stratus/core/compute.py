"""Compute: pure builders from Server (+ Flavor, KeyPair) to a KubeVirt VirtualMachine,
and the Server status derived from what KubeVirt reports.

Decisions:
- The VM has the Server's name and namespace, carries the label `stratus.dev/server`
  (copied by KubeVirt onto the VMI and its virt-launcher Pod) and is owned by the Server.
- CPU is requested whole: `resources.requests.cpu` equals the flavor's vCPUs, so the
  scheduler (and the consolidation planner) see the capacity a flavor promises. Memory
  is requested and limited to the flavor's RAM (`domain.memory.guest`).
- powerState Running is `runStrategy: Always`, Stopped is `Halted`.
- cloud-init: a NoCloud disk with the user data, and the key pair's public key in
  `ssh_authorized_keys` when the user data does not already set up users.
"""

from __future__ import annotations

import dataclasses

import yaml

from ..api.registry import API_VERSION, LABEL_PREFIX
from .conditions import set_condition
from .quantity import format_bytes, parse_bytes

SERVER_LABEL = f"{LABEL_PREFIX}/server"
KUBEVIRT_API = "kubevirt.io/v1"


@dataclasses.dataclass(frozen=True)
class FlavorSize:
    vcpus: int
    ram_bytes: int
    disk_bytes: int

    @classmethod
    def from_spec(cls, spec: dict) -> "FlavorSize":
        return cls(
            vcpus=int(spec["vcpus"]),
            ram_bytes=parse_bytes(spec["ram"]),
            disk_bytes=parse_bytes(spec.get("disk") or "10Gi"),
        )


def owner_reference(body: dict, controller: bool = True) -> dict:
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def cloud_init_user_data(user_data: str | None, public_key: str | None) -> str | None:
    """The user data the VM gets: the user's own, with the key pair added when given."""
    if not public_key:
        return user_data
    if not user_data:
        return "#cloud-config\n" + yaml.safe_dump({"ssh_authorized_keys": [public_key]}, sort_keys=True)
    if user_data.startswith("#cloud-config"):
        try:
            doc = yaml.safe_load(user_data) or {}
        except yaml.YAMLError:
            doc = None
        if isinstance(doc, dict):
            keys = list(doc.get("ssh_authorized_keys") or [])
            if public_key not in keys:
                keys.append(public_key)
            doc["ssh_authorized_keys"] = keys
            return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=True)
    # A script or multipart: leave it as the user wrote it (Nova does the same through
    # the metadata service); the key then reaches the VM only through that user data.
    return user_data


def server_to_virtual_machine(server: dict, flavor: FlavorSize, public_key: str | None = None) -> dict:
    """The VirtualMachine a Server wants. Pure: same input, same output."""
    meta, spec = server["metadata"], server["spec"]
    name = meta["name"]
    labels = {SERVER_LABEL: name}
    memory = format_bytes(flavor.ram_bytes)
    disks = [{"name": "rootdisk", "disk": {"bus": "virtio"}}]
    volumes: list[dict] = [{"name": "rootdisk", "containerDisk": {"image": spec["containerDisk"]}}]
    user_data = cloud_init_user_data(spec.get("userData"), public_key)
    if user_data:
        disks.append({"name": "cloudinitdisk", "disk": {"bus": "virtio"}})
        volumes.append({"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": user_data}})
    return {
        "apiVersion": KUBEVIRT_API,
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(server)],
        },
        "spec": {
            "runStrategy": "Halted" if spec.get("powerState") == "Stopped" else "Always",
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "domain": {
                        "cpu": {"cores": flavor.vcpus, "sockets": 1, "threads": 1},
                        "memory": {"guest": memory},
                        "resources": {
                            "requests": {"cpu": str(flavor.vcpus), "memory": memory},
                            "limits": {"cpu": str(flavor.vcpus), "memory": memory},
                        },
                        "devices": {"disks": disks, "interfaces": [{"name": "default", "masquerade": {}}]},
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": volumes,
                },
            },
        },
    }


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the cluster says about a Server's VM; None where an object is absent."""

    vm: dict | None = None
    vmi: dict | None = None
    launcher_pod: dict | None = None


def server_status(server: dict, observed: Observed, flavor: FlavorSize | None) -> dict:
    """Status fields (phase, node, addresses, launchedAt, conditions) for a Server whose
    VM has been applied. Errors found before the VM is applied are set by the caller."""
    status = server.get("status") or {}
    generation = server["metadata"].get("generation", 0)
    conditions = status.get("conditions") or []
    wants_running = (server["spec"].get("powerState") or "Running") == "Running"
    vm, vmi, pod = observed.vm, observed.vmi, observed.launcher_pod
    vmi_status = (vmi or {}).get("status") or {}
    vmi_phase = vmi_status.get("phase", "")
    node = vmi_status.get("nodeName", "") if vmi_phase == "Running" else ""
    addresses = [
        {"network": iface.get("name") or "default", "address": iface["ipAddress"]}
        for iface in vmi_status.get("interfaces") or []
        if iface.get("ipAddress")
    ] if node else []
    launched_at = status.get("launchedAt", "")

    if vm is None:
        phase, ready, reason, message = "BUILD", False, "Creating", "Creating the virtual machine"
    elif wants_running and vmi_phase == "Running":
        phase, ready, reason, message = "ACTIVE", True, "Running", f"Running on node {node}"
        for cond in vmi_status.get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("lastTransitionTime"):
                launched_at = cond["lastTransitionTime"]
    elif wants_running:
        phase, ready = "BUILD", False
        reason, message = "Scheduling", "Waiting for a node to run the virtual machine"
        unschedulable = _pod_unschedulable_message(pod)
        if unschedulable:
            reason, message = "Unschedulable", f"No node can run the server yet: {unschedulable}"
        elif vmi_phase in ("Scheduled", "Running"):
            reason, message = "Starting", "The virtual machine is starting"
        elif vmi_phase == "Failed":
            phase, reason, message = "ERROR", "VirtualMachineFailed", "The virtual machine failed; see its events"
    else:
        if vmi is None:
            phase, ready, reason, message = "SHUTOFF", False, "Stopped", "Stopped as requested (powerState: Stopped)"
        else:
            phase, ready, reason, message = "BUILD", False, "Stopping", "Stopping the virtual machine"
    conditions = set_condition(conditions, "Ready", ready, reason, message, generation)
    out = {
        "phase": phase,
        "node": node,
        "addresses": addresses,
        "launchedAt": launched_at,
        "virtualMachine": (vm or {}).get("metadata", {}).get("name", ""),
        "conditions": conditions,
        "observedGeneration": generation,
    }
    if flavor:
        out["vcpus"] = flavor.vcpus
        out["memory"] = format_bytes(flavor.ram_bytes)
    return out


def _pod_unschedulable_message(pod: dict | None) -> str:
    if not pod or (pod.get("spec") or {}).get("nodeName"):
        return ""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return cond.get("message") or cond.get("reason") or "unschedulable"
    return ""

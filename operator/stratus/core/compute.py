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
import hashlib

import yaml

from ..api.registry import API_VERSION, LABEL_PREFIX
from .conditions import set_condition
from .quantity import format_bytes, parse_bytes

SERVER_LABEL = f"{LABEL_PREFIX}/server"
KUBEVIRT_API = "kubevirt.io/v1"
INSTANCETYPE_API = "instancetype.kubevirt.io/v1beta1"
#: On a VirtualMachineClusterInstancetype: the Flavor it mirrors.
FLAVOR_LABEL = f"{LABEL_PREFIX}/flavor"


@dataclasses.dataclass(frozen=True)
class FlavorSize:
    vcpus: int
    ram_bytes: int
    disk_bytes: int
    #: Nova extra specs as sorted (key, value) pairs.
    extra_specs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_spec(cls, spec: dict) -> "FlavorSize":
        return cls(
            vcpus=int(spec["vcpus"]),
            ram_bytes=parse_bytes(spec["ram"]),
            disk_bytes=parse_bytes(spec.get("disk") or "10Gi"),
            extra_specs=tuple(sorted((spec.get("extraSpecs") or {}).items())),
        )


#: hw:mem_page_size values (Nova accepts names, sizes in KiB, or with units).
_PAGE_SIZES = {"small": None, "any": "2Mi", "large": "2Mi", "2048": "2Mi", "2mb": "2Mi", "2mi": "2Mi",
               "1048576": "1Gi", "1gb": "1Gi", "1gi": "1Gi"}


def extra_specs_to_domain(extra_specs: dict[str, str] | tuple, vcpus: int) -> tuple[dict, list[str]]:
    """The KubeVirt domain settings that Nova extra specs ask for, and the problems found.

    Known keys (others are ignored, as Nova ignores keys no filter or driver reads):
      hw:cpu_policy: dedicated|shared      -> cpu.dedicatedCpuPlacement
      hw:cpu_sockets / hw:cpu_threads      -> the CPU topology (cores = vcpus / sockets / threads)
      hw:mem_page_size: large|2MB|1GB|...   -> memory.hugepages.pageSize
      pci_passthrough:alias: <device>:<n>  -> n GPUs of deviceName <device>
      resources:VGPU / stratus:gpu: <device>[:n]  -> the same, for vGPU-style names
    """
    specs = dict(extra_specs)
    out: dict = {"cpu": {}, "memory": {}, "devices": {}}
    errors: list[str] = []
    policy = specs.get("hw:cpu_policy")
    if policy == "dedicated":
        out["cpu"]["dedicatedCpuPlacement"] = True
    elif policy not in (None, "shared", "mixed"):
        errors.append(f"hw:cpu_policy {policy!r} is not dedicated, shared or mixed")
    sockets, threads = 1, 1
    for key in ("hw:cpu_sockets", "hw:cpu_threads"):
        if key in specs:
            try:
                value = int(specs[key])
                if value < 1:
                    raise ValueError
            except ValueError:
                errors.append(f"{key} {specs[key]!r} is not a positive integer")
                continue
            if key == "hw:cpu_sockets":
                sockets = value
            else:
                threads = value
    if vcpus % (sockets * threads):
        errors.append(f"{vcpus} vCPUs do not divide into {sockets} sockets x {threads} threads")
    else:
        out["cpu"].update(sockets=sockets, threads=threads, cores=vcpus // (sockets * threads))
    page = specs.get("hw:mem_page_size")
    if page is not None:
        if page.lower() not in _PAGE_SIZES:
            errors.append(f"hw:mem_page_size {page!r} is not small, large, any, 2MB or 1GB")
        elif _PAGE_SIZES[page.lower()]:
            out["memory"]["hugepages"] = {"pageSize": _PAGE_SIZES[page.lower()]}
    gpus = []
    for key in ("pci_passthrough:alias", "stratus:gpu"):
        if key not in specs:
            continue
        device, _, count = specs[key].partition(":")
        try:
            n = int(count or 1)
            if not device or n < 1 or n > 16:
                raise ValueError
        except ValueError:
            errors.append(f"{key} {specs[key]!r} is not <device name>[:<count 1-16>]")
            continue
        gpus += [{"name": f"gpu{len(gpus) + i + 1}", "deviceName": device} for i in range(n)]
    if gpus:
        out["devices"]["gpus"] = gpus
    return out, errors


def flavor_to_instancetype(flavor: dict) -> dict:
    """The KubeVirt VirtualMachineClusterInstancetype that mirrors a Flavor: the same
    name, its vCPUs and memory, and what its extra specs ask for that an instancetype
    can say (dedicated CPUs, huge pages, GPUs). Pure.

    Decision: the flavor's own VMs keep their explicit domain sizing (the Server
    controller's quota and the consolidation inputs read it there); the instancetype
    is published so that KubeVirt-native tools (``virtctl create vm --instancetype``)
    and users of plain VirtualMachines see the cloud's sizes under the same names."""
    size = FlavorSize.from_spec(flavor["spec"])
    tuned, _ = extra_specs_to_domain(size.extra_specs, size.vcpus)
    cpu: dict = {"guest": size.vcpus}
    if tuned["cpu"].get("dedicatedCpuPlacement"):
        cpu["dedicatedCPUPlacement"] = True
    memory: dict = {"guest": format_bytes(size.ram_bytes)}
    if tuned["memory"].get("hugepages"):
        memory["hugepages"] = tuned["memory"]["hugepages"]
    spec: dict = {"cpu": cpu, "memory": memory}
    if tuned["devices"].get("gpus"):
        spec["gpus"] = tuned["devices"]["gpus"]
    name = flavor["metadata"]["name"]
    return {
        "apiVersion": INSTANCETYPE_API,
        "kind": "VirtualMachineClusterInstancetype",
        "metadata": {"name": name, "labels": {FLAVOR_LABEL: name}, "ownerReferences": [owner_reference(flavor)]},
        "spec": spec,
    }


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


@dataclasses.dataclass(frozen=True)
class RootDisk:
    """Where the root disk comes from: exactly one of the three is set."""

    container_disk: str | None = None
    #: A CDI DataVolume source (the Image's status.dataVolumeSource) and the disk size.
    image_source: dict | None = None
    image_size_bytes: int = 0
    #: The PVC of a boot Volume.
    claim_name: str | None = None


@dataclasses.dataclass(frozen=True)
class DataVolumeDisk:
    """A Volume attached to the server (hotplugged, persisted in the VM spec)."""

    volume: str
    claim_name: str
    read_only: bool = False


GROUP_LABEL = f"{LABEL_PREFIX}/server-group"
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"


def root_disk_name(server_name: str, image: str = "") -> str:
    """The DataVolume (and PVC) holding an image-backed root disk: one per image, so
    that a rebuild (a new spec.image) gets a fresh disk while the old one is retired."""
    if not image:
        return f"{server_name}-root"
    return f"{server_name}-root-{hashlib.sha256(image.encode()).hexdigest()[:6]}"


def vm_root_data_volume(vm: dict | None) -> str:
    """Name of the image-backed root DataVolume a VM uses, or ""."""
    templates = ((vm or {}).get("spec") or {}).get("dataVolumeTemplates") or []
    return templates[0]["metadata"]["name"] if templates else ""


def hotplug_volume_name(volume: str) -> str:
    return f"vol-{volume}"


def image_root_disk(image: dict | None, image_name: str, flavor: FlavorSize) -> tuple[RootDisk | None, str, str]:
    """The root disk from an Image object, or (None, reason, message) saying why not.

    The contract with the image service: an Image ready for use has status.phase
    `active`, status.dataVolumeSource (a CDI DataVolume source) and status.virtualSize
    (bytes); spec.minDisk (GiB) / spec.minRam (MiB) are checked
    against the flavor as Nova does. The disk is max(flavor disk, virtual size)."""
    if image is None:
        return None, "ImageNotFound", (f"Image {image_name!r} does not exist in this namespace; "
                                       "create it or set spec.image to an existing one (kubectl get images)")
    status = image.get("status") or {}
    if status.get("phase") != "active" or not status.get("dataVolumeSource"):
        return None, "ImageNotActive", (f"Image {image_name!r} is {status.get('phase') or 'not ready'}, not active; "
                                        "the server waits until the image has been imported")
    spec = image.get("spec") or {}
    min_disk = int(spec.get("minDisk") or 0) << 30  # Glance's units: GiB
    min_ram = int(spec.get("minRam") or 0) << 20  # and MiB
    if min_ram and flavor.ram_bytes < min_ram:
        return None, "FlavorMemoryTooSmall", (f"Image {image_name!r} needs at least {format_bytes(min_ram)} of memory; "
                                              "choose a larger flavor")
    if min_disk and flavor.disk_bytes < min_disk:
        return None, "FlavorDiskTooSmall", (f"Image {image_name!r} needs a root disk of at least {format_bytes(min_disk)}; "
                                            "choose a flavor with a larger disk")
    size = max(flavor.disk_bytes, int(status.get("virtualSize") or 0))
    return RootDisk(image_source=dict(status["dataVolumeSource"]), image_size_bytes=size), "", ""


def group_affinity(group: str, policy: str) -> dict:
    """Pod (anti-)affinity that places a member of a ServerGroup by its policy."""
    term = {"labelSelector": {"matchLabels": {GROUP_LABEL: group}}, "topologyKey": HOSTNAME_TOPOLOGY}
    kind = "podAntiAffinity" if policy.endswith("anti-affinity") else "podAffinity"
    if policy.startswith("soft-"):
        return {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]}}
    return {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}


def server_to_virtual_machine(
    server: dict,
    flavor: FlavorSize,
    public_key: str | None = None,
    *,
    root: RootDisk | None = None,
    volumes: tuple[DataVolumeDisk, ...] | list[DataVolumeDisk] = (),
    group_policy: str | None = None,
    halt: bool = False,
) -> dict:
    """The VirtualMachine a Server wants. Pure: same input, same output. `halt` stops
    it whatever the power state (the stop half of a reboot)."""
    meta, spec = server["metadata"], server["spec"]
    name = meta["name"]
    labels = {SERVER_LABEL: name}
    if spec.get("serverGroup") and group_policy:
        labels[GROUP_LABEL] = spec["serverGroup"]
    memory = format_bytes(flavor.ram_bytes)
    root = root or RootDisk(container_disk=spec.get("containerDisk"))
    disks = [{"name": "rootdisk", "disk": {"bus": "virtio"}, "bootOrder": 1}]
    data_volume_templates: list[dict] = []
    if root.image_source is not None:
        dv = root_disk_name(name, spec.get("image") or "")
        root_volume = {"name": "rootdisk", "dataVolume": {"name": dv}}
        data_volume_templates.append({
            "metadata": {"name": dv, "labels": {SERVER_LABEL: name}},
            "spec": {"source": root.image_source, "storage": {"resources": {"requests": {"storage": format_bytes(root.image_size_bytes)}}}},
        })
    elif root.claim_name:
        root_volume = {"name": "rootdisk", "persistentVolumeClaim": {"claimName": root.claim_name}}
    else:
        root_volume = {"name": "rootdisk", "containerDisk": {"image": root.container_disk}}
    volumes_out: list[dict] = [root_volume]
    user_data = cloud_init_user_data(spec.get("userData"), public_key)
    if user_data:
        disks.append({"name": "cloudinitdisk", "disk": {"bus": "virtio"}})
        volumes_out.append({"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": user_data}})
    for vol in sorted(volumes, key=lambda v: v.volume):
        vname = hotplug_volume_name(vol.volume)
        disk = {"name": vname, "disk": {"bus": "scsi"}, "serial": vol.volume[:20]}
        if vol.read_only:
            disk["disk"]["readonly"] = True
        disks.append(disk)
        volumes_out.append({"name": vname, "persistentVolumeClaim": {"claimName": vol.claim_name, "hotpluggable": True,
                                                                      "readOnly": vol.read_only}})
    interfaces = [{"name": "default", "masquerade": {}}]
    networks = [{"name": "default", "pod": {}}]
    for i, net in enumerate(spec.get("networks") or []):
        interfaces.append({"name": f"net{i + 1}", "bridge": {}})
        networks.append({"name": f"net{i + 1}", "multus": {"networkName": net["name"]}})
    tuned, _ = extra_specs_to_domain(flavor.extra_specs, flavor.vcpus)
    template_spec: dict = {
        "domain": {
            "cpu": {"cores": flavor.vcpus, "sockets": 1, "threads": 1, **tuned["cpu"]},
            "memory": {"guest": memory, **tuned["memory"]},
            "resources": {
                "requests": {"cpu": str(flavor.vcpus), "memory": memory},
                "limits": {"cpu": str(flavor.vcpus), "memory": memory},
            },
            "devices": {"disks": disks, "interfaces": interfaces, **tuned["devices"]},
        },
        "networks": networks,
        "volumes": volumes_out,
    }
    if spec.get("serverGroup") and group_policy:
        template_spec["affinity"] = group_affinity(spec["serverGroup"], group_policy)
    vm_spec: dict = {
        "runStrategy": "Halted" if spec.get("powerState") == "Stopped" or halt else "Always",
        "template": {"metadata": {"labels": labels}, "spec": template_spec},
    }
    if data_volume_templates:
        vm_spec["dataVolumeTemplates"] = data_volume_templates
    return {
        "apiVersion": KUBEVIRT_API,
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(server)],
        },
        "spec": vm_spec,
    }


def vm_size(vm: dict) -> tuple[int, int]:
    """(vCPUs, memory bytes) a VirtualMachine requests, for quota usage."""
    req = ((((vm.get("spec") or {}).get("template") or {}).get("spec") or {}).get("domain") or {}).get("resources", {}).get("requests", {})
    try:
        return int(str(req.get("cpu", "0"))), parse_bytes(req.get("memory", "0") or "0")
    except ValueError:
        return 0, 0


def migration_object(server_name: str, namespace: str, migration_name: str, node: str | None) -> dict:
    """A VirtualMachineInstanceMigration for a Server's VMI (optionally to one node)."""
    spec: dict = {"vmiName": server_name}
    if node:
        spec["addedNodeSelector"] = {HOSTNAME_TOPOLOGY: node}
    return {
        "apiVersion": KUBEVIRT_API,
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": migration_name, "namespace": namespace, "labels": {SERVER_LABEL: server_name}},
        "spec": spec,
    }


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the cluster says about a Server's VM; None where an object is absent."""

    vm: dict | None = None
    vmi: dict | None = None
    launcher_pod: dict | None = None
    #: The image-backed root disk's DataVolume, when the server has one.
    root_data_volume: dict | None = None
    #: The latest VirtualMachineInstanceMigration of the server, if any.
    migration: dict | None = None
    #: A one-shot action in progress ("reboot" or "rebuild"), if any.
    action: str = ""


def vmi_paused(vmi: dict | None) -> bool:
    return any(c.get("type") == "Paused" and c.get("status") == "True"
               for c in ((vmi or {}).get("status") or {}).get("conditions") or [])


def attached_volumes(vm: dict | None, vmi: dict | None, boot_volume: str = "") -> list[dict]:
    """Volumes in the VM spec (boot and hotplugged) with what the VMI says of them.

    A hotplugged volume counts as attached once the VMI reports it Ready, or, while
    the VM is not running, once it is persisted in the VM spec."""
    if not vm:
        return []
    vols = ((vm.get("spec") or {}).get("template") or {}).get("spec", {}).get("volumes") or []
    ready = {v.get("name"): v.get("phase") for v in ((vmi or {}).get("status") or {}).get("volumeStatus") or []}
    out = []
    for v in vols:
        pvc = v.get("persistentVolumeClaim") or {}
        if not pvc:
            continue
        if v["name"] == "rootdisk":
            out.append({"name": boot_volume, "claimName": pvc["claimName"], "boot": True, "readOnly": False})
        elif v["name"].startswith("vol-") and (vmi is None or ready.get(v["name"]) == "Ready"):
            out.append({"name": v["name"][4:], "claimName": pvc["claimName"], "boot": False,
                        "readOnly": bool(pvc.get("readOnly"))})
    return out


def server_status(server: dict, observed: Observed, flavor: FlavorSize | None) -> dict:
    """Status fields (phase, node, addresses, launchedAt, conditions) for a Server whose
    VM has been applied. Errors found before the VM is applied are set by the caller."""
    status = server.get("status") or {}
    generation = server["metadata"].get("generation", 0)
    conditions = status.get("conditions") or []
    power = server["spec"].get("powerState") or "Running"
    wants_running = power in ("Running", "Paused")
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
    migration = observed.migration
    migration_phase = ((migration or {}).get("status") or {}).get("phase", "")
    root_dv = observed.root_data_volume
    root_dv_phase = ((root_dv or {}).get("status") or {}).get("phase", "")

    if vm is None:
        phase, ready, reason, message = "BUILD", False, "Creating", "Creating the virtual machine"
    elif observed.action == "reboot":
        phase, ready, reason, message = "HARD_REBOOT", False, "Rebooting", "Stopping and starting the virtual machine"
    elif observed.action == "rebuild":
        phase, ready, reason, message = "REBUILD", False, "Rebuilding", (
            f"Stopping the virtual machine to boot it from a new root disk of image {server['spec'].get('image')!r}")
    elif wants_running and vmi_phase == "Running" and power == "Paused" and vmi_paused(vmi):
        phase, ready, reason, message = "PAUSED", False, "Paused", f"Paused on node {node} (powerState: Paused)"
    elif wants_running and vmi_phase == "Running" and power == "Paused":
        phase, ready, reason, message = "ACTIVE", True, "Pausing", f"Pausing on node {node}"
    elif wants_running and vmi_phase == "Running" and vmi_paused(vmi):
        phase, ready, reason, message = "PAUSED", False, "Unpausing", f"Unpausing on node {node}"
    elif root_dv is not None and root_dv_phase != "Succeeded" and not (wants_running and vmi_phase == "Running"):
        phase, ready = ("ERROR", False) if root_dv_phase == "Failed" else ("BUILD", False)
        reason = "RootDiskFailed" if root_dv_phase == "Failed" else "ProvisioningRootDisk"
        message = (f"Copying the image into the root disk ({(root_dv.get('status') or {}).get('progress') or '0%'})"
                   if root_dv_phase != "Failed" else "Copying the image into the root disk failed; see the DataVolume's events")
    elif wants_running and vmi_phase == "Running" and migration is not None and migration_phase not in ("Succeeded", "Failed", ""):
        phase, ready, reason = "MIGRATING", True, "Migrating"
        message = f"Live-migrating from node {node} ({migration['metadata']['name']}, {migration_phase})"
    elif wants_running and vmi_phase == "Running" and vmi_status.get("migrationState") and not vmi_status["migrationState"].get("completed") \
            and not vmi_status["migrationState"].get("failed"):
        phase, ready, reason, message = "MIGRATING", True, "Migrating", f"Live-migrating from node {node}"
    elif wants_running and vmi_phase == "Running":
        phase, ready, reason, message = "ACTIVE", True, "Running", f"Running on node {node}"
        for cond in vmi_status.get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("lastTransitionTime"):
                launched_at = cond["lastTransitionTime"]
        if migration is not None and migration_phase == "Failed":
            reason, message = "MigrationFailed", f"Running on node {node}; live migration {migration['metadata']['name']} failed"
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
        "volumes": attached_volumes(vm, vmi, server["spec"].get("bootVolume") or ""),
    }
    if migration is not None:
        out["migration"] = migration["metadata"]["name"]
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

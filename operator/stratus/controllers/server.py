"""Server: applies the KubeVirt VirtualMachine built from the Server and its Flavor (and
Image or boot Volume, KeyPair, ServerGroup and attached Volumes), and mirrors what
KubeVirt reports (VM, VMI, virt-launcher Pod, root DataVolume, migration) into the
Server's status.

Level-based: every spec change, resume, child event and change of an attached Volume
recomputes the whole VM and status from the objects as they are now. A missing Flavor,
Image, KeyPair, boot Volume or ServerGroup, or a quota that is full, is a condition and
a retry, not a crash: the Server becomes ACTIVE on its own once the cause is gone.

Admission and quota: a Server is admitted when its VM is first applied. Usage is
counted from the VMs of the namespace under a per-namespace lock, so two Servers
created at once cannot both take the last slot (within the one active operator
replica; kopf peering keeps it to one).
"""

from __future__ import annotations

import datetime
import threading

import kopf

from ..api.registry import API_VERSION, GROUP, VERSION
from ..api.server import MIGRATE_ANNOTATION, REBOOT_ANNOTATION, Server
from ..core import compute, quota
from ..core import server_actions as actions
from ..core.compute import SERVER_LABEL, DataVolumeDisk, FlavorSize, Observed, RootDisk
from ..core.conditions import set_condition
from ..core.locks import KeyedLocks
from ..core.quantity import parse_bytes
from ..core.volumes import claim_name as volume_claim_name
from ..drivers import kube
from ..drivers import kubevirt as kv
from .status import write_status

KUBEVIRT = compute.KUBEVIRT_API
CDI = "cdi.kubevirt.io/v1beta1"
RETRY_MISSING_DEPENDENCY = 10
RETRY_QUOTA = 15
PROJECT_LABEL = "stratus.dev/project"
#: Reasons the spec handler sets before a VM exists; child events leave them alone.
ADMISSION_REASONS = ("FlavorNotFound", "FlavorInvalid", "FlavorNotAllowed", "KeyPairNotFound", "KeyPairInvalid", "ImageNotFound",
                     "ImageNotActive", "FlavorDiskTooSmall", "FlavorMemoryTooSmall", "BootVolumeNotFound",
                     "BootVolumeNotReady", "BootVolumeInUse", "ServerGroupNotFound", "QuotaExceeded")


class Blocked(Exception):
    """The Server cannot be (re)built now; reason and message go into its condition."""

    def __init__(self, reason: str, message: str, delay: float = RETRY_MISSING_DEPENDENCY):
        super().__init__(message)
        self.reason, self.message, self.delay = reason, message, delay


def _event(body: dict, type_: str, reason: str, message: str) -> None:
    kopf.event(body, type=type_, reason=reason, message=message)


def _write_status(body: dict, status: dict) -> dict:
    return write_status(body, "servers", status, error_phase="ERROR", events_on_reason=True)


def _fail(body: dict, reason: str, message: str) -> None:
    generation = body["metadata"].get("generation", 0)
    conditions = set_condition((body.get("status") or {}).get("conditions"), "Ready", False, reason, message, generation)
    _write_status(body, {"phase": "ERROR", "conditions": conditions, "observedGeneration": generation})


def observe(namespace: str, name: str, body: dict | None = None) -> Observed:
    vm = kube.get(KUBEVIRT, "virtualmachines", name, namespace)
    vmi = kube.get(KUBEVIRT, "virtualmachineinstances", name, namespace)
    pod = None
    if vmi:
        pods = kube.list_pods(namespace, f"kubevirt.io/created-by={vmi['metadata']['uid']}")
        # The active launcher: bound to the VMI's node, else the newest.
        node = (vmi.get("status") or {}).get("nodeName")
        pods.sort(key=lambda p: ((p.get("spec") or {}).get("nodeName") == node, p["metadata"]["creationTimestamp"]))
        pod = pods[-1] if pods else None
    root_dv = None
    if vm and (vm.get("spec") or {}).get("dataVolumeTemplates"):
        root_dv = kube.get(CDI, "datavolumes", compute.vm_root_data_volume(vm), namespace) or {"status": {}}
    migration = None
    mig_name = ((body or {}).get("status") or {}).get("migration")
    if mig_name:
        migration = kube.get(KUBEVIRT, "virtualmachineinstancemigrations", mig_name, namespace)
    stopping = ((body or {}).get("metadata", {}).get("annotations") or {}).get(REBOOT_ANNOTATION)
    return Observed(vm=vm, vmi=vmi, launcher_pod=pod, root_data_volume=root_dv, migration=migration,
                    action=actions.action_of(stopping))


def _carry_out(body: dict, namespace: str, name: str, step: actions.Step) -> dict:
    """Write the step's annotation and post its Event; returns the Server as written."""
    if step.annotation is not actions.UNCHANGED:
        body = kube.patch(API_VERSION, "servers", name, {"metadata": {"annotations": {REBOOT_ANNOTATION: step.annotation}}},
                          namespace) or body
    if step.event:
        _event(body, *step.event)
    return body


def _follow_power(namespace: str, name: str, body: dict, observed: Observed) -> bool:
    """Second halves of actions, on every look: pause/unpause a running VMI to match
    powerState, and finish a reboot once the old VMI is gone. True when it acted."""
    vmi = observed.vmi
    annotation = (body["metadata"].get("annotations") or {}).get(REBOOT_ANNOTATION)
    step = actions.on_vm_observed(annotation, vmi is not None)
    if step.effect is actions.Effect.START:
        fresh = kube.patch(API_VERSION, "servers", name, {"metadata": {"annotations": {REBOOT_ANNOTATION: None}}},
                           namespace)
        if fresh:
            _event(fresh, *step.event)
            _sync(fresh, namespace, name, None)
        return True
    current_root = compute.vm_root_data_volume(observed.vm)
    if current_root and vmi and (vmi.get("status") or {}).get("phase") == "Running" \
            and (body.get("status") or {}).get("rootDisk") != current_root:
        # ACTIVE on the current root disk: retire the root disks of earlier images.
        for dv in kube.list_(CDI, "datavolumes", namespace, f"{SERVER_LABEL}={name}"):
            if dv["metadata"]["name"] != current_root:
                kube.delete(CDI, "datavolumes", dv["metadata"]["name"], namespace)
        kube.patch_status(API_VERSION, "servers", name, {"rootDisk": current_root}, namespace)
    if vmi and ((vmi.get("status") or {}).get("phase") == "Running") and not observed.action:
        wants = (body["spec"].get("powerState") or "Running") == "Paused"
        paused = compute.vmi_paused(vmi)
        requested = ((vmi["metadata"].get("annotations") or {}).get(kv.STANDIN_PAUSE_ANNOTATION) == "true")
        # Where the subresource is served, repeat the (idempotent) call until the VMI
        # says so; on the stand-ins, set the annotation once.
        if wants != paused and (requested != wants or kv.can("pause")):
            kv.set_paused(namespace, name, wants)
    return False


#: Per Server (re-entrant: a sync may run inside a refresh) and per namespace (quota
#: admission); each lock lives only while it is held or awaited.
_locks = KeyedLocks(threading.RLock)
_namespace_locks = KeyedLocks(threading.Lock)


_waiting: dict[tuple[str, str], int] = {}  # Servers with a refresh waiting for their lock
_waiting_lock = threading.Lock()


def refresh_status(namespace: str, name: str) -> dict:
    """Recompute a Server's status from its children (called on any child event).

    Child events arrive concurrently (VM, VMI and Pod); one lock per Server makes each
    refresh read the status the previous one wrote, so a transition is reported once.
    An event that finds a refresh already waiting for that lock returns at once: the
    waiting refresh starts after this event's change was stored, so it reads it, and
    in a burst of events (a batch of Servers starting) each Server is refreshed about
    twice instead of once per event."""
    key = (namespace, name)
    with _waiting_lock:
        if key in _waiting:
            return {}
        _waiting[key] = 1
    with _locks[key]:
        with _waiting_lock:
            del _waiting[key]
        return _refresh_status(namespace, name)


def _refresh_status(namespace: str, name: str) -> dict:
    """Returns the status fields that changed ({"deleted": True} when the server is gone)."""
    body = kube.get(API_VERSION, "servers", name, namespace)
    if not body or body["metadata"].get("deletionTimestamp"):
        return {"deleted": True}
    status = body.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
    if ready and ready.get("reason") in ADMISSION_REASONS:
        return {}  # the spec handler owns these; it retries until the cause is gone
    size = None
    if status.get("vcpus"):
        size = FlavorSize(vcpus=status["vcpus"], ram_bytes=parse_bytes(status["memory"]), disk_bytes=0)
    observed = observe(namespace, name, body)
    try:
        if _follow_power(namespace, name, body, observed):
            return {"action": True}
    except Blocked as blocked:
        _fail(kube.get(API_VERSION, "servers", name, namespace) or body, blocked.reason, blocked.message)
        return {}
    return _write_status(body, compute.server_status(body, observed, size))


def project_quota(namespace: str) -> dict | None:
    """The quota of the Project that owns the namespace (by its label), or None."""
    ns = kube.get_namespace(namespace)
    project = (((ns or {}).get("metadata") or {}).get("labels") or {}).get(PROJECT_LABEL)
    if not project:
        return None
    proj = kube.get(API_VERSION, "projects", project)
    return ((proj or {}).get("spec") or {}).get("quota") or None


def _usage(namespace: str, exclude: str) -> quota.Usage:
    used = quota.Usage()
    for vm in kube.list_(KUBEVIRT, "virtualmachines", namespace, SERVER_LABEL):
        if vm["metadata"]["name"] == exclude or vm["metadata"].get("deletionTimestamp"):
            continue
        vcpus, mem = compute.vm_size(vm)
        used = used + quota.Usage(1, vcpus, mem)
    return used


def _flavor_allowed(flavor: dict, namespace: str) -> bool:
    spec = flavor.get("spec") or {}
    if spec.get("isPublic", True):
        return True
    ns = kube.get_namespace(namespace)
    project = (((ns or {}).get("metadata") or {}).get("labels") or {}).get(PROJECT_LABEL)
    return bool(project) and project in (spec.get("projects") or [])


def _root_disk(server: Server, namespace: str, size: FlavorSize) -> RootDisk:
    spec = server.spec
    if spec.image:
        image = kube.get(API_VERSION, "images", spec.image, namespace) if kv.has_resource(API_VERSION, "images") else None
        root, reason, message = compute.image_root_disk(image, spec.image, size)
        if root is None:
            raise Blocked(reason, message)
        return root
    if spec.boot_volume:
        vol = kube.get(API_VERSION, "volumes", spec.boot_volume, namespace)
        if vol is None:
            raise Blocked("BootVolumeNotFound", f"Volume {spec.boot_volume!r} does not exist in this namespace; create it "
                                                "or set spec.bootVolume to an existing one (kubectl get volumes)")
        if (vol.get("spec") or {}).get("attachTo"):
            raise Blocked("BootVolumeInUse", f"Volume {spec.boot_volume!r} is attached to server "
                                             f"{vol['spec']['attachTo']!r}; detach it before booting from it")
        vstatus = vol.get("status") or {}
        if not vstatus.get("claimName") or vstatus.get("phase") in ("", "creating", "error"):
            raise Blocked("BootVolumeNotReady", f"Volume {spec.boot_volume!r} is {vstatus.get('phase') or 'not ready'}; "
                                                "the server waits until it is available", delay=3)
        return RootDisk(claim_name=vstatus["claimName"])
    return RootDisk(container_disk=spec.container_disk)


@kopf.index(GROUP, VERSION, "volumes")
def volumes_by_server(namespace, name, spec, status, **_):
    """(namespace, server) -> the Volumes that name it (spec.attachTo) or are still
    attached to it (status.attachment). An in-memory index kopf keeps from its watch and
    fills before any handler runs, so a restart never applies a VM without its volumes."""
    entry = {"volume": name, "claimName": (status or {}).get("claimName") or "", "phase": (status or {}).get("phase") or "",
             "readOnly": bool((spec or {}).get("readOnly")), "attachTo": (spec or {}).get("attachTo") or ""}
    keys = {(namespace, entry["attachTo"]), (namespace, ((status or {}).get("attachment") or {}).get("server") or "")}
    return {key: entry for key in keys if key[1]} or None


@kopf.index(GROUP, VERSION, "servers")
def servers_by_boot_volume(namespace, name, spec, **_):
    return {(namespace, spec["bootVolume"]): name} if (spec or {}).get("bootVolume") else None


#: The kopf indices, captured from the first handler call (kopf hands them to every
#: handler; this module's helpers are also called from the volume controller).
_indices: dict = {}


def capture_indices(kwargs: dict) -> None:
    for key in ("volumes_by_server", "servers_by_boot_volume"):
        if key in kwargs and key not in _indices:
            _indices[key] = kwargs[key]


def volumes_of(namespace: str, server: str) -> list[dict]:
    """Index entries of the Volumes that name the server or are attached to it."""
    index = _indices.get("volumes_by_server")
    if index is None:  # not captured yet: ask the API server
        out = []
        for vol in kube.list_(API_VERSION, "volumes", namespace):
            spec, st = vol.get("spec") or {}, vol.get("status") or {}
            if server in (spec.get("attachTo"), (st.get("attachment") or {}).get("server")):
                out.append({"volume": vol["metadata"]["name"], "claimName": st.get("claimName") or "",
                            "phase": st.get("phase") or "", "readOnly": bool(spec.get("readOnly")),
                            "attachTo": spec.get("attachTo") or ""})
        return out
    return list(index.get((namespace, server), []))


def boot_server_of(namespace: str, volume: str) -> str:
    index = _indices.get("servers_by_boot_volume")
    if index is None:
        for srv in kube.list_(API_VERSION, "servers", namespace):
            if (srv.get("spec") or {}).get("bootVolume") == volume:
                return srv["metadata"]["name"]
        return ""
    return next(iter(index.get((namespace, volume), [])), "")


def _attached(namespace: str, name: str) -> list[DataVolumeDisk]:
    """The Volumes whose spec.attachTo names the server. Their claims are named by
    rule, so the VM can list them before they are bound (KubeVirt hotplugs a claim once
    it is bound); a Volume whose claim cannot be made (phase error) is left out."""
    return [DataVolumeDisk(volume=v["volume"], claim_name=volume_claim_name(v["volume"]), read_only=v["readOnly"])
            for v in volumes_of(namespace, name) if v["attachTo"] == name and v["phase"] != "error"]


def sync_server(namespace: str, name: str, logger=None) -> None:
    """Build and apply the VM for the Server as it is now, then write its status.
    Raises Blocked when a dependency is missing (after writing the condition)."""
    with _locks[(namespace, name)]:
        body = kube.get(API_VERSION, "servers", name, namespace)
        if not body or body["metadata"].get("deletionTimestamp"):
            return
        try:
            _sync(body, namespace, name, logger)
        except Blocked as blocked:
            fresh = kube.get(API_VERSION, "servers", name, namespace) or body
            _fail(fresh, blocked.reason, blocked.message)
            raise


def _sync(body: dict, namespace: str, name: str, logger) -> None:
    server = Server.model_validate(body)  # the API server validated it; this is the typed view
    flavor = kube.get(API_VERSION, "flavors", server.spec.flavor)
    if flavor is None:
        raise Blocked("FlavorNotFound", f"Flavor {server.spec.flavor!r} does not exist; create it or set spec.flavor to an "
                                        "existing one (kubectl get flavors)")
    if (flavor.get("status") or {}).get("phase") == "Invalid":
        raise Blocked("FlavorInvalid", f"Flavor {server.spec.flavor!r} is invalid ("
                      + ((flavor["status"].get("conditions") or [{}])[0].get("message") or "see kubectl describe flavor")
                      + "); choose another flavor")
    if not _flavor_allowed(flavor, namespace):
        raise Blocked("FlavorNotAllowed", f"Flavor {server.spec.flavor!r} is private to other projects; choose a public "
                                          "flavor or ask an administrator to share it with this project")
    size = FlavorSize.from_spec(flavor["spec"])
    public_key = None
    if server.spec.key_pair:
        kp = kube.get(API_VERSION, "keypairs", server.spec.key_pair, namespace)
        if kp is None:
            raise Blocked("KeyPairNotFound", f"KeyPair {server.spec.key_pair!r} does not exist in namespace {namespace}; "
                                             "create it or remove spec.keyPair")
        if (kp.get("status") or {}).get("phase") == "Invalid":
            raise Blocked("KeyPairInvalid", f"KeyPair {server.spec.key_pair!r} holds an invalid public key; fix the KeyPair")
        public_key = kp["spec"]["publicKey"]
    policy = None
    if server.spec.server_group:
        group = kube.get(API_VERSION, "servergroups", server.spec.server_group, namespace)
        if group is None:
            raise Blocked("ServerGroupNotFound", f"ServerGroup {server.spec.server_group!r} does not exist in this "
                                                 "namespace; create it (kubectl get servergroups)")
        policy = group["spec"]["policy"]
    root = _root_disk(server, namespace, size)
    stopping = (body["metadata"].get("annotations") or {}).get(REBOOT_ANNOTATION)
    current_root = compute.vm_root_data_volume(kube.get(KUBEVIRT, "virtualmachines", name, namespace)) if root.image_source else ""
    step = actions.on_sync(stopping, current_root, compute.root_disk_name(name, server.spec.image or ""),
                           server.spec.power_state.value, server.spec.image or "")
    if step.effect is actions.Effect.STOP:
        body = _carry_out(body, namespace, name, step)
        stopping = step.annotation
    halt = actions.halted(stopping)
    vm = compute.server_to_virtual_machine(body, size, public_key, root=root, volumes=_attached(namespace, name),
                                           group_policy=policy, halt=halt)
    with _namespace_locks[namespace]:
        existing = kube.get(KUBEVIRT, "virtualmachines", name, namespace)
        limits = project_quota(namespace)
        if limits:
            old_vcpus, old_mem = compute.vm_size(existing) if existing else (0, 0)
            used = _usage(namespace, exclude=name) + (quota.Usage(1, old_vcpus, old_mem) if existing else quota.Usage())
            request = quota.Usage(0 if existing else 1, size.vcpus - old_vcpus, size.ram_bytes - old_mem)
            message = quota.check(limits, used, request)
            if message:
                raise Blocked("QuotaExceeded", message, delay=RETRY_QUOTA)
        kube.apply(vm, "virtualmachines")
    if logger:
        logger.info("VirtualMachine %s applied (%d vCPU, %s, runStrategy %s)", name, size.vcpus,
                    vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"], vm["spec"]["runStrategy"])
    fresh = kube.get(API_VERSION, "servers", name, namespace) or body
    observed = observe(namespace, name, fresh)
    if _follow_power(namespace, name, fresh, observed):
        return
    status = compute.server_status(fresh, observed, size)
    status["flavor"] = server.spec.flavor
    if "volumes" in _write_status(fresh, status):
        for listener in child_listeners:
            listener(namespace, name)


@kopf.on.resume(GROUP, VERSION, "servers")
@kopf.on.create(GROUP, VERSION, "servers")
@kopf.on.update(GROUP, VERSION, "servers", field="spec")
def reconcile_server(body, name, namespace, logger, **kwargs) -> None:
    capture_indices(kwargs)
    try:
        sync_server(namespace, name, logger)
    except Blocked as blocked:
        raise kopf.TemporaryError(f"{blocked.reason}: {blocked.message}", delay=blocked.delay)


@kopf.on.event(GROUP, VERSION, "servers", annotations={MIGRATE_ANNOTATION: kopf.PRESENT})
def migrate_server(name, namespace, logger, **kwargs) -> None:
    """The one-shot `stratus.dev/migrate` annotation: create a VirtualMachineInstanceMigration
    (to the named node, if any), record it in status, then remove the annotation.

    An event handler (not a field handler): kopf keeps its own state in `stratus.dev/`
    annotations and leaves them out of the diffs it computes. Under the server's lock
    the annotation is re-read, so the action runs once however many events arrive."""
    capture_indices(kwargs)
    with _locks[(namespace, name)]:
        body = kube.get(API_VERSION, "servers", name, namespace)
        if not body or body["metadata"].get("deletionTimestamp"):
            return
        target = ((body["metadata"].get("annotations") or {}).get(MIGRATE_ANNOTATION))
        if target is None:
            return
        phase = (body.get("status") or {}).get("phase")
        if not actions.can_act(phase):
            _event(body, *actions.refusal("Migration", phase))
        else:
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")
            mig = compute.migration_object(name, namespace, f"{name}-migrate-{stamp}", target or None)
            mig["metadata"]["ownerReferences"] = [compute.owner_reference(body, controller=False)]
            kube.create(mig, "virtualmachineinstancemigrations")
            kube.patch_status(API_VERSION, "servers", name, {"migration": mig["metadata"]["name"]}, namespace)
            _event(body, "Normal", "MigrationStarted", f"Live migration {mig['metadata']['name']} started"
                   + (f" to node {target}" if target else ""))
            logger.info("migration %s created", mig["metadata"]["name"])
        kube.patch(API_VERSION, "servers", name, {"metadata": {"annotations": {MIGRATE_ANNOTATION: None}}}, namespace)
        _refresh_status(namespace, name)


@kopf.on.event(GROUP, VERSION, "servers", annotations={REBOOT_ANNOTATION: kopf.PRESENT})
def reboot_server(name, namespace, logger, **kwargs) -> None:
    """The one-shot `stratus.dev/reboot: soft|hard` annotation (see api.server)."""
    capture_indices(kwargs)
    with _locks[(namespace, name)]:
        body = kube.get(API_VERSION, "servers", name, namespace)
        if not body or body["metadata"].get("deletionTimestamp"):
            return
        kind = (body["metadata"].get("annotations") or {}).get(REBOOT_ANNOTATION)
        phase = (body.get("status") or {}).get("phase")
        step = actions.on_reboot_request(kind, phase, kind == "soft" and kv.can("softreboot"))
        if step.effect is actions.Effect.SOFT_REBOOT:
            kv.soft_reboot(namespace, name)
        fresh = _carry_out(body, namespace, name, step)
        if step.effect is actions.Effect.STOP:
            logger.info("%s reboot: stopping the VM", kind)
            try:
                _sync(fresh, namespace, name, logger)
            except Blocked as blocked:
                _fail(fresh, blocked.reason, blocked.message)


@kopf.on.delete(GROUP, VERSION, "servers")
def delete_server(body, name, namespace, logger, **kwargs) -> None:
    capture_indices(kwargs)
    body = kube.plain(body)
    if (body.get("status") or {}).get("phase") != "DELETING":
        generation = body["metadata"].get("generation", 0)
        conditions = set_condition((body.get("status") or {}).get("conditions"), "Ready", False, "Deleting",
                                   "Detaching volumes and deleting the virtual machine", generation)
        _write_status(body, {"phase": "DELETING", "conditions": conditions})
    # Detach first (as Nova does): the volumes outlive the server and become available.
    for vol in volumes_of(namespace, name):
        if vol["attachTo"] == name:
            patched = kube.patch(API_VERSION, "volumes", vol["volume"], {"spec": {"attachTo": None}}, namespace)
            if patched:
                _event(patched, "Normal", "Detached", f"Detached because server {name} is being deleted")
    if kube.get(KUBEVIRT, "virtualmachines", name, namespace) is not None:
        kube.delete(KUBEVIRT, "virtualmachines", name, namespace)
        raise kopf.TemporaryError("waiting for the VirtualMachine to be deleted", delay=2)
    logger.info("VirtualMachine %s is gone", name)


def _server_of(labels: dict) -> str | None:
    return (labels or {}).get(SERVER_LABEL)


#: Called with (namespace, server) after a child event, so that Volumes attached to
#: the server can follow (set by the volume controller; no import cycle).
child_listeners: list = []


@kopf.on.event("kubevirt.io", "v1", "virtualmachines", labels={SERVER_LABEL: kopf.PRESENT})
@kopf.on.event("kubevirt.io", "v1", "virtualmachineinstances", labels={SERVER_LABEL: kopf.PRESENT})
@kopf.on.event("kubevirt.io", "v1", "virtualmachineinstancemigrations", labels={SERVER_LABEL: kopf.PRESENT})
@kopf.on.event("cdi.kubevirt.io", "v1beta1", "datavolumes", labels={SERVER_LABEL: kopf.PRESENT})
@kopf.on.event("", "v1", "pods", labels={SERVER_LABEL: kopf.PRESENT, "kubevirt.io": "virt-launcher"})
def child_changed(labels, namespace, **kwargs) -> None:
    capture_indices(kwargs)
    server = _server_of(labels)
    if server:
        changed = refresh_status(namespace, server)
        # Attachments depend on the server's reported volumes (and on it existing).
        if changed.keys() & {"volumes", "deleted", "action"}:
            for listener in child_listeners:
                listener(namespace, server)

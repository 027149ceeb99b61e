"""Server: applies the KubeVirt VirtualMachine built from the Server and its Flavor, and
mirrors what KubeVirt reports (VM, VMI, virt-launcher Pod) into the Server's status.

Level-based: every spec change, resume and child event recomputes the whole status from
the objects as they are now. A missing Flavor or KeyPair is a condition and a retry,
not a crash: the Server becomes ACTIVE on its own once the Flavor appears.
"""

from __future__ import annotations

import collections
import threading

import kopf

from ..api.registry import API_VERSION, GROUP, VERSION
from ..api.server import Server
from ..core import compute
from ..core.compute import SERVER_LABEL, FlavorSize, Observed
from ..core.conditions import set_condition
from ..core.quantity import parse_bytes
from ..drivers import kube

KUBEVIRT = compute.KUBEVIRT_API
RETRY_MISSING_DEPENDENCY = 10


def _event(body: dict, type_: str, reason: str, message: str) -> None:
    kopf.event(body, type=type_, reason=reason, message=message)


def _write_status(body: dict, status: dict) -> None:
    """Write status when it differs from what is there; post an event on a phase change."""
    meta = body["metadata"]
    old = body.get("status") or {}
    changed = {k: v for k, v in status.items() if old.get(k) != v}
    if not changed:
        return
    kube.patch_status(API_VERSION, "servers", meta["name"], changed, meta["namespace"])
    if "phase" in changed:
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        _event(body, "Warning" if status["phase"] == "ERROR" else "Normal", ready.get("reason", status["phase"]),
               f"{old.get('phase') or 'new'} -> {status['phase']}: {ready.get('message', '')}")


def _fail(body: dict, reason: str, message: str) -> None:
    generation = body["metadata"].get("generation", 0)
    conditions = set_condition((body.get("status") or {}).get("conditions"), "Ready", False, reason, message, generation)
    _write_status(body, {"phase": "ERROR", "conditions": conditions, "observedGeneration": generation})


def observe(namespace: str, name: str) -> Observed:
    vm = kube.get(KUBEVIRT, "virtualmachines", name, namespace)
    vmi = kube.get(KUBEVIRT, "virtualmachineinstances", name, namespace)
    pod = None
    if vmi:
        pods = kube.list_pods(namespace, f"kubevirt.io/created-by={vmi['metadata']['uid']}")
        # The active launcher: bound to the VMI's node, else the newest.
        node = (vmi.get("status") or {}).get("nodeName")
        pods.sort(key=lambda p: ((p.get("spec") or {}).get("nodeName") == node, p["metadata"]["creationTimestamp"]))
        pod = pods[-1] if pods else None
    return Observed(vm=vm, vmi=vmi, launcher_pod=pod)


_locks: dict[tuple[str, str], threading.Lock] = collections.defaultdict(threading.Lock)


def refresh_status(namespace: str, name: str) -> None:
    """Recompute a Server's status from its children (called on any child event).

    Child events arrive concurrently (VM, VMI and Pod); one lock per Server makes each
    refresh read the status the previous one wrote, so a transition is reported once."""
    with _locks[(namespace, name)]:
        _refresh_status(namespace, name)


def _refresh_status(namespace: str, name: str) -> None:
    body = kube.get(API_VERSION, "servers", name, namespace)
    if not body or body["metadata"].get("deletionTimestamp"):
        return
    status = body.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
    if status.get("phase") == "ERROR" and ready and ready.get("reason") in ("FlavorNotFound", "KeyPairNotFound", "KeyPairInvalid"):
        return  # the spec handler owns these; it retries until the dependency exists
    size = None
    if status.get("vcpus"):
        size = FlavorSize(vcpus=status["vcpus"], ram_bytes=parse_bytes(status["memory"]), disk_bytes=0)
    _write_status(body, compute.server_status(body, observe(namespace, name), size))


@kopf.on.resume(GROUP, VERSION, "servers")
@kopf.on.create(GROUP, VERSION, "servers")
@kopf.on.update(GROUP, VERSION, "servers", field="spec")
def reconcile_server(body, name, namespace, logger, **_) -> None:
    body = kube.plain(body)
    server = Server.model_validate(body)  # the API server validated it; this is the typed view
    flavor = kube.get(API_VERSION, "flavors", server.spec.flavor)
    if flavor is None:
        _fail(body, "FlavorNotFound", f"Flavor {server.spec.flavor!r} does not exist; create it or set spec.flavor to an existing one (kubectl get flavors)")
        raise kopf.TemporaryError(f"flavor {server.spec.flavor!r} not found", delay=RETRY_MISSING_DEPENDENCY)
    size = FlavorSize.from_spec(flavor["spec"])
    public_key = None
    if server.spec.key_pair:
        kp = kube.get(API_VERSION, "keypairs", server.spec.key_pair, namespace)
        if kp is None:
            _fail(body, "KeyPairNotFound", f"KeyPair {server.spec.key_pair!r} does not exist in namespace {namespace}; create it or remove spec.keyPair")
            raise kopf.TemporaryError(f"key pair {server.spec.key_pair!r} not found", delay=RETRY_MISSING_DEPENDENCY)
        if (kp.get("status") or {}).get("phase") == "Invalid":
            _fail(body, "KeyPairInvalid", f"KeyPair {server.spec.key_pair!r} holds an invalid public key; fix the KeyPair")
            raise kopf.TemporaryError("key pair invalid", delay=RETRY_MISSING_DEPENDENCY)
        public_key = kp["spec"]["publicKey"]
    vm = compute.server_to_virtual_machine(body, size, public_key)
    kube.apply(vm, "virtualmachines")
    logger.info("VirtualMachine %s applied (%d vCPU, %s, runStrategy %s)", name, size.vcpus,
                vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"], vm["spec"]["runStrategy"])
    with _locks[(namespace, name)]:
        # Re-read: the status may have moved on since this event's body was taken.
        fresh = kube.get(API_VERSION, "servers", name, namespace) or body
        _write_status(fresh, compute.server_status(fresh, observe(namespace, name), size))


@kopf.on.delete(GROUP, VERSION, "servers")
def delete_server(body, name, namespace, logger, **_) -> None:
    body = kube.plain(body)
    if (body.get("status") or {}).get("phase") != "DELETING":
        generation = body["metadata"].get("generation", 0)
        conditions = set_condition((body.get("status") or {}).get("conditions"), "Ready", False, "Deleting",
                                   "Deleting the virtual machine", generation)
        _write_status(body, {"phase": "DELETING", "conditions": conditions})
    if kube.get(KUBEVIRT, "virtualmachines", name, namespace) is not None:
        kube.delete(KUBEVIRT, "virtualmachines", name, namespace)
        raise kopf.TemporaryError("waiting for the VirtualMachine to be deleted", delay=2)
    logger.info("VirtualMachine %s is gone", name)


def _server_of(labels: dict) -> str | None:
    return (labels or {}).get(SERVER_LABEL)


@kopf.on.event("kubevirt.io", "v1", "virtualmachines", labels={SERVER_LABEL: kopf.PRESENT})
@kopf.on.event("kubevirt.io", "v1", "virtualmachineinstances", labels={SERVER_LABEL: kopf.PRESENT})
@kopf.on.event("", "v1", "pods", labels={SERVER_LABEL: kopf.PRESENT, "kubevirt.io": "virt-launcher"})
def child_changed(labels, namespace, **_) -> None:
    server = _server_of(labels)
    if server:
        refresh_status(namespace, server)
